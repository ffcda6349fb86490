import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, "bench")
import benchmark  # noqa: E402


def test_loop_comparison_simulates_the_same_world():
    frames = benchmark.loop_simulator(20, rng=np.random.default_rng(0))
    assert frames.shape == (20, 32, 32, 3) and frames.dtype == np.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    # two balls of radius 1.2 in a box of 10 at 3.2 px per unit: green mass about 2 * pi * r^2
    green = frames[..., 1].sum(axis=(1, 2))
    expected = 2 * np.pi * (1.2 * 3.2) ** 2 * 0.906  # integral of exp(-(d/r)^8) over the disc
    assert np.all(np.abs(green - expected) < 0.1 * expected)


def test_benchmark_command_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, "bench/benchmark.py", "--parts", "simulator,training,gates", "--repeats",
         "2", "--cells", "2x4", "--out", str(out)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    report = json.loads(out.read_text())
    assert report["simulator"]["vectorised_sequences_per_s"] > 0
    for model in ("conv_lstm", "conv"):
        parts = report[model]
        for key in ("data_ms", "forward_ms", "forward_backward_ms", "compiled_step_ms",
                    "compiled_step_one_chain_ms", "compiled_step_per_call_kernel_grads_ms",
                    "end_to_end_ms", "end_to_end_each_loss_read_first_ms",
                    "end_to_end_one_batch_at_a_time_ms", "end_to_end_clips_copied_ms"):
            assert 0 < parts[key]["min"] <= parts[key]["median"] <= parts[key]["max"]
    assert sorted(report["gates"]) == ["ours_fused_f2_4x4_ms", "ours_per_gate_f2_4x4_ms"]


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_cell_comparison_on_jax_times_xla_gradients_too(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, "bench/benchmark.py", "--parts", "cells", "--repeats", "2", "--cells",
         "2x4", "--out", str(out)],
        check=True, capture_output=True, text=True, timeout=600,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    cells = json.loads(out.read_text())["cells"]
    assert sorted(cells) == ["keras_ConvLSTM2D_f2_4x4_ms", "ours_f2_4x4_ms",
                             "ours_xla_conv_gradients_f2_4x4_ms"]


def test_benchmark_rejects_unknown_parts(tmp_path):
    result = subprocess.run(
        [sys.executable, "bench/benchmark.py", "--parts", "speed", "--out", str(tmp_path / "x")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2 and "unknown speed" in result.stderr


def test_memory_probe_measures_the_run_not_the_benchmark(tmp_path):
    """The peak of the measured run alone: this test's process, with TensorFlow loaded, is far
    larger than the 60 MB script, and a child inherits its parent's ru_maxrss."""
    script = tmp_path / "allocate.py"
    script.write_text("import numpy as np\nx = np.ones(60 * 2**20, np.uint8)\n")
    peak = benchmark.bench_memory(str(script), 1)["peak_rss_mb"]
    assert 60 < peak < 200


def test_allocator_comparison_child_reports_end_to_end_blocks():
    out = subprocess.run(
        [sys.executable, "bench/benchmark.py", "--end_to_end_blocks", "2"],
        check=True, capture_output=True, text=True, timeout=600,
    )
    blocks = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(blocks) == ["conv", "conv_lstm"]
    assert all(len(ms) == 2 and min(ms) > 0 for ms in blocks.values())


def test_allocator_comparison_is_skipped_without_tcmalloc(monkeypatch):
    monkeypatch.setattr(benchmark, "find_tcmalloc", lambda: None)
    monkeypatch.setattr(benchmark.subprocess, "run", None)  # must not start any process
    assert benchmark.bench_allocator(rounds=2, blocks=2) == {"tcmalloc": None}
