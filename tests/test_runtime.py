import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import sys
from model import runtime
runtime.setup()
print("hidden_while_loading", "jax" in sys.modules, "matplotlib" in sys.modules)
import matplotlib  # importable afterwards
print("importable_after", "matplotlib" in sys.modules)
"""


def test_tensorflow_loads_quietly_without_jax_and_matplotlib():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["hidden_while_loading False False",
                                          "importable_after True"]
    assert out.stderr == ""  # none of TensorFlow's start-up lines
