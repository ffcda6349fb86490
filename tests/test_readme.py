"""The README's code runs as written: the Python blocks of "The cell in your own model", in
order, each in a fresh Python, in one folder, with this repository importable."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_blocks(section):
    with open(os.path.join(ROOT, "README.md")) as f:
        body = f.read().split(f"\n## {section}\n")[1].split("\n## ")[0]
    return re.findall(r"```python\n(.*?)```", body, re.S)


def test_cell_snippets_run_as_written_each_in_a_fresh_python(tmp_path):
    blocks = python_blocks("The cell in your own model")
    assert len(blocks) == 2  # use the cell and save a model; load it in another process
    for block in blocks:
        out = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
        assert out.returncode == 0, f"{block}\n{out.stderr[-3000:]}"
    assert os.listdir(tmp_path) == []  # the model went to the temporary folder, not here
