"""The reproduction study (the README's "Against the original"): every seed pair at every milestone
under `--study_dir`, both alignments, clean, clipped to [0, 1] and with input dropout, beside the
original's figure. Prints the README's table and verdict figures; writes `<out>.csv` and `.png`."""

import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap

from model import runtime

runtime.start()  # first: Keras and its backend, quietly

import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from model import checkpoint, runs  # noqa: E402
from model.cli import REPO, Parser, UsageError, out_prefix, progress, run_script  # noqa: E402
from model.config import MODELS  # noqa: E402
from model.evaluation import ORIGINAL_FIGURE, add_flags, check_flags, evaluate  # noqa: E402
from model.files import write_all  # noqa: E402
from systems.bouncing_balls import Balls  # noqa: E402

EVAL_KEEP_PROB = 0.8  # the 2016 scripts fed their training keep_prob to every run of a graph
VARIANTS = {"clean": (1.0, "sse"), "clipped": (1.0, "sse_clipped"),  # keep_prob, error
            "dropout": (EVAL_KEEP_PROB, "sse"), "dropout_clipped": (EVAL_KEEP_PROB, "sse_clipped")}
SUFFIXES = {"2016": "_2016", "our": ""}  # alignment's name in the CSV: its series' suffix
TABLE_STEPS = (1, 3, 5, 7, 10, 15, 20)
SEEDS = (0, 1, 2)
MILESTONES = (10_000, 20_000, 50_000, 100_000, 200_000)  # shipped; every 10,000 kept in training
STUDY_RUNS = os.path.join(REPO, "checkpoints", "train_store_study")
MIDDLE = slice(3, 8)  # prediction steps 3-7, where the original's ratio peaks
SPREAD = slice(5, 11)  # prediction steps 5-10, where the seeds' ConvLSTM errors differ most
NEAR = 0.25  # "within +-25 % of the original's ratio"

# The original's figure, 800x600 px, its axes found from its tick labels; its lines blue and green.
FRAME = {"x": (100, 720, 25.0), "y": (540, 60, 300_000.0)}  # pixel at 0, pixel at top, top value
LEGEND = (537, 710, 70, 135)  # columns and rows of its legend box, which hides the lines there
EDGE = 2  # columns at the frame's left edge, inside the axis line's grey antialiasing


def read_original(path=ORIGINAL_FIGURE):
    """`{"conv_lstm", "conv"}` -> `(24,)`: each line's colour-weighted mean row at steps 0..23 in
    figure units, NaN behind the legend; step 0, under the axis line, extends the first segment."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(float)
    r, g, b = np.moveaxis(rgb, -1, 0)
    (x0, x1, x_top), (y0, y1, y_top) = FRAME["x"], FRAME["y"]
    seen = np.zeros(rgb.shape[:2])
    seen[y1 + 1:y0] = 1
    seen[LEGEND[2]:LEGEND[3] + 1, LEGEND[0]:LEGEND[1] + 1] = 0
    curves = {}
    for name, colour in (("conv_lstm", (b - r) * (abs(r - g) < 30)),
                         ("conv", (g - r) * (abs(r - b) < 30))):
        total = (weight := np.clip(colour, 0, None) * seen).sum(axis=0)
        row = np.arange(len(rgb)) @ weight / np.maximum(total, 1e-9)  # per column
        heights = []
        for x in x0 + np.arange(1, 24) * (x1 - x0) / x_top:  # steps 1-23
            pair, share = np.array([int(x), int(x) + 1]), x - int(x)
            found = total[pair] > 25  # at least a tenth of a pixel's colour
            heights.append(np.average(row[pair][found], weights=np.array(
                [1 - share, share])[found] + 1e-9) if found.any() else np.nan)
        first = np.arange(x0 + EDGE, x0 + (x1 - x0) / x_top).astype(int)  # the first segment
        first = first[total[first] >= 0.8 * np.median(total[first])]  # not under the other line
        heights.insert(0, np.polyval(np.polyfit(first, row[first], 1), x0))
        curves[name] = (y0 - np.array(heights)) * y_top / (y0 - y1)
    return curves


def find_pairs(study_dir):
    """`{(step, seed): {model: checkpoint path}}` where both models have it; warns of the rest."""
    found = {}
    for name in MODELS:
        folder = os.path.join(study_dir, name)
        for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            match = re.fullmatch(r"seed(\d+)", entry)
            for path in checkpoint.list_checkpoints(os.path.join(folder, entry)) if match else []:
                found.setdefault((checkpoint.step_of(path), int(match.group(1))), {})[name] = path
    for (step, seed), paths in sorted(found.items()):
        for name in MODELS.keys() - paths.keys():
            print(f"warning: {next(iter(paths.values()))} has no partner (no {name} checkpoint "
                  f"at step {step:,} for seed {seed}): left out")
    return {key: paths for key, paths in sorted(found.items()) if len(paths) == len(MODELS)}


def train_runs(study_dir):
    """Train or resume the six runs one after another, copying their `MILESTONES` into
    `study_dir`; a run whose training folder is gone resumes from its newest milestone there."""
    for seed, (name, kind) in itertools.product(SEEDS, MODELS.items()):
        run, shipped = (os.path.join(d, name, f"seed{seed}") for d in (STUDY_RUNS, study_dir))
        if not checkpoint.list_checkpoints(run) and (kept := checkpoint.list_checkpoints(shipped)):
            _copy(kept[-1], os.path.join(run, os.path.basename(kept[-1])))
        print(f"training {name}, seed {seed}, in {run}", flush=True)
        command = [sys.executable, os.path.join(REPO, kind.script), "--train_dir", run,
                   "--seed", str(seed), "--keep_every", "10000", "--log_every", "1000"]
        code = subprocess.call(command)
        for path in checkpoint.list_checkpoints(run):
            target = os.path.join(shipped, os.path.basename(path))
            if checkpoint.step_of(path) in MILESTONES and not os.path.isdir(target):
                _copy(path, target)
        if code:
            raise ChildProcessError(f"training {name}, seed {seed}, in {run} failed (exit {code}); "
                                    f"resume it with: {shlex.join(command)}")


def _copy(checkpoint_dir, target):
    """Copy a checkpoint folder so that `target` appears whole or not at all."""
    shutil.copytree(checkpoint_dir, target + ".tmp", dirs_exist_ok=True)
    os.replace(target + ".tmp", target)


def run_study(models, args):
    """`{(step, seed): models}` -> `{(step, seed, variant, alignment): (conv_lstm, conv)}`."""
    table = {}
    for (step, seed), pair in progress(iterable=models.items(), desc="study", unit="pair"):
        results = {p: evaluate(pair, Balls(), args.num_sequences, args.horizon, args.seed,
                               args.batch_size, quality=False, keep_prob=p)
                   for p in (1.0, EVAL_KEEP_PROB)}
        for variant, (keep, key) in VARIANTS.items():
            for alignment, suffix in SUFFIXES.items():
                table[step, seed, variant, alignment] = tuple(
                    results[keep][name + suffix][key].mean(axis=0) for name in MODELS)
    return table


def write_csv(path, table, original):
    """One row per (source, training step, seed, variant, alignment, prediction step)."""
    rows = [(("original_2016_pixels", 200_000, "", "figure", "2016"),
             (original["conv_lstm"], original["conv"]))]
    rows += [(("ours", *key), curves) for key, curves in sorted(table.items())]
    with open(path, "w") as f:
        print("source,train_step,seed,variant,alignment,pred_step,conv_lstm,conv,ratio", file=f)
        for key, (lstm, conv) in rows:
            for k, (a, b) in enumerate(zip(lstm, conv)):
                print(*key, k, f"{a:.6g}", f"{b:.6g}", f"{b / a:.6g}", sep=",", file=f)


def errors(table, step, variant="clean", alignment="2016"):
    """`{model: (seeds, horizon)}`: each model's error per seed of milestone `step`."""
    rows = [c for (s, _, v, a), c in sorted(table.items())
            if (s, v, a) == (step, variant, alignment)]
    return {name: np.array([c[index] for c in rows]) for index, name in enumerate(MODELS)}


def ratios(table, step, variant="clean", alignment="2016"):
    """`(seeds, horizon)`: conv / ConvLSTM per seed of milestone `step`."""
    error = errors(table, step, variant, alignment)
    return error["conv"] / error["conv_lstm"]


def mean_range(values):
    """The seeds' mean and range of `values`, as the table and the verdict print them."""
    return f"{values.mean():.2f} ({values.min():.2f}-{values.max():.2f})"


def print_table(table, original):
    """The README's table: the ratio at `TABLE_STEPS` per milestone, then variants at the last."""
    last = max(key[0] for key in table)
    rows = [(step, "clean", "2016") for step in sorted({key[0] for key in table})]
    rows += [(last, "clean", "our")] + [(last, variant, "2016") for variant in list(VARIANTS)[1:]]
    print("| training steps | evaluation | " + " | ".join(f"step {k}" for k in TABLE_STEPS)
          + " |\n|" + " --- |" * (len(TABLE_STEPS) + 2))
    ratio = original["conv"] / original["conv_lstm"]
    print("| original (its figure) | | " + " | ".join(
        "hidden" if np.isnan(ratio[k]) else f"{ratio[k]:.2f}" for k in TABLE_STEPS) + " |")
    for step, variant, alignment in rows:
        r = ratios(table, step, variant, alignment)
        cells = [mean_range(r[:, k]) for k in TABLE_STEPS if k < r.shape[1]]
        seeds = f"{len(r)} seed{'s' * (len(r) > 1)}"
        print(f"| {step:,} | {variant.replace('_', ' + ')}, {alignment} alignment, {seeds} | "
              + " | ".join(cells) + " |")


def spans(steps):
    """`[1, 2, 3, 7]` -> `"1-3, 7"`."""
    groups = itertools.groupby(enumerate(steps), key=lambda pair: pair[1] - pair[0])
    runs = [[k for _, k in group] for _, group in groups]
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs) or "none"


def verdict(table, original):
    """Print the figures the README's verdict quotes, each line saying what it counts."""
    target = original["conv"] / original["conv_lstm"]
    readable = [k for k in range(1, 21) if not np.isnan(target[k])]
    print("\nprediction steps where the conv model's error is not above the ConvLSTM's, per seed:")
    for (step, seed, variant, alignment), (lstm, conv) in sorted(table.items()):
        if variant == "clean":
            level = [k for k in range(1, len(lstm)) if conv[k] <= lstm[k]]
            print(f"  {step:>7,} seed {seed} {alignment:>4}: {spans(level)}")
    print(f"\nper evaluation: the ratio at step 0 (original {target[0]:.2f}) and at steps 3-7 "
          f"(original {target[MIDDLE].mean():.2f}), seed mean (range); its steps 1-20 within "
          f"+-{NEAR:.0%} of the original's, of {len(readable)} readable ({spans(readable)}):")
    for step, variant, alignment in sorted({key[:1] + key[2:] for key in table}):
        r = ratios(table, step, variant, alignment)
        mean = r.mean(axis=0)
        near = [k for k in readable if k < len(mean) and abs(mean[k] / target[k] - 1) <= NEAR]
        print(f"  {step:>7,} {variant:>15} {alignment:>4}: 0 {mean[0]:.2f}, 3-7 "
              f"{mean_range(r[:, MIDDLE].mean(axis=1))}; {len(near):2d} near: {spans(near)}")
    last = max(key[0] for key in table)
    seeds = np.array(sorted({key[1] for key in table if key[0] == last}))
    middle = ratios(table, last)[:, MIDDLE].mean(axis=1)
    print(f"at {last:,}: the ratio at steps 3-7 per seed:",
          ", ".join(f"seed {s} {m:.2f}" for s, m in zip(seeds, middle)))
    lstm = errors(table, last)["conv_lstm"][:, SPREAD]  # whose is highest and lowest, how much
    high, low = ("/".join(map(str, sorted(set(seeds[pick(lstm, axis=0)]))))
                 for pick in (np.argmax, np.argmin))
    times = lstm.max(axis=0) / lstm.min(axis=0)
    print(f"at {last:,}: the ConvLSTM's error at steps {SPREAD.start}-"
          f"{SPREAD.start + lstm.shape[1] - 1} is highest for seed {high}, lowest for seed "
          f"{low}: {times.min():.2f}-{times.max():.2f} times as high")
    for alignment in SUFFIXES:
        change = ratios(table, last, "clipped", alignment) / ratios(table, last, "clean", alignment)
        print(f"at {last:,}, {alignment} alignment: clipping moves the ratio by at most "
              f"{np.abs(change - 1).max():.1%}")


def plot(path, table, original, caption):
    """The figure: per milestone the ratio and each model's growth; the variants; the 3-7 ratio."""
    milestones, seeds = (sorted({key[i] for key in table}) for i in (0, 1))
    colours = dict(zip(milestones, colormaps["viridis"](np.linspace(0, 0.9, len(milestones)))))
    fig = Figure(figsize=(17, 9.5), dpi=100)  # not pyplot's: never a window, nothing to close
    axes = fig.subplots(2, 3)
    target, last = original["conv"] / original["conv_lstm"], milestones[-1]

    def band(ax, values, colour, label, **style):
        k = np.arange(values.shape[1])
        ax.plot(k, values.mean(axis=0), color=colour, label=label, **style)
        ax.fill_between(k, values.min(axis=0), values.max(axis=0), color=colour, alpha=0.2)

    def finish(ax, title, y, original_curve=None, x="future prediction step", **axis):
        if original_curve is not None:
            ax.plot(original_curve, "k--o", markersize=3, label="original (its figure's pixels)")
        ax.set_title(textwrap.fill(title, 60), fontsize=10)
        ax.set(xlabel=x, ylabel=y, **axis)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)

    for ax, alignment in zip(axes[0, :2], SUFFIXES):
        for step in milestones:
            band(ax, ratios(table, step, alignment=alignment), colours[step], f"{step:,} steps")
        finish(ax, f"conv / ConvLSTM error, {alignment} alignment, mean of the seeds, their "
               "range shaded", "conv error / ConvLSTM error", target)
    for variant in VARIANTS:  # a clipped line nearly covers its unclipped one: thin over thick
        thin = variant.endswith("clipped")
        style = dict(ls="--", lw=1, marker="x", markersize=4) if thin else dict(lw=4, alpha=0.5)
        label = f"{variant.replace('_', ' + ')} ({'thin, x' if thin else 'thick'})"
        colour = "tab:red" if "dropout" in variant else "tab:blue"
        band(axes[0, 2], ratios(table, last, variant), colour, label, **style)
    finish(axes[0, 2], f"evaluation variants at {last:,} steps, 2016 alignment (clipped to "
           "[0, 1]: thin with x, nearly on the unclipped)", "conv error / ConvLSTM error", target)
    for ax in axes[0]:
        ax.axhline(1, color="gray", lw=0.8)
    for ax, model in zip(axes[1, :2], MODELS):
        for step in milestones:
            error = errors(table, step)[model]
            band(ax, error / error[:, :1], colours[step], f"{step:,} steps")
        finish(ax, f"{MODELS[model].label}: error over its own step 0, 2016 alignment",
               "error / its error at step 0", original[model] / original[model][0])
    ax = axes[1, 2]
    for seed, (variant, style) in itertools.product(seeds, (("clean", "o-"), ("dropout", "s--"))):
        found = [(s, (c[1] / c[0])[MIDDLE].mean()) for (s, k, v, a), c in sorted(table.items())
                 if (k, v, a) == (seed, variant, "2016")]
        ax.plot(*zip(*found), style, color=f"C{seed}", label=f"seed {seed}, {variant}")
    middle = np.nanmean(target[MIDDLE])
    ax.axhline(middle, color="k", ls="--", label="original")
    ax.axhspan(middle * (1 - NEAR), middle * (1 + NEAR), color="gray", alpha=0.2,
               label=f"original +-{NEAR:.0%}")
    finish(ax, "conv / ConvLSTM at prediction steps 3-7 (mean), 2016 alignment",
           "conv error / ConvLSTM error, mean of steps 3-7", x="training steps", xscale="log")
    fig.suptitle(textwrap.fill(f"Reproduction study: seed pairs {', '.join(map(str, seeds))} "
                               "at each training length (where trained), against the original's "
                               "figure", 140), fontsize=12)
    fig.text(0.99, 0.005, caption, ha="right", va="bottom", fontsize=7, color="gray")
    fig.tight_layout()
    fig.savefig(path, format="png")


def parse_flags(argv=None):
    """The flags, all checked: raises `UsageError` before anything is loaded or written."""
    parser = Parser(prog="reproduction_study.py", description=__doc__)
    add = parser.add_argument
    add("--study_dir", default=os.path.join(REPO, "checkpoints", "study"),
        help="folder of <model>/seed<k>/ckpt-<step>/ checkpoints (default: %(default)s)")
    add_flags(parser)
    add("--train", action="store_true", help="train or resume the six runs first (4.5 h, 2 cores)")
    add("--out", default=os.path.join(REPO, "results", "reproduction_study"),
        help="output prefix: .csv and .png (default: %(default)s; the committed ones: --out figs)")
    args = parser.parse_args(argv)
    check_flags(args, MIDDLE.stop, ": the verdict compares the models at prediction steps 3-7")
    args.out = out_prefix(args.out, "reproduction_study")
    return args


def main(argv=None):
    """The exit code, as `run_script` gives it; 1 also where a training run fails."""
    return run_script("reproduction_study.py", lambda: run(argv), "nothing written; rerun to "
                      "evaluate (--train resumes)", failures=(ChildProcessError,))


def run(argv=None):
    args = parse_flags(argv)
    if args.train:
        train_runs(args.study_dir)
    pairs = find_pairs(args.study_dir)
    if not pairs:
        raise UsageError(f"no seed pair with a common milestone in {args.study_dir} "
                         "(<model>/seed<k>/ckpt-<step>/ for both models)")
    models = {key: {name: runs.load_run(name, path).model for name, path in paths.items()}
              for key, paths in pairs.items()}  # all, so a damaged one stops the study first
    print(len(pairs), "seed pairs:", ", ".join(f"seed {seed} at {step:,}" for step, seed in pairs))
    original = read_original()
    table = run_study(models, args)
    print_table(table, original)
    verdict(table, original)
    caption = f"{args.num_sequences} sequences, seed {args.seed}"
    write_all({args.out + ".csv": lambda p: write_csv(p, table, original),
               args.out + ".png": lambda p: plot(p, table, original, caption)})
    print(f"wrote {args.out}.csv and {args.out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
