"""The training scripts end to end: what a run writes, its first losses, resume, kill -9, bad
flags, a diverging loss, wider networks; and the loop's parts (the clips of each step, steps
queued ahead)."""

import contextlib
import dataclasses
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from model import checkpoint, runs, video
from model.backend import dispatching_ahead, losses_of, make_train_step
from model.config import MODELS
from model.data import batches
from model.files import UMASK
from model.training import main
from systems.bouncing_balls import Balls
from tests.helpers import (ROOT, balls_batch, error_lines, files, logged_losses, logged_steps,
                           model_and_optimizer, one_line, probe, rerun, steps_in)

CONV = MODELS["conv"].defaults
# The losses logged at steps 1, 2, 3 of each script's run with seed 0 and the original's
# protocol (batch 16, ...). They pin the start values and the data stream: another seed for the
# start values alone moves them by 2e-4. Dropout they hardly feel (keep 1.0 or 0.9 instead of 0.8
# moves them by under 1e-6), as the untrained networks' output hardly depends on the input:
# `test_protocol.test_dropout_inside_the_compiled_training_step` pins that. JAX draws its own
# start values.
GOLDEN_LOSSES = {"main_conv_lstm.py": [3449.9126, 3580.6687, 3685.2852],
                 "main_conv.py": [3247.9653, 3493.5085, 3411.8901]}  # JAX's: test_runtime.py


def assert_same_state(path_a, path_b):
    """Checkpoints `path_a` and `path_b` hold the same weights, dropout seed and Adam state."""
    a, b = (runs.load(path, with_optimizer=True) for path in (path_a, path_b))
    values = [[np.asarray(v) for v in [*run.model.variables, *run.optimizer.variables]]
              for run in (a, b)]
    assert len(values[0]) == len(values[1]) > 20
    for value_a, value_b in zip(*values):
        np.testing.assert_allclose(value_a, value_b, rtol=1e-5, atol=1e-7)


def test_main_conv_lstm_trains_and_writes_everything(tmp_path, capsys):
    """`main_conv_lstm.py` in this process (`test_runtime.py` runs a script's own process)."""
    assert rerun(tmp_path, "--batch_size", 16, "--max_step", 3, model="conv_lstm") == 0
    out, err = capsys.readouterr()
    assert "step       3  loss" in out and error_lines(err) == []
    assert steps_in(tmp_path) == [2, 3]
    assert logged_steps(tmp_path) == [1, 2, 3]  # TensorBoard reads the events back
    np.testing.assert_allclose(logged_losses(tmp_path), GOLDEN_LOSSES["main_conv_lstm.py"],
                               rtol=1e-5)
    for name in ("step_0000002.mp4", "step_0000003.mp4", "latest.mp4"):
        codec, pix_fmt, frames, width, height = probe(str(tmp_path / "videos" / name))
        assert (codec, pix_fmt, frames) == ("h264", "yuv420p", 50)
        assert (width, height) == (2 * video.PANEL + video.GAP, video.BAND + video.PANEL)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]
    # written atomically through temporary files, yet with the modes the umask gives, not
    # tempfile's private ones
    def mode(*path):
        return stat.S_IMODE(os.stat(tmp_path.joinpath(*path)).st_mode)

    assert mode("ckpt-0000003") == 0o777 & ~UMASK
    for path in (("ckpt-0000003", "state.json"), ("videos", "latest.mp4")):
        assert mode(*path) == 0o666 & ~UMASK, path


def test_main_conv_killed_with_9_resumes_as_if_never_stopped(tmp_path, capsys):
    """The script killed (most often while it writes its first video); rerun, it resumes from
    its last checkpoint, writes the missing video, and TensorBoard shows each step once, the
    first ones' losses those of the original's protocol."""
    flags = ["--train_dir", tmp_path, "--save_every", 5, "--max_step", 20, "--log_every", 1]
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "main_conv.py"),
                             *map(str, flags)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not checkpoint.list_checkpoints(tmp_path) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = steps_in(tmp_path)[-1]
    assert 5 <= killed_at < 20
    assert main(CONV, "", list(map(str, flags))) == 0  # main_conv.py, in this process
    resumed = int(capsys.readouterr().out.split("resuming from step ")[1].split()[0])
    assert resumed >= killed_at
    assert steps_in(tmp_path)[-1] == 20 and os.path.exists(video.path(tmp_path, killed_at))
    assert logged_steps(tmp_path) == list(range(1, 21))
    np.testing.assert_allclose(logged_losses(tmp_path)[:3], GOLDEN_LOSSES["main_conv.py"],
                               rtol=1e-5)


def test_resume_equals_uninterrupted_run(finished, run_dir, capsys):
    """`finished` trained steps 1-4 in one run, each step's loss read before the next step was
    queued (`--log_every 1`). Its copy, the step-4 checkpoint gone as if killed before it
    landed, resumes from the step-2 one (saved mid-run) for steps 3-4, queued two at a time:
    the same weights and Adam state."""
    shutil.rmtree(run_dir / "ckpt-0000004")
    assert rerun(run_dir, "--log_every", 2) == 0
    assert "resuming from step 2" in capsys.readouterr().out
    assert_same_state(finished / "ckpt-0000004", run_dir / "ckpt-0000004")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--batch_size", 0], "--batch_size must be an integer of at least 1"),
        (["--max_step", -3], "--max_step must be an integer of at least 1"),
        (["--width", 0], "--width must be an integer of at least 1"),
        (["--lr", 0], "--lr must be a positive number"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--keep_prob", 0], "--keep_prob must be in (0, 1]"),
        (["--keep_prob", 1.5], "--keep_prob must be in (0, 1]"),
        (["--num_balls", 40], "--num_balls 40 do not fit"),
        (["--seed", -1], "--seed must be in 0..4294967295"),
        (["--seed", 2**32], "--seed must be in 0..4294967295"),
        (["--batch_size", "many"], "argument --batch_size: invalid int value"),
    ],
)
def test_bad_flags_exit_2_in_one_line_and_write_nothing(tmp_path, capsys, args, message):
    assert rerun(tmp_path / "run", *args) == 2
    out, err = capsys.readouterr()
    assert message in one_line(err) and out == ""
    assert os.listdir(tmp_path) == []


def test_non_finite_loss_stops_and_keeps_the_last_finite_checkpoint(tmp_path, capsys):
    assert rerun(tmp_path, "--lr", 1e30, "--save_every", 1, "--max_step", 50) == 1
    [line] = error_lines(capsys.readouterr().err)
    assert "loss became" in line and f"the last good checkpoint in {tmp_path} is kept" in line
    failed = int(line.split(" at step ")[1].split(";")[0])
    loaded = runs.load(checkpoint.list_checkpoints(tmp_path)[-1], with_optimizer=True)
    assert loaded.step == failed - 1 >= 1
    for variable in [*loaded.model.weights, *loaded.optimizer.variables]:
        assert np.all(np.isfinite(np.asarray(variable))), variable.path


def test_a_wider_conv_lstm_trains_resumes_and_keeps_its_width(tmp_path, capsys):
    """`--width 2`: recorded with each checkpoint, resumed exactly, and resumed only at width 2."""
    run_dir, newest = tmp_path / "run", tmp_path / "run" / "ckpt-0000004"
    assert rerun(run_dir, "--width", 2, model="conv_lstm") == 0  # steps 1-4
    assert checkpoint.read_state(newest)["config"]["width"] == 2
    assert runs.load(newest).model.cell.kernel.shape == (3, 3, 16, 32)
    shutil.move(newest, tmp_path / "uninterrupted")  # as if killed before it landed
    assert rerun(run_dir, "--width", 2, model="conv_lstm") == 0
    assert "resuming from step 2" in capsys.readouterr().out
    assert_same_state(tmp_path / "uninterrupted", newest)
    before = files(run_dir)
    assert rerun(run_dir, "--max_step", 6, model="conv_lstm") == 2  # --width forgotten
    line = one_line(capsys.readouterr().err)
    assert "holds a run with other settings: --width 1 (saved: 2)" in line
    assert files(run_dir) == before


def test_batches_are_each_steps_clips_in_order():
    """Step `s` trains on the source's clips of `(seed, s)`, from any starting step (a resumed
    run)."""
    config = dataclasses.replace(CONV, batch_size=16, seq_length=3)
    count = 20
    with contextlib.closing(batches(Balls(), config, 7)) as clips:
        got = [np.asarray(next(clips)) for _ in range(count)]
    for offset, clip in enumerate(got):
        np.testing.assert_array_equal(clip, balls_batch(config, 7 + offset))


def test_losses_of_calls_each_step_before_reading_the_last_loss():
    events = []

    class Loss:
        def __init__(self, step):
            self.step = step

        def __float__(self):
            events.append(("read", self.step))
            return float(self.step)

    def step(clip):
        events.append(("call", clip))
        return Loss(clip)

    clips = iter(range(10))
    assert list(losses_of(step, clips, 3)) == [0.0, 1.0, 2.0]
    assert events == [("call", 0), ("call", 1), ("read", 0), ("call", 2), ("read", 1), ("read", 2)]
    assert next(clips) == 3  # took exactly its 3 clips
    assert list(losses_of(step, clips, 0)) == [] and next(clips) == 4


def test_dispatching_ahead_trains_the_same_and_restores_synchronous_execution():
    import tensorflow as tf

    config = dataclasses.replace(CONV, batch_size=2)
    clips = [balls_batch(config, s) for s in range(3)]
    results = []
    for ahead in (False, True):
        model, optimizer = model_and_optimizer(config)
        step, _ = make_train_step(model, optimizer)
        with dispatching_ahead() if ahead else contextlib.nullcontext():
            assert tf.config.experimental.get_synchronous_execution() is not ahead
            losses = list(losses_of(step, iter(clips), len(clips)))
        results.append((losses, model.get_weights()))
    assert tf.config.experimental.get_synchronous_execution()
    (losses_a, weights_a), (losses_b, weights_b) = results
    assert losses_a == losses_b
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(KeyError), dispatching_ahead():
        raise KeyError("an error inside")
    assert tf.config.experimental.get_synchronous_execution()
