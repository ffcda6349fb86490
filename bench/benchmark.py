"""Speed benchmark: the simulator, each model's training step, our cell vs ConvLSTM2D, memory.

Prints a table and writes bench/results/<backend>.json; bench/README.md says what each figure
means. Run it on an otherwise idle machine (`KERAS_BACKEND=jax` for JAX)."""

import contextlib
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from model import runtime  # noqa: E402

runtime.start()  # first: Keras and its backend, quietly

import keras  # noqa: E402

from model import cli, files, runs  # noqa: E402
from model.backend import (compiled, default_chains, dispatching_ahead, losses_of,  # noqa: E402
                           make_train_step)
from model.config import MODELS  # noqa: E402
from model.conv_lstm_cell import ConvLSTMCell  # noqa: E402
from model.data import VIDEO_FRAMES, batches  # noqa: E402
from model.networks import l2_loss  # noqa: E402
from systems import bouncing_balls, clip_file  # noqa: E402

PARTS = ("simulator", "data", "training", "cells", "memory", "data_memory")
CELLS = ((4, 8), (32, 32))  # (filters, side): our models' cell, and a large one
CELL_SECONDS = 60  # a cell comparison stops repeating after this long (JAX's CPU: ~30 s a step)


def timed(fns, repeats, warmup=2, max_seconds=None, steps=1):
    """Milliseconds per call (per step, if a call takes `steps`) of each of `fns` {name: function},
    called in turn; with `max_seconds`, no new round starts after that long (2 rounds at least)."""
    for fn in fns.values():
        for _ in range(warmup):  # the first call traces and compiles
            fn()
    ms = {name: [] for name in fns}
    began = time.perf_counter()
    for k in range(repeats):
        if max_seconds and k >= 2 and time.perf_counter() - began > max_seconds:
            break
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            ms[name].append(1e3 * (time.perf_counter() - start) / steps)
    return {name: {"min": min(t), "median": float(np.median(t)), "max": max(t), "repeats": len(t)}
            for name, t in ms.items()}


def bench_simulator(repeats):
    """A batch of 16 clips of 10 frames at 32x32, 2 balls."""
    rng = np.random.default_rng(0)
    ms = timed({"batch": lambda: bouncing_balls.generate(16, 10, rng=rng)}, repeats)["batch"]
    return {"ms_per_batch": ms, "sequences_per_s": 16e3 / ms["median"]}


def bench_data(repeats):
    """A training batch of 16 x 10 frames from a memory-mapped `--data` file, in both layouts."""
    clips = np.random.default_rng(0).integers(0, 256, (200, 20, 64, 64), dtype=np.uint8)
    step = iter(range(10**9))
    made = {}
    with tempfile.TemporaryDirectory() as tmp:
        for layout, stored in (("clips_first", clips), ("time_major", clips.swapaxes(0, 1))):
            path = os.path.join(tmp, f"{layout}.npy")
            np.save(path, np.ascontiguousarray(stored))
            opened, _ = clip_file.open_clips(path, time_major=layout == "time_major")
            made[f"{layout}_ms"] = lambda c=opened: c.batch(0, next(step), 16, 10)
        return timed(made, repeats)


def bench_data_memory(steps):
    """Peak resident memory (MB) of a ConvLSTM training run of `steps` steps on a memory-mapped
    clips file (64x64 uint8, 20 frames) of 40 MB and of 4 GB: what the file's size adds."""
    block = np.random.default_rng(0).integers(0, 256, (100, 20, 64, 64), dtype=np.uint8)
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, clips in (("file_40mb", 500), ("file_4gb", 50_000)):
            path = os.path.join(tmp, f"{name}.npy")
            stored = np.lib.format.open_memmap(path, "w+", np.uint8, (clips, 20, 64, 64))
            stored.reshape(-1, *block.shape)[:] = block  # the block, over and over
            del stored  # unmapped: this process holds none of it while the run is measured
            report[f"peak_rss_mb_{name}"] = bench_memory("main_conv_lstm.py", steps, "--data", path)
    return report


def bench_training(config, repeats):
    """The `<model>` figures of bench/README.md: the training step end to end (and `unqueued`),
    per step over blocks of 8; the compiled step alone on a fixed clip; a video's rollout."""
    source = bouncing_balls.Balls(config.num_balls, config.friction)
    model = runs.build(config, source.frame_shape)
    optimizer = runs.build_optimizer(config, model)
    step, _ = make_train_step(model, optimizer)
    chunk = 8  # steps per timed block
    with contextlib.closing(batches(source, config, 0)) as clips:
        def end_to_end():  # as `train` runs it: each step queued before the last loss is read
            with dispatching_ahead():
                list(losses_of(step, clips, chunk))

        def unqueued():
            for _ in range(chunk):
                float(step(next(clips)))

        ends = timed({"end_to_end_ms": end_to_end, "end_to_end_unqueued_ms": unqueued},
                     max(2, repeats // chunk), steps=chunk)
        clip = next(clips)
    steps = {"compiled_step_ms": lambda: float(step(clip))}
    if default_chains() != 1:
        one_chain, _ = make_train_step(model, optimizer, chains=1)
        steps["compiled_step_one_chain_ms"] = lambda: float(one_chain(clip))
    context, horizon = clip[:1, : config.seq_start], VIDEO_FRAMES - config.seq_start
    rollout = compiled(model.rollout)
    videos = {"video_rollout_ms": lambda: np.asarray(rollout(context, horizon)),
              "video_rollout_eager_ms": lambda: np.asarray(model.rollout(context, horizon))}
    return {"chains": default_chains(), **ends, **timed(steps, repeats),
            **timed(videos, max(2, repeats // 20), 1)}


def bench_cells(repeats, cells=CELLS):
    """A training step of one recurrent layer over 16 x 10 frames, 3x3 kernels, as many input
    channels as filters: our `ConvLSTMCell` in `keras.layers.RNN` vs `keras.layers.ConvLSTM2D`."""
    def step_of(layer, x):
        """`layer` learning its input (`make_train_step` needs weights and a `training_loss`)."""
        layer(x[:1])  # builds the weights
        layer.training_loss = lambda clip: l2_loss(layer(clip), clip)
        step, _ = make_train_step(layer, keras.optimizers.Adam(1e-3))
        return lambda: float(step(x))

    results = {}
    for filters, side in cells:
        x = keras.random.uniform((16, 10, side, side, filters), seed=0)
        ours = keras.layers.RNN(ConvLSTMCell(filters, 3), return_sequences=True)
        keras_own = keras.layers.ConvLSTM2D(filters, 3, padding="same", return_sequences=True)
        steps = {"ours_ms": step_of(ours, x), "keras_ConvLSTM2D_ms": step_of(keras_own, x)}
        results[f"f{filters}_{side}x{side}"] = timed(steps, repeats, 1, CELL_SECONDS)
    return results


# Runs a script and prints its peak resident memory (kB) as it exits. VmHWM, not ru_maxrss,
# which would carry over the benchmark's own size, inherited at the fork before the exec.
PROBE = """import re, runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    print(re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read()).group(1))
"""


def bench_memory(script, steps, *flags, output=None):
    """Peak resident memory (MB) of a `steps`-step training run of `script` in its own process;
    its printed lines are appended to the list `output`, where given."""
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run([sys.executable, "-c", PROBE, os.path.join(ROOT, script),
                              "--train_dir", tmp, "--max_step", str(steps), "--save_every",
                              str(steps), *flags], capture_output=True, text=True, cwd=ROOT)
    if run.returncode != 0:
        raise RuntimeError(f"{script} failed (exit {run.returncode}): {run.stderr[-2000:]}")
    if output is not None:
        output.append(run.stdout)
    return int(run.stdout.split()[-1]) / 1024


def machine():
    """The CPU count, and the accelerator where JAX runs on one."""
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return f"{device.device_kind} ({device.platform}), {os.cpu_count()} CPUs"
    return f"{os.cpu_count()} CPUs"


def rows(report, prefix=""):
    """The table's lines: one per timing (min / median / max) or figure, nested names joined."""
    for key, value in report.items():
        name = f"{prefix}{key}".removesuffix("_ms")
        if isinstance(value, dict) and "median" in value:
            yield f"{name:45s} {value['min']:10.2f} {value['median']:10.2f} {value['max']:10.2f}"
        elif isinstance(value, dict):
            yield from rows(value, f"{name} ")
        elif isinstance(value, (int, float)):
            yield f"{name:45s} {value:21,.{isinstance(value, float):d}f}"


def main(argv=None):
    parser = cli.Parser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=100,
                        help="timed calls per figure (the cell comparisons: a fifth, at least 2, "
                             f"within about {CELL_SECONDS} s each)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"what to measure, comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument("--memory_steps", type=int, default=300,
                        help="steps of the training runs whose peak memory is measured")
    parser.add_argument("--out", help="JSON path (default bench/results/<backend>.json)")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    if unknown := sorted(set(parts) - set(PARTS)):
        parser.error(f"--parts: unknown {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    for flag in ("repeats", "memory_steps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    backend = keras.backend.backend()
    report = {"backend": backend, "machine": machine(), "repeats": args.repeats}
    began = time.perf_counter()

    def say(what):
        print(f"[{time.perf_counter() - began:5.0f} s] {what}", flush=True)

    if "simulator" in parts:
        say("simulator, batch 16 x 10 frames, 2 balls")
        report["simulator"] = bench_simulator(args.repeats)
    if "data" in parts:
        say("data, batch 16 x 10 frames of 64x64 from a memory-mapped clips file")
        report["data"] = bench_data(args.repeats)
    for name, kind in MODELS.items():
        if "training" in parts:
            say(f"{name} training step, end to end and compiled")
            report.setdefault(name, {}).update(bench_training(kind.defaults, args.repeats))
        if "memory" in parts:
            say(f"{name} peak memory of a {args.memory_steps}-step training run")
            mb = bench_memory(kind.script, args.memory_steps)
            report.setdefault(name, {})["peak_rss_mb"] = mb
    if "data_memory" in parts:
        say(f"ConvLSTM peak memory of a {args.memory_steps}-step run on a 40 MB and a 4 GB file")
        report["data_memory"] = bench_data_memory(args.memory_steps)
    if "cells" in parts:
        say("our cell vs keras.layers.ConvLSTM2D")
        report["cells"] = bench_cells(max(2, args.repeats // 5))
    say("done")
    out = args.out or os.path.join(ROOT, "bench", "results", f"{backend}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    files.write_json(out, report)
    print(f"{backend}, {report['machine']}\n{'ms':45s} {'min':>10s} {'median':>10s} {'max':>10s}")
    print("\n".join(rows({k: v for k, v in report.items() if isinstance(v, dict)})))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_script("benchmark.py", main, "nothing written"))
