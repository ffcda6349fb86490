import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

from model import runtime, video


def test_hidden_modules_fail_to_import_only_inside_the_block():
    name = "json.tool"  # any importable module not imported yet
    sys.modules.pop(name, None)
    with runtime._hidden([name]):
        with pytest.raises(ImportError):
            importlib.import_module(name)
    assert importlib.import_module(name).__name__ == name


PROBE = """
import sys
sys.path.insert(0, {root!r})
from model import runtime
runtime.setup()
print("jax_loaded", "jax" in sys.modules)
import matplotlib.pyplot
print("matplotlib_importable", callable(matplotlib.pyplot.subplots))
"""


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="no matplotlib")
def test_tensorflow_starts_without_jax_and_matplotlib_imports_afterwards():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=root)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert lines["jax_loaded"] == "False"  # TensorFlow's lite converter imports it when it can
    assert lines["matplotlib_importable"] == "True"


def test_side_by_side_layout():
    truth = np.zeros((2, 32, 32, 3), np.float32)
    truth[0, 0, 0] = 1.0  # top-left pixel of the first truth frame
    prediction = np.full((2, 32, 32, 3), 0.5, np.float32)
    out = video.side_by_side(truth, prediction)
    assert out.shape == (2, 192, 392, 3) and out.dtype == np.uint8
    assert (out[0, :6, :6] == 255).all() and (out[0, 6:, :6] == 0).all()
    assert (out[:, :, 192:200] == 255).all()  # the white gap
    assert (out[:, :, 200:] == 128).all()  # 0.5 rounds to 128
