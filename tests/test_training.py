import contextlib
import dataclasses
import importlib.util
import os
import signal
import stat
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from model import checkpoint, files
from model.train_step import dispatching_ahead, losses_of, make_train_step
from model.data import batch_at, batches
from model.training import CONV, CONV_LSTM, UsageError, build, main, parse_flags, train
from tests.helpers import probe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script, *args, timeout=300):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, script), *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )


def logged_losses(train_dir):
    """The steps of the "loss" scalars TensorBoard reads from a run's events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(train_dir / "events"))
    events.Reload()
    return [scalar.step for scalar in events.Scalars("loss")]


def loss_values(train_dir):
    """The "loss" values of a run's events, in order, as written (float32)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    events = [event for path in sorted((train_dir / "events").iterdir())
              for event in LegacyEventFileLoader(str(path)).Load()]
    return [value.simple_value for event in events for value in event.summary.value
            if value.tag == "loss"]


# The losses logged at steps 1, 2, 3 of a script run with seed 0 and the original's protocol
# (batch 16, ...). They pin the start values and the data stream: another seed for the start
# values alone moves them by 2e-4. Dropout they hardly feel (keep 1.0 or 0.9 instead of 0.8
# moves them by under 1e-6), as the untrained networks' output hardly depends on the input:
# `test_protocol.test_dropout_inside_the_compiled_training_step` pins that. JAX draws its own
# start values.
GOLDEN_LOSSES = {
    "tensorflow": {"main_conv_lstm.py": [3449.9126, 3580.6687, 3685.2852],
                   "main_conv.py": [3247.9653, 3493.5085, 3411.8901]},
    "jax": {"main_conv_lstm.py": [3449.2847, 3580.1416], "main_conv.py": [3247.1975, 3492.9597]},
}


def steps_in(train_dir):
    return [checkpoint.read_state(p)["step"] for p in checkpoint.list_checkpoints(train_dir)]


@pytest.mark.parametrize("script", ["main_conv_lstm.py", "main_conv.py"])
def test_script_trains_and_writes_everything(tmp_path, script):
    out = run(script, "--train_dir", tmp_path, "--max_step", 3, "--save_every", 2, "--log_every", 1)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "step       3  loss" in out.stderr + out.stdout
    assert steps_in(tmp_path) == [2, 3]
    assert logged_losses(tmp_path) == [1, 2, 3]  # TensorBoard reads the events back
    np.testing.assert_allclose(loss_values(tmp_path), GOLDEN_LOSSES["tensorflow"][script],
                               rtol=1e-5)
    for name in ("step_0000002.mp4", "step_0000003.mp4", "latest.mp4"):
        codec, pix_fmt, frames, width, height = probe(str(tmp_path / "videos" / name))
        assert (codec, pix_fmt, frames) == ("h264", "yuv420p", 50)
        assert width >= 2 * 180 and height >= 180
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]
    assert "Traceback" not in out.stderr and "I0000" not in out.stderr
    # written atomically through temporary files, yet with the modes the umask gives (the run
    # inherits this process's umask), not tempfile's private ones
    def mode(*path):
        return stat.S_IMODE(os.stat(tmp_path.joinpath(*path)).st_mode)

    assert mode("ckpt-0000003") == 0o777 & ~files.UMASK
    for path in (("ckpt-0000003", "state.json"), ("videos", "latest.mp4")):
        assert mode(*path) == 0o666 & ~files.UMASK, path


def test_resume_equals_uninterrupted_run(tmp_path):
    base = dataclasses.replace(CONV, batch_size=4, save_every=3, log_every=3)
    straight = dataclasses.replace(base, train_dir=str(tmp_path / "a"), max_step=6)
    split = dataclasses.replace(base, train_dir=str(tmp_path / "b"), max_step=3)
    logs = []
    assert train(straight, log=logs.append) == 6
    assert train(split, log=logs.append) == 3
    assert train(dataclasses.replace(split, max_step=6), log=logs.append) == 6
    assert logs[-1].startswith("resuming from step 3")
    # Both checkpoints: the straight run's step 3 was saved mid-run, with step 4 about to be
    # queued (`losses_of`), and must hold the weights after step 3 all the same.
    assert steps_in(tmp_path / "a") == steps_in(tmp_path / "b") == [3, 6]
    for a, b in zip(*(checkpoint.list_checkpoints(tmp_path / d) for d in "ab")):
        with h5py.File(os.path.join(a, "train_state.h5")) as fa, \
                h5py.File(os.path.join(b, "train_state.h5")) as fb:
            assert len(fa) == len(fb) > 20
            for key in fa:
                np.testing.assert_allclose(fa[key][()], fb[key][()], rtol=1e-5, atol=1e-7)
    model_a, _ = build(straight)
    model_b, _ = build(split)
    checkpoint.restore(a, model_a)
    checkpoint.restore(b, model_b)
    for wa, wb in zip(model_a.get_weights(), model_b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-7)


def test_second_run_continues_and_finished_run_exits(tmp_path, capsys):
    def again(max_step):  # main_conv.py, in this process
        args = ["--train_dir", tmp_path, "--save_every", 2, "--batch_size", 2, "--max_step", max_step]
        return main(CONV, "", [str(a) for a in args])

    assert again(2) == 0
    assert again(4) == 0 and "resuming from step 2" in capsys.readouterr().out
    assert steps_in(tmp_path) == [2, 4]
    with h5py.File(checkpoint.list_checkpoints(tmp_path)[-1] + "/train_state.h5") as f:
        assert int(f["0000"][()]) == 4  # Adam's iteration count went on from 2
    before = sorted(os.listdir(tmp_path / "videos"))
    assert again(4) == 0 and "nothing to do" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "videos")) == before and steps_in(tmp_path) == [2, 4]


def test_kill_9_then_resume(tmp_path):
    args = [sys.executable, os.path.join(ROOT, "main_conv.py"), "--train_dir", str(tmp_path),
            "--save_every", "5", "--batch_size", "2", "--max_step", "40"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(checkpoint.list_checkpoints(tmp_path)) < 2 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = steps_in(tmp_path)[-1]
    assert 5 <= killed_at < 40
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = int(out.stdout.split("resuming from step ")[1].split()[0])
    assert resumed >= killed_at
    assert steps_in(tmp_path)[-1] == 40


@pytest.mark.parametrize(
    "args,message",
    [
        (["--seq_start", 5, "--seq_length", 5], "--seq_length 5 leaves no frame to learn from"),
        (["--batch_size", 0], "--batch_size must be an integer of at least 1"),
        (["--max_step", -3], "--max_step must be an integer of at least 1"),
        (["--lr", 0], "--lr must be a positive number"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--keep_prob", 0], "--keep_prob must be in (0, 1]"),
        (["--keep_prob", 1.5], "--keep_prob must be in (0, 1]"),
        (["--num_balls", 40], "--num_balls 40 do not fit"),
        (["--batch_size", "many"], "argument --batch_size: invalid int value"),
    ],
)
def test_bad_flags_exit_2_and_write_nothing(tmp_path, args, message):
    train_dir = tmp_path / "run"
    out = run("main_conv.py", "--train_dir", train_dir, *args, timeout=60)
    assert out.returncode == 2
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not train_dir.exists()


def test_unwritable_train_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = run("main_conv_lstm.py", "--train_dir", blocker / "run", timeout=60)
    assert out.returncode == 2 and "--train_dir" in out.stderr and "is a file" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    with pytest.raises(UsageError):
        parse_flags(CONV, ["--train_dir", str(blocker)])


def test_wrong_model_in_train_dir(tmp_path, capsys):
    assert main(CONV, "", ["--train_dir", str(tmp_path), "--max_step", "1"]) == 0
    capsys.readouterr()
    assert main(CONV_LSTM, "", ["--train_dir", str(tmp_path), "--max_step", "2"]) == 2
    err = capsys.readouterr().err
    assert "holds a 'conv' run" in err and len(err.strip().splitlines()) == 1


def test_non_finite_loss_stops_and_keeps_the_last_finite_checkpoint(tmp_path):
    out = run("main_conv.py", "--train_dir", tmp_path, "--lr", 1e30, "--save_every", 1,
              "--max_step", 50)
    assert out.returncode == 1
    assert "loss became" in out.stderr and "Traceback" not in out.stderr
    failed = int(out.stderr.split(" at step ")[1].split(";")[0])
    last = checkpoint.list_checkpoints(tmp_path)[-1]
    model, optimizer = build(dataclasses.replace(CONV, train_dir=str(tmp_path)))
    assert checkpoint.restore(last, model, optimizer)["step"] == failed - 1 >= 1
    for variable in [*model.weights, *optimizer.variables]:
        assert np.all(np.isfinite(np.asarray(variable))), variable.path


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
@pytest.mark.parametrize("script", ["main_conv_lstm.py", "main_conv.py"])
def test_script_on_jax(tmp_path, script):
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    wrapper = (  # runs the script, then says whether TensorFlow was ever imported
        "import runpy, sys\n"
        "sys.argv = sys.argv[1:]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "print('tensorflow_loaded', 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, script, "--train_dir", str(tmp_path), "--max_step", "2",
         "--save_every", "2", "--log_every", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert steps_in(tmp_path) == [2] and "I0000" not in out.stderr
    assert "tensorflow_loaded False" in out.stdout  # JAX runs never load it (~450 MB)
    assert logged_losses(tmp_path) == [1, 2]  # and still write TensorBoard scalars
    np.testing.assert_allclose(loss_values(tmp_path), GOLDEN_LOSSES["jax"][script], rtol=1e-5)
    assert probe(str(tmp_path / "videos" / "latest.mp4"))[:3] == ("h264", "yuv420p", 50)


def test_batches_are_each_steps_clips_in_order():
    """Step `s` trains on `batch_at(config, s)`, from any starting step (a resumed run)."""
    config = dataclasses.replace(CONV, batch_size=16, seq_length=3)
    count = 20
    with contextlib.closing(batches(config, 7)) as clips:
        got = [np.asarray(next(clips)) for _ in range(count)]
    for offset, clip in enumerate(got):
        np.testing.assert_array_equal(clip, batch_at(config, 7 + offset))


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
    clips = [batch_at(config, s) for s in range(3)]
    runs = []
    for ahead in (False, True):
        model, optimizer = build(config)
        step, _ = make_train_step(model, optimizer)
        with dispatching_ahead() if ahead else contextlib.nullcontext():
            assert tf.config.experimental.get_synchronous_execution() is not ahead
            losses = list(losses_of(step, iter(clips), len(clips)))
        runs.append((losses, model.get_weights()))
    assert tf.config.experimental.get_synchronous_execution()
    (losses_a, weights_a), (losses_b, weights_b) = runs
    assert losses_a == losses_b
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(KeyError), dispatching_ahead():
        raise KeyError("an error inside")
    assert tf.config.experimental.get_synchronous_execution()
