import json
import subprocess
import sys
import time

import pytest

sys.path.insert(0, "bench")
import benchmark  # noqa: E402


def _ordered(stats):
    return 0 < stats["min"] <= stats["median"] <= stats["max"]


def test_benchmark_writes_its_json_and_table(tmp_path):
    out = tmp_path / "results" / "bench.json"
    result = subprocess.run(
        [sys.executable, "bench/benchmark.py", "--parts", "simulator,training", "--repeats", "2",
         "--out", str(out)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    progress = [line.split("] ")[1] for line in result.stdout.splitlines() if line.startswith("[")]
    assert [line.split()[0] for line in progress] == ["simulator,", "conv_lstm", "conv", "done"]
    report = json.loads(out.read_text())
    assert report["backend"] == "tensorflow" and report["repeats"] == 2
    assert sorted(report) == ["backend", "conv", "conv_lstm", "machine", "repeats", "simulator"]
    sim = report["simulator"]
    assert _ordered(sim["ms_per_batch"]) and sim["ms_per_batch"]["repeats"] == 2
    assert 1_000 < sim["sequences_per_s"] == pytest.approx(16e3 / sim["ms_per_batch"]["median"])
    for model in ("conv_lstm", "conv"):
        figures = report[model]
        timings = ["end_to_end_ms", "end_to_end_unqueued_ms", "compiled_step_ms",
                   "video_rollout_ms", "video_rollout_eager_ms"]
        timings += ["compiled_step_one_chain_ms"] if figures["chains"] != 1 else []
        assert sorted(figures) == sorted(["chains", *timings])
        for key in timings:
            assert _ordered(figures[key]) and figures[key]["repeats"] >= 2
            assert 1 < figures[key]["median"] < 20_000  # ms (not s or us) per step of 16 clips
        assert f"{model} end_to_end " in result.stdout  # a row of the table
    assert f"wrote {out}" in result.stdout


def test_cells_times_our_cell_and_convlstm2d():
    cells = benchmark.bench_cells(2, cells=((2, 4),))
    assert list(cells) == ["f2_4x4"]
    assert sorted(cells["f2_4x4"]) == ["keras_ConvLSTM2D_ms", "ours_ms"]
    assert all(_ordered(s) and s["repeats"] == 2 for s in cells["f2_4x4"].values())


@pytest.mark.parametrize("argv, error", [
    (["--parts", "speed,simulator"], "--parts: unknown speed; choose from simulator, "),
    (["--repeats", "0"], "--repeats must be at least 1"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, argv, error):
    result = subprocess.run([sys.executable, "bench/benchmark.py", *argv, "--out",
                             str(tmp_path / "x.json")], capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and error in result.stderr
    assert not (tmp_path / "x.json").exists()


def test_memory_probe_measures_the_run_not_the_benchmark(tmp_path):
    """The peak of the measured run alone: this test's process, with TensorFlow loaded, is far
    larger than the 60 MB script, and a child inherits its parent's ru_maxrss."""
    script = tmp_path / "allocate.py"
    script.write_text("import numpy as np\nx = np.ones(60 * 2**20, np.uint8)\n")
    assert 60 < benchmark.bench_memory(str(script), 1) < 200
    script.write_text("import sys\nsys.exit('no room')\n")
    with pytest.raises(RuntimeError, match="allocate.py failed .exit 1.: no room"):
        benchmark.bench_memory(str(script), 1)


def test_timed_takes_turns_and_stops_at_its_time_limit():
    calls = []

    def sleeper(name, seconds):
        return lambda: (calls.append(name), time.sleep(seconds))

    stats = benchmark.timed({"slow": sleeper("slow", 0.05), "fast": sleeper("fast", 0)}, 100,
                            warmup=1, max_seconds=0.2)
    assert calls[:4] == ["slow", "fast", "slow", "fast"]  # one warm-up call each, then in turn
    assert 2 <= stats["slow"]["repeats"] == stats["fast"]["repeats"] <= 6
    assert stats["slow"]["min"] >= 50 and stats["fast"]["max"] < 50
    assert benchmark.timed({"x": lambda: None}, 3)["x"]["repeats"] == 3
