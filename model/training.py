"""Shared training for both predictors: flags, the loop, checkpoints, videos, TensorBoard.

`main_conv_lstm.py` and `main_conv.py` differ only in their `TrainConfig` defaults.
"""

import argparse
import contextlib
import dataclasses
import itertools
import os
import re
import shutil
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from model import checkpoint, runtime
from systems import bouncing_balls

VIDEO_FRAMES = 50  # length of the rollout videos, true context included
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # default folders are in it
# A training run's memory: a fixed share, and per frame of a batch; peak resident memory
# measured at batch 16 to 4,096 grew by 113-126 kB per frame on TensorFlow, 155 kB on JAX.
MEMORY_BASE, MEMORY_PER_FRAME = 1e9, 160e3  # bytes


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: str  # "conv_lstm" or "conv"
    train_dir: str  # checkpoints, videos/ and TensorBoard events go here
    seq_length: int  # frames per training clip
    seq_start: int  # true frames fed in before the network feeds itself
    max_step: int = 200_000  # train until this many steps in all
    keep_prob: float = 0.8  # dropout keep probability on the true input frames
    lr: float = 0.001  # Adam learning rate
    batch_size: int = 16  # clips per step
    num_balls: int = 2  # balls per clip
    friction: bool = False  # slight gravity and drag in the simulator
    seed: int = 0  # seeds the weights, the dropout and the data stream
    save_every: int = 1000  # steps between checkpoints and videos
    log_every: int = 100  # steps between logged losses
    keep_every: int = 10_000  # checkpoints at multiples of this are kept for good (0: none)
    fresh: bool = False  # delete this run's checkpoints, videos and events first


CONV_LSTM = TrainConfig("conv_lstm", "checkpoints/train_store_conv_lstm", seq_length=10, seq_start=5)
CONV = TrainConfig("conv", "checkpoints/train_store_conv", seq_length=5, seq_start=1)

HELP = {
    "train_dir": "folder for checkpoints, videos/ and TensorBoard events",
    "seq_length": "frames per training clip",
    "seq_start": "true frames fed in before the network predicts from its own output",
    "max_step": "total training steps; rerun with a larger value to train on",
    "keep_prob": "keep probability of dropout on the true input frames, in (0, 1]",
    "lr": "Adam learning rate",
    "batch_size": "clips per training step; refused where a run would need more than the "
                  "memory available, by an estimate: 1 GB + 160 kB per frame of a batch",
    "num_balls": "bouncing balls per clip",
    "friction": "add slight gravity and drag to the simulator",
    "seed": "seed for the initial weights, dropout and the simulated data",
    "save_every": "steps between checkpoints and rollout videos",
    "log_every": "steps between logged losses",
    "keep_every": "also checkpoint at multiples of this step and keep those for good, besides "
                  "the newest two: milestones to evaluate later (create_graphs.py --*_step), "
                  "about 0.1 MB each, 20 in a 200,000-step run; 0 keeps none",
    "fresh": "start from step 0: first delete what runs of ours wrote in --train_dir "
             "(checkpoints, videos, event files); anything else there stays",
}

RESUMABLE = ("max_step", "save_every", "log_every", "keep_every")  # flags a resumed run may change
EPILOG = (
    "Rerunning with the same --train_dir resumes from its newest complete checkpoint. "
    f"On resume, {', '.join('--' + name for name in RESUMABLE)} may change; a different value "
    "of any other flag is refused (exit 2), as it would change the data or the training: "
    "pass --fresh to start over, or use another --train_dir. One run at a time per "
    "--train_dir: a second one exits (2) naming the process that holds it."
)


class UsageError(Exception):
    """A bad flag or train_dir: reported as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser that raises `UsageError` instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(message)


def parse_flags(defaults, argv=None, description=None):
    """`TrainConfig` from command-line flags over `defaults`; raises `UsageError`."""
    parser = Parser(
        description=description, epilog=EPILOG,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for field in dataclasses.fields(TrainConfig):
        if field.name == "model":
            continue
        default = getattr(defaults, field.name)
        if field.name == "train_dir":
            default = os.path.join(REPO, default)  # the same folder from any working folder
        if field.type is bool or isinstance(default, bool):
            parser.add_argument(f"--{field.name}", action="store_true", help=HELP[field.name])
        else:
            kind = type(default)
            parser.add_argument(
                f"--{field.name}", type=kind, default=default, help=HELP[field.name]
            )
    args = parser.parse_args(argv)
    config = dataclasses.replace(defaults, **vars(args))
    validate(config)
    return config


def validate(config):
    """Raise `UsageError` naming the first flag that breaks its rule."""
    check_values(config)
    _check_memory(config)
    _check_writable(config.train_dir)


def check_values(config):
    """Raise `UsageError` naming the first value of `config` out of its range."""
    for name in ("batch_size", "max_step", "seq_length", "save_every", "log_every", "num_balls"):
        if getattr(config, name) < 1:
            raise UsageError(f"--{name} must be a positive integer, got {getattr(config, name)}")
    if config.keep_every < 0:
        raise UsageError(f"--keep_every must be 0 or a positive integer, got {config.keep_every}")
    if not config.lr > 0 or not np.isfinite(config.lr):
        raise UsageError(f"--lr must be a positive number, got {config.lr}")
    if not 0 < config.keep_prob <= 1:
        raise UsageError(f"--keep_prob must be in (0, 1], got {config.keep_prob}")
    if not 1 <= config.seq_start < config.seq_length:
        raise UsageError(
            f"--seq_start must be at least 1 and less than --seq_length "
            f"({config.seq_length}), got {config.seq_start}"
        )
    if config.num_balls > bouncing_balls.max_balls():
        raise UsageError(
            f"--num_balls {config.num_balls} do not fit reliably in the box "
            f"(at most {bouncing_balls.max_balls()})"
        )
    unscored = config.model == "conv_lstm"  # ConvLSTMPredictor.scored_offset: frame seq_start
    if config.seq_length < config.seq_start + 1 + unscored:
        raise UsageError(
            f"--seq_length {config.seq_length} leaves no frame to learn from: the ConvLSTM "
            f"model's first prediction is fed back unscored, so --seq_length must be at least "
            f"--seq_start + 2 ({config.seq_start + 2})"
        )


def _check_memory(config):
    """Raise `UsageError` where the run would need more memory than is available."""
    frames = config.batch_size * config.seq_length
    need, available = MEMORY_BASE + MEMORY_PER_FRAME * frames, _available_memory()
    if available is not None and need > available:
        raise UsageError(
            f"--batch_size {config.batch_size} would need about {need / 1e9:,.1f} GB of memory, "
            f"more than the {available / 1e9:.1f} GB available (estimate: 1 GB + 160 kB per "
            f"frame of a batch, {config.batch_size} x {config.seq_length} frames)"
        )


def _available_memory():
    """Bytes of memory available to a new process (Linux's MemAvailable; None elsewhere)."""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def _check_writable(train_dir):
    """Raise `UsageError` unless the nearest existing folder of `train_dir` can be written."""
    path = os.path.abspath(train_dir)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        checkpoint.probe_writable(path)
    except OSError as error:
        raise UsageError(f"--train_dir {train_dir!r} is not writable "
                         f"({path}: {error.strerror or error})") from None


def build(config):
    """The predictor and its Adam optimiser, weights initialised from `config.seed`."""
    import keras

    from model.networks import ConvLSTMPredictor, ConvPredictor

    runtime.set_random_seed(config.seed)
    cls = {"conv_lstm": ConvLSTMPredictor, "conv": ConvPredictor}[config.model]
    model = cls(context=config.seq_start, keep_prob=config.keep_prob)
    model.build((config.batch_size, config.seq_length, 32, 32, 3))
    optimizer = keras.optimizers.Adam(config.lr, epsilon=1e-8)  # TensorFlow 1's epsilon
    optimizer.build(model.trainable_variables)
    return model, optimizer


def batch_at(config, step):
    """The training clips of `step`: a pure function of (seed, step), so a resumed run sees
    exactly the data an uninterrupted one would have."""
    rng = np.random.default_rng([config.seed, step])
    return bouncing_balls.generate(
        config.batch_size, config.seq_length, num_balls=config.num_balls,
        friction=config.friction, rng=rng,
    )


def batches(config, step):
    """The training clips of steps `step, step + 1, ...` as backend tensors, each made in a
    background thread while the caller trains on the one before (a ConvLSTM batch takes
    0.6 ms to make, 5 % of a step; `bench/benchmark.py`)."""
    from keras import ops

    def prepare(step):
        return ops.convert_to_tensor(batch_at(config, step))

    with ThreadPoolExecutor(1) as pool:
        upcoming = pool.submit(prepare, step)
        while True:
            clip = upcoming.result()
            step += 1
            upcoming = pool.submit(prepare, step)
            yield clip


def video_clip(config):
    """The fixed 50-frame clip every video of a run shows, so videos compare across steps."""
    rng = np.random.default_rng([config.seed, 2**32 - 1])
    return bouncing_balls.generate(
        1, VIDEO_FRAMES, num_balls=config.num_balls, friction=config.friction, rng=rng
    )


VIDEO_NAME = re.compile(r"^(step_\d{7,}|latest)\.mp4$")  # in videos/
EVENTS_NAME = re.compile(r"^events\.out\.tfevents\.\d+\..+\.\d+\.\d+$")  # `_Events`' files


def video_path(config, step):
    return os.path.join(config.train_dir, "videos", f"step_{step:07d}.mp4")


def write_video(model, config, step, rollout=None):
    """Write `videos/step_NNNNNNN.mp4` and `videos/latest.mp4`: truth left, rollout right,
    each captioned. `rollout` is `model.rollout` or a compiled version of it
    (`train_step.compiled_rollout`). Raises `checkpoint.CannotWrite`."""
    from model import video

    truth = video_clip(config)
    context = truth[:, : config.seq_start]
    rollout = rollout or model.rollout
    predicted = np.asarray(rollout(context, VIDEO_FRAMES - config.seq_start))
    shown = np.concatenate([context, predicted], axis=1)[0]
    captions = [(f"truth, frame {t}", f"{'input' if t < config.seq_start else 'prediction'}, "
                 f"frame {t}") for t in range(VIDEO_FRAMES)]
    title = f"{config.model} after {step:,} training steps"
    path = video_path(config, step)
    folder = os.path.dirname(path)
    with checkpoint.writing(folder):
        os.makedirs(folder, exist_ok=True)
    video.write_mp4(path, video.side_by_side(truth[0], shown, captions, title))
    video.copy_atomic(path, os.path.join(folder, "latest.mp4"))
    return path


def _start_fresh(train_dir, log):
    """Remove what runs of ours wrote in `train_dir`, only where it holds one
    (`checkpoint.holds_run`): checkpoints (damaged ones too), our videos and event files, and
    `videos/` and `events/` where that empties them. Anything else there stays. Raises
    `checkpoint.CannotWrite`."""
    if not checkpoint.holds_run(train_dir):
        log(f"--fresh: {train_dir} holds no run of ours; nothing removed")
        return
    ours = {"": (checkpoint.PATTERN, checkpoint.DAMAGED), "videos": (VIDEO_NAME,),
            "events": (EVENTS_NAME,)}
    removed = []
    for sub, patterns in ours.items():
        folder = os.path.join(train_dir, sub)
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            path = os.path.join(folder, name)
            if any(pattern.match(name) for pattern in patterns):
                with checkpoint.writing(path):
                    if os.path.isdir(path):
                        shutil.rmtree(path)
                    else:
                        os.remove(path)
                removed.append(path)
    for sub in ("videos", "events"):
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(train_dir, sub))  # only if empty
    log(f"--fresh: removed {len(removed)} checkpoints, videos and event files of ours from "
        f"{train_dir}")


class NonFiniteLoss(Exception):
    pass


def train(config, log=print):
    """Train `config.model` to `config.max_step`, resuming from the latest checkpoint.

    Holds `config.train_dir`'s lock (`checkpoint.locked`) throughout. Returns the step reached.
    Raises `NonFiniteLoss` or `checkpoint.CannotWrite` (the last complete checkpoint is kept),
    `UsageError` (the folder in use by another process; `_resume`) and `runtime.Unavailable`.
    """
    runtime.check_backend()
    with checkpoint.writing(config.train_dir):
        os.makedirs(config.train_dir, exist_ok=True)
    try:
        with checkpoint.locked(config.train_dir):  # raises `InUse` on entry only
            return _train(config, log)
    except checkpoint.InUse as error:
        raise UsageError(f"--train_dir {error}: wait for it to end, or use another "
                         "--train_dir") from None


def _train(config, log):
    from tqdm import tqdm

    runtime.setup()
    from model.train_step import (compiled_rollout, dispatching_ahead, losses_of,
                                  make_train_step)

    if config.fresh:
        _start_fresh(config.train_dir, log)
    for folder in (config.train_dir, os.path.join(config.train_dir, "videos")):
        checkpoint.remove_leftovers(folder)
    model, optimizer = build(config)
    step = _resume(config, model, optimizer, log)
    if step and not os.path.exists(video_path(config, step)):  # killed before it was written
        write_video(model, config, step)
    if step >= config.max_step:
        log(f"{config.train_dir}: already trained to step {step} (--max_step {config.max_step}); "
            "nothing to do")
        return step
    train_step, sync = make_train_step(model, optimizer)
    rollout = compiled_rollout(model)
    losses, times = [], []
    bar = tqdm(total=config.max_step, initial=step, unit="step", dynamic_ncols=True,
               desc=config.model, smoothing=0.05,
               mininterval=0.1 if sys.stderr.isatty() else 30)  # a log file gets few lines
    events = _Events(os.path.join(config.train_dir, "events"), step)
    with contextlib.closing(batches(config, step)) as clips, bar, contextlib.closing(events):
        while step < config.max_step:
            # Up to the next log line, checkpoint or the end, each step is queued before the
            # last one's loss is read (`losses_of`); a checkpoint is written once all have run.
            stop = min(_next_multiple(step, config.log_every),
                       _next_multiple(step, config.save_every), config.max_step,
                       _next_multiple(step, config.keep_every or config.max_step))
            with dispatching_ahead():
                last = time.perf_counter()
                for loss in losses_of(train_step, clips, stop - step):
                    now = time.perf_counter()
                    times.append(now - last)  # from one loss to the next: the whole step
                    last = now
                    if not np.isfinite(loss):
                        raise NonFiniteLoss(f"loss became {loss} at step {step + 1}")
                    losses.append(loss)
                    step += 1
                    bar.update(1)
            if step % config.log_every == 0 or step == config.max_step:
                _log_losses(bar, events, step, losses, times)
                losses, times = [], []
            if (step % config.save_every == 0 or step == config.max_step
                    or (config.keep_every and step % config.keep_every == 0)):
                sync()
                _save(config, model, optimizer, step, rollout)
    return step


def _next_multiple(step, every):
    """The first multiple of `every` after `step`."""
    return (step // every + 1) * every


_EVENT_FILES = itertools.count()  # event files opened by this process


class _Events:
    """TensorBoard scalars in a new event file under `path`, written with the `tensorboard`
    package's record format and protocol buffers alone: no TensorFlow, so a JAX run never loads
    it (about 450 MB). Each write is flushed, so a killed run keeps what it logged.

    A run resumed at `step` starts its file with TensorBoard's restart marker, a
    `SessionLog.START` at `step + 1`: TensorBoard then drops what earlier files logged from that
    step on (the steps a killed run trained past its last checkpoint), so each step shows once.
    Raises `checkpoint.CannotWrite`."""

    def __init__(self, path, step):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{next(_EVENT_FILES)}")  # unique: never truncate an earlier file
        self.path = os.path.join(path, name)
        with checkpoint.writing(self.path):
            os.makedirs(path, exist_ok=True)
            self._records = RecordWriter(open(self.path, "wb"))
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        self._write(event_pb2.Event(wall_time=time.time(), step=step + 1, session_log=start))

    def scalars(self, step, **values):
        summary = self._summary_pb2.Summary(
            value=[self._summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
                   for tag, value in values.items()]
        )
        self._write(self._event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def _write(self, event):
        with checkpoint.writing(self.path):
            self._records.write(event.SerializeToString())
            self._records.flush()

    def close(self):
        with checkpoint.writing(self.path):
            self._records.close()


def _log_losses(bar, events, step, losses, times):
    mean_loss, ms = float(np.mean(losses)), 1e3 * float(np.median(times))
    events.scalars(step, loss=mean_loss, step_time_ms=ms)
    bar.set_postfix_str(f"loss {mean_loss:.1f}")
    bar.write(f"step {step:>7d}  loss {losses[-1]:8.1f}  mean {mean_loss:8.1f}  {ms:5.1f} ms/step")


def _save(config, model, optimizer, step, rollout):
    state = {"config": dataclasses.asdict(config), "data": {"seed": config.seed, "next_step": step}}
    checkpoint.save(config.train_dir, step, model, optimizer, state, config.keep_every)
    write_video(model, config, step, rollout)


def _resume(config, model, optimizer, log):
    """Restore the newest checkpoint that loads completely and return its step (0 if none).
    Newer ones that do not load are named and set aside (`checkpoint.set_aside`), so that
    `checkpoint.save` never counts them among those it keeps. Raises `UsageError` when
    checkpoints exist but none loads, or the run's flags differ (`_check_same_run`)."""
    found = checkpoint.list_checkpoints(config.train_dir)
    damaged = []
    for path in reversed(found):
        try:
            saved, _ = load_state(path)
            _check_same_run(config, saved["config"])
            checkpoint.restore(path, model, optimizer)
            step = saved["step"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            damaged.append((path, error))
            continue
        for bad, error in damaged:
            log(f"warning: {bad} does not load ({first_line(error)}); "
                f"moved aside to {checkpoint.set_aside(bad)}")
        log(f"resuming from step {step} ({path})")
        return step
    if found:
        newest, error = damaged[0]
        raise UsageError(f"no checkpoint in {config.train_dir!r} loads ({newest}: "
                         f"{first_line(error)}); "
                         "pass --fresh to start over, or use another --train_dir")
    return 0


def first_line(error):
    """An error's first line, or its type's name where it has no text."""
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def load_state(path):
    """`(state, config)`: the `state.json` of checkpoint folder `path` and the `TrainConfig` it
    saved (fields it lacks, from its model's defaults). Raises `ValueError` where a value has
    the wrong type or range, as for a truncated file: that checkpoint counts as damaged."""
    state = checkpoint.read_state(path)
    saved = state["config"]
    defaults = {c.model: c for c in (CONV_LSTM, CONV)}.get(saved.get("model"))
    if defaults is None:
        raise ValueError(f"state.json: unknown model {saved.get('model')!r}")
    kinds = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for name, value in saved.items():
        if name not in kinds or not _of_type(value, kinds[name]):
            raise ValueError(f"state.json: config {name!r} cannot be {value!r}")
    config = dataclasses.replace(defaults, **saved)
    try:
        check_values(config)
    except UsageError as error:
        raise ValueError(f"state.json: {error}") from None
    return state, config


def _of_type(value, kind):
    """Whether a JSON value fits a `TrainConfig` field of type `kind` (an int fits a float)."""
    if kind is bool or isinstance(value, bool):
        return type(value) is kind
    return isinstance(value, (int, float) if kind is float else kind)


def _check_same_run(config, saved):
    """Raise `UsageError` unless `saved` (a checkpoint's config) is the run `config` continues."""
    if saved["model"] != config.model:
        raise UsageError(
            f"--train_dir {config.train_dir!r} holds a {saved['model']!r} run, "
            f"not {config.model!r}; use another --train_dir"
        )
    fixed = [f.name for f in dataclasses.fields(config)
             if f.name not in ("model", "train_dir", "fresh", *RESUMABLE)]
    differ = [f"--{n} {getattr(config, n)} (saved: {saved[n]})"
              for n in fixed if n in saved and saved[n] != getattr(config, n)]
    if differ:
        raise UsageError(
            f"--train_dir {config.train_dir!r} holds a run with other settings: "
            f"{', '.join(differ)}; pass --fresh to start over, or use another --train_dir"
        )


def script_exit(prog, body, then):
    """`body()`'s exit code, for the evaluation scripts: 2 for a bad flag, folder or backend,
    1 where a write fails, 130 / 143 on Ctrl-C / SIGTERM (`then` says what to do next), each
    with one line."""
    try:
        with runtime.stoppable():
            return body()
    except (UsageError, runtime.Unavailable) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except checkpoint.CannotWrite as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        return runtime.stopped(prog, stop, then)


def main(defaults, description, argv=None):
    """Entry point for the training scripts: returns the process exit code."""
    prog = os.path.basename(sys.argv[0])
    try:
        with runtime.stoppable():
            config = parse_flags(defaults, argv, description)
            step = train(config)
    except (UsageError, runtime.Unavailable) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLoss as error:
        print(f"error: {error}; the last good checkpoint in {config.train_dir} is kept",
              file=sys.stderr)
        return 1
    except checkpoint.CannotWrite as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM
        return runtime.stopped(prog, stop, "rerun the same command to resume from the last "
                                           "checkpoint")
    print(f"done: step {step}; checkpoints and videos in {config.train_dir}")
    return 0
