"""Test-only helpers: running the scripts in this process, and reading what they printed and
wrote."""

import csv
import pathlib

import av
import numpy as np

from model import checkpoint
from model.cli import REPO
from model.config import MODELS
from model.training import main

ROOT = REPO
FLAGS = ["--max_step", 4, "--save_every", 2, "--log_every", 1, "--batch_size", 2]
PROGRESS = ("evaluating", "study", "conv_lstm:", "conv:", "checking")  # progress bars' lines


def rerun(train_dir, *flags, model="conv"):
    """A training script (`main_conv.py` by default) over `train_dir` with `FLAGS`, later flags
    overriding, in this process; its exit code."""
    return main(MODELS[model].defaults, "",
                [str(f) for f in ["--train_dir", train_dir, *FLAGS, *flags]])


def steps_in(train_dir):
    """The steps of the checkpoints in `train_dir`, oldest first."""
    return [checkpoint.read_state(p)["step"] for p in checkpoint.list_checkpoints(train_dir)]


def one_line(text):
    """The one line of `text`, asserting it has one and no traceback."""
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def error_lines(stderr):
    """`stderr`'s lines but the progress bars' (which a log gets now and then) and blank ones."""
    lines = [line.strip() for line in stderr.replace("\r", "\n").splitlines()]
    return [line for line in lines if line and not line.startswith(PROGRESS)]


def files(folder):
    """`{relative path: bytes}` of every file under `folder`."""
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in pathlib.Path(folder).rglob("*") if path.is_file()}


def probe(path):
    """`(codec, pixel format, frame count, width, height)` of the first video stream of `path`."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        ctx = stream.codec_context
        return ctx.name, ctx.pix_fmt, count, ctx.width, ctx.height


def read_study_csv(path):
    """`(table, original)` as `reproduction_study.run_study` and `read_original` give them, from
    a CSV that `write_csv` wrote (to the 6 significant digits it keeps)."""
    table, original = {}, {name: [] for name in MODELS}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["source"] == "original_2016_pixels":
                curves = original.values()
            else:
                key = (int(row["train_step"]), int(row["seed"]), row["variant"], row["alignment"])
                curves = table.setdefault(key, ([], []))
            for curve, name in zip(curves, MODELS):
                curve.append(float(row[name]))
    return ({key: tuple(np.array(c) for c in curves) for key, curves in table.items()},
            {name: np.array(curve) for name, curve in original.items()})


# The model's tests: runs on the bouncing balls, built and fed as training builds and feeds them.
from model import runs  # noqa: E402
from systems.bouncing_balls import Balls  # noqa: E402


def balls_batch(config, step=0):
    """Training step `step`'s clips of the run `config` on the bouncing balls."""
    source = Balls(config.num_balls, config.friction)
    return source.batch(config.seed, step, config.batch_size, config.seq_length)


def model_and_optimizer(config):
    """`config`'s predictor for the bouncing balls' frames, and its Adam, as a fresh run has
    them."""
    model = runs.build(config, Balls.frame_shape)
    return model, runs.build_optimizer(config, model)


def logged_steps(train_dir):
    """The steps of the "loss" scalars TensorBoard reads back from a run's events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(pathlib.Path(train_dir) / "events"))
    events.Reload()
    return [scalar.step for scalar in events.Scalars("loss")]


# The clips files' tests: small clips with a layout the data show.
def waves(n, t, side=8, channels=None, seed=0):
    """uint8 clips `(n, t, side, side[, channels])`: a plane wave per clip, of its own direction
    and phase, moving 0.3 rad a frame: neighbouring frames far more alike than neighbouring
    clips, as in footage."""
    rng = np.random.default_rng(seed)
    angle, phase = rng.uniform(0, 2 * np.pi, (2, n, 1, 1, 1, 1))
    y, x, c = np.meshgrid(*(np.arange(s) for s in (side, side, channels or 1)), indexing="ij")
    time = 0.3 * np.arange(t)[:, None, None, None]
    wave = np.sin((np.cos(angle) * x + np.sin(angle) * y) * 2 * np.pi / side + phase + 2 * c
                  + time)
    clips = np.round(127.5 * (1 + wave)).astype(np.uint8)  # (n, t, side, side, C)
    return clips if channels else clips[..., 0]


def save_clips(path, clips, time_major=False):
    """`clips` `(N, T, ...)` saved as a `.npy` at `path`, stored `(T, N, ...)` where `time_major`;
    the path as a string."""
    np.save(path, np.ascontiguousarray(np.swapaxes(clips, 0, 1)) if time_major else clips)
    return str(path)


def logged_losses(train_dir):
    """The "loss" values of every event file of a run, in order, as written (float32): those
    of steps a killed run trained past its last checkpoint too."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    events = [event for path in sorted((pathlib.Path(train_dir) / "events").iterdir())
              for event in LegacyEventFileLoader(str(path)).Load()]
    return [value.simple_value for event in events for value in event.summary.value
            if value.tag == "loss"]
