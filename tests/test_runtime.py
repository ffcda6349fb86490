"""One start-up, on either backend: an entry script sets the runtime up first, quietly (none
of TensorFlow's start-up lines), leaving out JAX and matplotlib while TensorFlow loads; on JAX
it never loads TensorFlow."""

import importlib.util
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from tests.helpers import ROOT, logged_losses, logged_steps, probe, steps_in

# The losses logged at steps 1 and 2 of a seed-0 `main_conv_lstm.py` run on JAX, which draws
# its own start values (TensorFlow's: `test_training.GOLDEN_LOSSES`).
JAX_LOSSES = [3449.2847, 3580.1416]
SCRIPT = """import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exit:
    print("exit", exit.code)
{then}
print("loaded", *(name in sys.modules for name in ("tensorflow", "jax", "matplotlib")))
import matplotlib  # hidden while TensorFlow loads, importable after
print("importable_after", "matplotlib" in sys.modules)
"""
CELL = """from tests.test_conv_lstm_cell import peer_difference
print("cell", peer_difference(3, 4, 3, 8, 8))
"""


def run_script(backend, *args, then=""):
    """`python <args>` on Keras `backend` in a process that then runs the code `then` and says
    which of TensorFlow, JAX and matplotlib it loaded."""
    return subprocess.run([sys.executable, "-c", SCRIPT.format(then=then), *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": backend})


def test_a_script_starts_tensorflow_quietly_without_jax_and_matplotlib(tmp_path):
    """Started, then ended by a bad flag in one line, its only one."""
    out = run_script("tensorflow", "main_conv.py", "--train_dir", tmp_path / "run",
                     "--batch_size", 0)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["exit 2", "loaded True False False", "importable_after True"]
    assert out.stderr == ("main_conv.py: error: --batch_size must be an integer of at least 1, "
                          "got 0\n")
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_main_conv_lstm_and_the_cell_on_jax_never_load_tensorflow(tmp_path):
    """The run's first losses, TensorBoard scalars, a fresh dropout mask at every step and a
    video; the cell `ConvLSTM2D`'s equal: without TensorFlow, in one process, as JAX starts
    slowly. (The conv model is the ConvLSTM's encoder and decoder: its run would pin nothing
    more.)"""
    out = run_script("jax", "main_conv_lstm.py", "--train_dir", tmp_path, "--max_step", 2,
                     "--save_every", 2, "--log_every", 1, then=CELL)
    assert out.returncode == 0, out.stderr[-3000:]
    *_, exit, cell, loaded, _ = out.stdout.splitlines()
    assert exit == "exit 0" and loaded.startswith("loaded False ")  # no TensorFlow
    assert float(cell.split()[1]) < 1e-5
    assert "I0000" not in out.stderr
    assert steps_in(tmp_path) == [2]
    assert logged_steps(tmp_path) == [1, 2]
    np.testing.assert_allclose(logged_losses(tmp_path), JAX_LOSSES, rtol=1e-5)
    with h5py.File(tmp_path / "ckpt-0000002" / "train_state.h5") as f:
        dropout_seed = f[max(f)][()]  # the model's one non-trainable variable, saved last
    assert dropout_seed[-1] == 2  # drawn from at each step: the jitted step hands it back
    assert probe(str(tmp_path / "videos" / "latest.mp4"))[:3] == ("h264", "yuv420p", 50)
