"""Speed benchmark: simulator, training steps and their parts, our cell vs ConvLSTM2D, memory.

Prints a table, writes bench/results/<backend>.json and ends with the project's speed targets
(issue #5), each judged against the figures just measured. Every comparison runs in this
process, on this machine, with the same settings. Run on an otherwise idle machine:

    python bench/benchmark.py                    # TensorFlow (default)
    KERAS_BACKEND=jax python bench/benchmark.py
    python bench/benchmark.py --report bench/results/tensorflow.json   # a saved run's table
"""

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from model import checkpoint, runtime  # noqa: E402
from systems import bouncing_balls  # noqa: E402


def timed(fn, repeats, warmup=3):
    """min / median / max milliseconds of `fn()` over `repeats` calls."""
    return timed_alternately({"fn": fn}, repeats, warmup)["fn"]


MIN_REPEATS = 3  # what a time limit (`max_seconds`) leaves at least


def timed_alternately(fns, repeats, warmup=3, max_seconds=None):
    """`timed` for each of `fns` (a dict), their calls taken in turn, so that a machine whose
    speed drifts during the run slows them all alike. With `max_seconds`, the repeats stop once
    they have taken that long (after `MIN_REPEATS` at least), and a function whose second
    warm-up call takes over a twentieth of it is warmed up by those two calls only (the first
    call traces and compiles); `repeats` in the results says how many were timed."""
    for fn in fns.values():
        for k in range(warmup):
            start = time.perf_counter()
            fn()
            if k >= 1 and max_seconds and time.perf_counter() - start > max_seconds / 20:
                break
    times = {name: [] for name in fns}
    began = time.perf_counter()
    for k in range(repeats):
        if max_seconds and k >= MIN_REPEATS and time.perf_counter() - began > max_seconds:
            break
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: _stats(1e3 * np.array(seconds)) for name, seconds in times.items()}


def loop_simulator(seq_length, num_balls=2, radius=1.2, rng=None):
    """One sequence in the per-sequence style of the 2016 original, kept only as the comparison
    for the batched engines: placement by rejection in Python, each ball painted over the whole
    frame, the physics as plain Python loops (our numba kernel's own code, run uncompiled)."""
    from systems import _compiled

    box, size = bouncing_balls.BOX, 32
    while True:
        x = rng.uniform(2, box, (num_balls, 2))
        if all(radius <= c <= box - radius for c in x.ravel()) and all(
            np.linalg.norm(x[i] - x[j]) >= 2 * radius for i in range(num_balls) for j in range(i)
        ):
            break
    v = rng.standard_normal((num_balls, 2))
    v *= 0.5 / np.linalg.norm(v)
    substep = _compiled._substep.py_func  # the Python function, not its compiled version
    frames = np.zeros((seq_length, size, size, 3), np.float32)
    centres = (np.arange(size) + 0.5) / size * box
    for t in range(seq_length):
        for (px, py), (vx, vy) in zip(x, v):
            d2 = (centres[None, :] - px) ** 2 + (centres[:, None] - py) ** 2
            m = np.exp(-((d2 / radius**2) ** 4))
            frames[t] += m[..., None] * [vx + 0.5, 1.0, vy + 0.5]
        for _ in range(bouncing_balls.SUBSTEPS):
            substep(x, v, bouncing_balls.SUBSTEPS, box, radius, False, 0.0, 0.0)
    return np.minimum(frames, 1.0)


def bench_simulator(repeats):
    """Batch 16 x 10 frames at 32x32, 2 balls: the default engine, the NumPy engine and a
    per-sequence Python loop in the 2016 original's style."""
    rng = np.random.default_rng(0)
    ours = timed(lambda: bouncing_balls.generate(16, 10, rng=rng), repeats)
    numpy_engine = timed(lambda: bouncing_balls.generate(16, 10, rng=rng, engine="numpy"),
                         repeats)
    loop = timed(lambda: [loop_simulator(10, rng=rng) for _ in range(16)], max(3, repeats // 20))
    return {
        "engine": "numba" if bouncing_balls._compiled is not None else "numpy",
        "vectorised_ms_per_batch": ours,
        "vectorised_sequences_per_s": 16e3 / ours["median"],
        "numpy_engine_ms_per_batch": numpy_engine,
        "numpy_engine_sequences_per_s": 16e3 / numpy_engine["median"],
        "loop_ms_per_batch": loop,
        "loop_sequences_per_s": 16e3 / loop["median"],
    }


def bench_training(config, repeats):
    """The training step end to end, as the training loop runs it (batches generated in a
    background thread), and its parts, each compiled on its own. End to end is the mean
    per step over blocks of one data chunk's steps; the other figures are per call."""
    import keras

    from model.train_step import chained_loss, compiled, default_chains, make_train_step
    from model.training import batch_at, batches, build, prefetch_steps

    model, optimizer = build(config)
    chains = default_chains()
    step, _ = make_train_step(model, optimizer)
    gradients, _ = make_train_step(model, optimizer, apply=False)
    forward = compiled(lambda c: chained_loss(model, c, chains))
    clip = keras.ops.convert_to_tensor(batch_at(config, 0))
    results = {
        "chains": chains,
        "data_ms": timed(lambda: batch_at(config, 1), repeats),
        "forward_ms": timed(lambda: float(forward(clip)), repeats),
        "forward_backward_ms": timed(lambda: float(gradients(clip)), repeats),
    }
    steps = {"compiled_step_ms": lambda: float(step(clip))}
    # The comparisons, timed in turn with it: the whole batch as one chain, and one kernel
    # gradient per call instead of per layer (each where the default differs).
    if chains != 1:
        one_chain, _ = make_train_step(model, optimizer, chains=1)
        steps["compiled_step_one_chain_ms"] = lambda: float(one_chain(clip))
    if keras.backend.backend() == "tensorflow":
        per_call, _ = make_train_step(model, optimizer, batched_kernel_grads=False)
        steps["compiled_step_per_call_kernel_grads_ms"] = lambda: float(per_call(clip))
    results.update(timed_alternately(steps, repeats))
    counter = iter(range(10**9))
    results["data_inline_ms"] = timed(lambda: float(step(batch_at(config, next(counter)))),
                                      repeats)
    # End to end, as `training.train` runs it: whole chunks of the data thread's work
    # (`training.batches`), each step queued before the last one's loss is read
    # (`train_step.losses_of`), timed as blocks of steps. Timed in turn with it: each loss read
    # before the next step is called, one batch made per step, and the clips copied into new
    # tensors instead of taken over (`train_step.to_tensor`).
    chunk = prefetch_steps(config)

    def ahead(clips):
        return steps_ahead(step, clips, chunk)

    with contextlib.closing(batches(config, 0)) as chunked, \
            contextlib.closing(batches(config, 0)) as chunked_too, \
            contextlib.closing(batches(config, 0, chunk=1)) as single, \
            contextlib.closing(batches(config, 0, adopt=False)) as copied:
        blocks = {
            "end_to_end_ms": lambda: ahead(chunked),
            "end_to_end_each_loss_read_first_ms":
                lambda: [float(step(next(chunked_too))) for _ in range(chunk)],
            "end_to_end_one_batch_at_a_time_ms": lambda: ahead(single),
            "end_to_end_clips_copied_ms": lambda: ahead(copied),
        }
        for name, stats in timed_alternately(blocks, max(5, repeats // 8)).items():
            results[name] = {**stats, **{k: stats[k] / chunk for k in ("min", "median", "max")}}
    results["end_to_end_block_steps"] = chunk
    return results


def steps_ahead(step, clips, count):
    """`count` training steps as `training.train` runs them: each queued before the last one's
    loss is read."""
    from model.train_step import dispatching_ahead, losses_of

    with dispatching_ahead():
        return list(losses_of(step, clips, count))


def end_to_end_blocks(config, blocks):
    """Mean ms per step of `blocks` blocks of one data chunk's steps, end to end (as in
    `bench_training`), after a warm-up."""
    from model.train_step import make_train_step
    from model.training import batches, build, prefetch_steps

    model, optimizer = build(config)
    step, _ = make_train_step(model, optimizer)
    chunk = prefetch_steps(config)
    means = []
    with contextlib.closing(batches(config, 0)) as clips:
        steps_ahead(step, clips, 3 * chunk)
        for _ in range(blocks):
            start = time.perf_counter()
            steps_ahead(step, clips, chunk)
            means.append(1e3 * (time.perf_counter() - start) / chunk)
    return means


def find_tcmalloc():
    """The name of the system's tcmalloc library (Debian and Ubuntu: `libtcmalloc-minimal4`), or
    None."""
    import ctypes.util

    return ctypes.util.find_library("tcmalloc_minimal") or ctypes.util.find_library("tcmalloc")


def bench_allocator(rounds, blocks):
    """End to end per step with the C library's malloc and with tcmalloc (`LD_PRELOAD`), each in
    a process of its own (a process cannot swap its allocator), the two taken in turn `rounds`
    times; min / median / max over all their blocks. Empty where tcmalloc is not installed."""
    lib = find_tcmalloc()
    if lib is None:
        return {"tcmalloc": None}
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    runs = {"system_malloc": env, "tcmalloc": {**env, "LD_PRELOAD": lib}}
    means = {}
    for _ in range(rounds):
        for name, run_env in runs.items():
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--end_to_end_blocks", str(blocks)],
                env=run_env, check=True, capture_output=True, text=True, cwd=ROOT,
            )
            for model, ms in json.loads(out.stdout.strip().splitlines()[-1]).items():
                means.setdefault(f"{model}_end_to_end_{name}_ms", []).extend(ms)
    return {"tcmalloc": lib, **{key: _stats(ms) for key, ms in means.items()}}


def _min_median_max(stats):
    """One `_stats` result as a table cell."""
    return f"ms min/median/max {stats['min']:6.1f} {stats['median']:6.1f} {stats['max']:6.1f}"


def _stats(ms):
    ms = np.array(ms)
    return {"min": float(ms.min()), "median": float(np.median(ms)), "max": float(ms.max()),
            "repeats": len(ms)}


def bench_cells(repeats, sizes, gates=False, max_seconds=None):
    """Training step of one recurrent layer: our cell in keras.layers.RNN vs ConvLSTM2D, and our
    cell with `state_is_tuple=True` (on JAX's CPU also our cell with XLA's own convolution
    gradients), or with `gates`, our cell's two ways of computing its gates against each other;
    each size's comparison within `max_seconds` (see `timed_alternately`)."""
    import keras

    from model import conv_lstm_cell
    from model.conv_lstm_cell import ConvLSTMCell
    from model.networks import l2_loss
    from model.train_step import make_train_step

    class Regressor(keras.Model):
        """One layer trained to reproduce its input, so `make_train_step` can drive it."""

        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def call(self, x, training=False):
            return self.layer(x)

        def training_loss(self, x):
            return l2_loss(self(x, training=True), x)

    def step_of(layer, x):
        model = Regressor(layer)
        model(x[:1])  # builds the layer's weights
        step, _ = make_train_step(model, keras.optimizers.Adam(1e-3))
        return lambda: float(step(x))

    def ours(filters, **cell_options):
        return keras.layers.RNN(ConvLSTMCell(filters, 3, **cell_options), return_sequences=True)

    def traced_with_xla_gradients(step):
        """`step`, traced now with XLA's own convolution gradients."""
        with conv_lstm_cell.xla_gradients_on_jax_cpu():
            step()
        return step

    results = {}
    for filters, size in sizes:
        x = np.random.default_rng(0).random((16, 10, size, size, filters), dtype=np.float32)
        x = keras.ops.convert_to_tensor(x)
        if gates:
            steps = {
                f"ours_{mode}": step_of(ours(filters, gate_convs=mode), x)
                for mode in ("fused", "per_gate")
            }
        else:
            steps = {
                "ours": step_of(ours(filters), x),
                "keras_ConvLSTM2D": step_of(
                    keras.layers.ConvLSTM2D(filters, 3, padding="same", return_sequences=True), x
                ),
                "ours_tuple_state": step_of(ours(filters, state_is_tuple=True), x),
            }
            if conv_lstm_cell._jax_on_cpu():
                steps["ours_xla_conv_gradients"] = traced_with_xla_gradients(
                    step_of(ours(filters), x))
        for name, stats in timed_alternately(steps, repeats, max_seconds=max_seconds).items():
            results[f"{name}_f{filters}_{size}x{size}_ms"] = stats
    return results


def bench_memory(script, steps):
    """Peak resident memory (MB) of a real training run of `steps` steps, in its own process
    (`script` relative to the repository root, or absolute)."""
    import tempfile

    # The peak of this process's own memory: VmHWM, where Linux has it. (ru_maxrss would carry
    # over the benchmark's own size, inherited at the fork before the exec.)
    probe = (
        "import re, resource, runpy, sys\n"
        "sys.argv = sys.argv[1:]\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "try:\n"
        "    status = open('/proc/self/status').read()\n"
        "    print(re.search(r'VmHWM:\\s*(\\d+) kB', status).group(1))\n"
        "except (OSError, AttributeError):\n"
        "    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-c", probe, os.path.join(ROOT, script), "--train_dir", tmp,
             "--max_step", str(steps), "--save_every", str(steps)],
            check=True, capture_output=True, text=True, cwd=ROOT,
        )
    return {"peak_rss_mb": int(out.stdout.strip().splitlines()[-1]) / 1024}


PARTS = ("simulator", "training", "allocator", "cells", "gates", "memory")


def _machine(backend):
    """The processor (and accelerator, where the backend runs on one) the figures come from."""
    cpu = f"{os.cpu_count()} CPUs"
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            return f"{device.device_kind} ({device.platform}), {cpu}"
    return cpu


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per figure (default 200 on TensorFlow, 50 on JAX, "
                             "whose steps are slower; the cell comparisons a quarter, at least 20)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"what to measure, comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument("--batch_sizes", default="16",
                        help="training batch sizes, comma-separated (16 is the default setting)")
    parser.add_argument("--memory_steps", type=int, default=300,
                        help="steps of the training runs whose peak memory is measured")
    parser.add_argument("--cells", default="4x8,16x16,32x32",
                        help="cell comparisons (parts cells and gates) as FILTERSxSIZE, "
                             "comma-separated")
    parser.add_argument("--cell_seconds", type=float, default=120,
                        help="stop repeating a cell comparison once it has taken this long, "
                             f"after {MIN_REPEATS} repeats at least (0: no limit)")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/<backend>.json)")
    parser.add_argument("--report", metavar="JSON", default=None,
                        help="measure nothing: print the figures and speed targets of a "
                             "results file this script wrote")
    parser.add_argument("--allocator_rounds", type=int, default=3,
                        help="processes per allocator in the allocator comparison")
    parser.add_argument("--end_to_end_blocks", type=int, default=None,
                        help=argparse.SUPPRESS)  # the allocator comparison's child processes
    args = parser.parse_args(argv)
    if args.report is not None:
        report = _read_report(parser, args.report)
        try:
            _print(report)
        except (KeyError, TypeError, ValueError) as e:
            parser.error(f"--report: {args.report} is not a results file of this benchmark "
                         f"({type(e).__name__}: {e})")
        return
    if args.end_to_end_blocks is not None:
        runtime.setup()
        from model.training import CONV, CONV_LSTM

        print(json.dumps({"conv_lstm": end_to_end_blocks(CONV_LSTM, args.end_to_end_blocks),
                          "conv": end_to_end_blocks(CONV, args.end_to_end_blocks)}))
        return
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        sizes = [tuple(map(int, c.split("x"))) for c in args.cells.split(",") if c]
    except ValueError:
        parser.error("--batch_sizes takes integers, --cells FILTERSxSIZE pairs, comma-separated")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.cell_seconds < 0:
        parser.error(f"--cell_seconds must be 0 (no limit) or more, got {args.cell_seconds}")
    keras = runtime.setup()
    from model.training import CONV, CONV_LSTM

    backend = keras.backend.backend()
    repeats = args.repeats or (50 if backend == "jax" else 200)
    cell_repeats = max(20, repeats // 4)
    report = {"backend": backend, "machine": _machine(backend), "repeats": repeats,
              "ld_preload": os.environ.get("LD_PRELOAD", "")}
    print(f"backend {backend}, {report['machine']}, {repeats} repeats")
    say = _progress()
    if "simulator" in parts:
        say("simulator")
        report["simulator"] = bench_simulator(repeats)
    models = {"conv_lstm": (CONV_LSTM, "main_conv_lstm.py"), "conv": (CONV, "main_conv.py")}
    for name, (config, script) in models.items():
        result = {}
        if "training" in parts:
            for batch in batch_sizes:
                say(f"{name} training step at batch {batch}, its parts and comparisons")
                key = "" if batch == 16 else f"batch_{batch}_"
                figures = bench_training(dataclasses.replace(config, batch_size=batch), repeats)
                result.update({key + k: v for k, v in figures.items()})
        if "memory" in parts:
            say(f"{name} peak memory of a {args.memory_steps}-step training run")
            result["memory"] = bench_memory(script, args.memory_steps)
        if result:
            report[name] = result
    if "allocator" in parts:
        say(f"end to end with each allocator, {args.allocator_rounds} processes each")
        report["allocator"] = bench_allocator(args.allocator_rounds, max(5, repeats // 16))
    for part, gates in (("cells", False), ("gates", True)):
        if part in parts:
            say("our cell vs " + ("itself, gates per gate" if gates else "keras ConvLSTM2D")
                + f" at {args.cells} (FILTERSxSIZE)")
            report[part] = bench_cells(cell_repeats, sizes, gates, args.cell_seconds)
    out = args.out or os.path.join(ROOT, "bench", "results", f"{backend}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    checkpoint.write_json(out, report)
    say("done")
    _print(report)
    print(f"wrote {out}")


def _progress():
    """`say(what)`: print `what` with the seconds since `_progress()` was called."""
    start = time.perf_counter()

    def say(what):
        print(f"[{time.perf_counter() - start:5.0f} s] {what}", flush=True)

    return say


def _read_report(parser, path):
    """A results file this script wrote, or a one-line error naming what is wrong with it."""
    try:
        with open(path) as f:
            report = json.load(f)
    except OSError as e:
        parser.error(f"--report: cannot read {path}: {e.strerror}")
    except ValueError as e:
        parser.error(f"--report: {path} is not JSON: {e}")
    if not isinstance(report, dict) or "backend" not in report:
        parser.error(f"--report: {path} is not a results file of this benchmark")
    return report


def _print(report):
    sim = report.get("simulator")
    if sim:
        print(f"simulator, batch 16 x 10 frames: {sim['vectorised_sequences_per_s']:,.0f} seq/s "
              f"({sim['engine']}) vs {sim['numpy_engine_sequences_per_s']:,.0f} seq/s NumPy "
              f"engine vs {sim['loop_sequences_per_s']:,.0f} seq/s per-sequence loop")
    for name in ("conv_lstm", "conv"):
        r = report.get(name, {})
        for k, v in r.items():
            if k.endswith("_ms"):
                print(f"{name:9s} {k[:-3]:36s} {_min_median_max(v)}")
        if "memory" in r:
            print(f"{name:9s} peak resident memory of a training run {r['memory']['peak_rss_mb']:.0f} MB")
    allocator = report.get("allocator")
    if allocator is not None and allocator["tcmalloc"] is None:
        print("allocator comparison skipped: no tcmalloc library found")
    for k, v in (allocator or {}).items():
        if k.endswith("_ms"):
            print(f"{k[:-3]:40s} {_min_median_max(v)}")
    for k, v in {**report.get("cells", {}), **report.get("gates", {})}.items():
        print(f"cell training step {k[:-3]}: median {v['median']:.2f} ms")
    rows = targets(report)
    if rows:
        print(f"speed targets, issue #5 ({report['backend']}, {report.get('machine', '?')}; "
              "medians):")
        for figure, target, measured, verdict in rows:
            print(f"  {figure:50s} {target:27s} {measured:47s} {verdict}")


# The 2016 original on this machine kind (../shared/REFERENCE.md, "Measured here").
ORIGINAL_PEAK_MB = {"conv_lstm": 900, "conv": 850}
# Issue #5: end-to-end training step targets and their "not acceptable" lines, ms.
STEP_TARGET_MS = {"conv_lstm": (16, 24), "conv": (8, 12)}
NAMES = {"conv_lstm": "ConvLSTM", "conv": "conv"}


def targets(report):
    """Issue #5's targets against the figures of `report` (what this script writes), as rows
    `(figure, target, measured, verdict)`, for the figures the report has. Verdicts: "met",
    "not met", or for a training step over its target but under its "not acceptable" line,
    "acceptable". Medians throughout."""
    models = [(name, report.get(name, {})) for name in NAMES]
    return [
        *_simulator_target(report.get("simulator")),
        *[row for name, figures in models for row in _step_targets(name, figures)],
        *_cell_targets(report.get("cells", {})),
        *[row for name, figures in models for row in _memory_target(name, figures)],
        *_reproduction_target(dict(models)),
    ]


def _simulator_target(sim):
    if not sim:
        return []
    rate = sim["vectorised_sequences_per_s"]
    return [("simulator, batch 16 x 10 frames, 2 balls", ">= 20,000 seq/s", f"{rate:,.0f} seq/s",
             _verdict(rate >= 20000))]


def _step_targets(name, figures):
    """Data generation (under 5 % of the step, or costing the step under 5 %: hidden by the
    data thread) and the end-to-end step against its target and its "not acceptable" line."""
    rows, label = [], NAMES[name]
    if {"data_ms", "compiled_step_ms", "end_to_end_ms"} <= set(figures):
        data, step, end_to_end = (figures[k]["median"]
                                  for k in ("data_ms", "compiled_step_ms", "end_to_end_ms"))
        share, cost = data / end_to_end, end_to_end / step - 1
        rows.append((f"{label}: data generation", "< 5 % of a step, or hidden",
                     f"{data:.2f} ms, {100 * share:.1f} %; costs the step {100 * cost:+.1f} %",
                     _verdict(share < 0.05 or cost < 0.05)))
    if "end_to_end_ms" in figures:
        (target, limit), ms = STEP_TARGET_MS[name], figures["end_to_end_ms"]["median"]
        verdict = "met" if ms <= target else "acceptable" if ms <= limit else "not met"
        rows.append((f"{label} training step, end to end", f"<= {target} ms (not over {limit})",
                     f"{ms:.2f} ms", verdict))
    return rows


def _cell_targets(cells):
    """Our cell (the default, concatenated state) against `ConvLSTM2D`; then, as a row of its
    own, the same comparison for the option `state_is_tuple=True` where the report has it."""
    rows = []
    for who, label in (("ours", "our cell"), ("ours_tuple_state", "state_is_tuple")):
        for filters, size in ((4, 8), (32, 32)):
            ours, theirs = (cells.get(f"{name}_f{filters}_{size}x{size}_ms")
                            for name in (who, "keras_ConvLSTM2D"))
            if ours and theirs:
                ours, theirs = ours["median"], theirs["median"]
                rows.append((f"{label} vs ConvLSTM2D, {filters} filters on {size}x{size}",
                             "ours no slower", f"{ours:,.1f} vs {theirs:,.1f} ms "
                             f"({100 * (ours / theirs - 1):+.1f} %)", _verdict(ours <= theirs)))
    return rows


def _memory_target(name, figures):
    if "memory" not in figures:
        return []
    mb, original = figures["memory"]["peak_rss_mb"], ORIGINAL_PEAK_MB[name]
    return [(f"{NAMES[name]}: peak memory of a training run", f"<= the original's {original} MB",
             f"{mb:.0f} MB", _verdict(mb <= original))]


def _reproduction_target(models):
    """200,000 steps of each model at their end-to-end medians (start-up, checkpoints and
    videos not counted)."""
    if not all("end_to_end_ms" in figures for figures in models.values()):
        return []
    hours = 200000 * sum(f["end_to_end_ms"]["median"] for f in models.values()) / 3.6e6
    return [("200,000 steps of each model (steps alone)", "about 1.5 h", f"{hours:.2f} h",
             _verdict(hours <= 1.5))]


def _verdict(met):
    return "met" if met else "not met"


if __name__ == "__main__":
    main()
