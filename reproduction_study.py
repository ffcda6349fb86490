"""The reproduction study: how far apart the two models are across seeds and training length,
and where the original's figure falls.

Evaluates every seed pair (ConvLSTM and conv trained with the same `--seed`) at every milestone
found under `--study_dir` (`<model>/seed<k>/ckpt-<step>/`) on the same clips, in both
alignments of step 0 (`model/evaluation.py`), and with the 2016 author's evaluation habits as
variants:
  clean            the error of the raw prediction (as `create_graphs.py`)
  clipped          predictions clipped to [0, 1] before the error
  dropout          the true input frames through dropout with keep probability 0.8, as the
                   original's first script fed its video rollout
  dropout_clipped  both
The dropout variants cost a second evaluation; `--variants_at` limits them to some milestones.
Beside them, the original's two curves read off the pixels of its figure (`read_original`).
Writes `<out>.csv` (one row per evaluation and prediction step, the original's reading
included) and `<out>.png`, and prints the README's table and the figures its verdict quotes.

`--train` first trains (or resumes) the study's six runs, one after another, each by its
training script with `--seed k`; their milestones are copied into `--study_dir` after each run.
A run whose training folder is gone resumes from its newest milestone there.
"""

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys

import numpy as np

from create_graphs import write_outputs
from model import checkpoint, runtime
from model.evaluation import MODELS, evaluate, load
from model.training import Parser, UsageError, script_exit

ROOT = os.path.dirname(os.path.abspath(__file__))
ORIGINAL = os.path.join(ROOT, "figs", "original_2016_conv_lstm_vs_conv.png")
VARIANTS = ("clean", "clipped", "dropout", "dropout_clipped")
EVAL_KEEP_PROB = 0.8  # the 2016 scripts fed their training keep_prob to every run of a graph
ALIGNMENTS = {"2016": "_2016", "our": ""}  # name in the CSV: suffix of the evaluation's series
TABLE_STEPS = (1, 3, 5, 7, 10, 15, 20)
SEEDS = (0, 1, 2)
MILESTONES = (10_000, 20_000, 50_000, 100_000, 200_000)  # shipped; every 10,000 kept in training
STUDY_RUNS = os.path.join(ROOT, "checkpoints", "train_store_study")
MIDDLE = slice(3, 8)  # prediction steps 3-7, where the original's ratio peaks
NEAR = 0.25  # "within +-25 % of the original's ratio"

# The original's figure, 800x600 px: the axes' frame runs from x = 0 at column 100 to x = 25 at
# column 720, and from y = 0 at row 540 to y = 300,000 at row 60 (found from its tick labels
# and its black frame); its lines are pure blue (ConvLSTM) and green (conv), antialiased on white.
FRAME = {"x": (100, 720, 25.0), "y": (540, 60, 300_000.0)}  # pixel at 0, pixel at top, top value
LEGEND = (537, 710, 70, 135)  # columns and rows of its legend box, which hides the lines there
LINE_END = 23


def read_original(path=ORIGINAL):
    """`{"conv_lstm", "conv"}` -> `(24,)`: each line's height at prediction steps 0..23, in the
    figure's units. A line's height in a pixel column is the mean row of its pixels weighted by
    how strongly they carry its colour (blue: B - R; green: G - R, R and B alike), read in the two
    columns either side of the step and interpolated; NaN where the legend hides it. One pixel is
    625 units."""
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB")).astype(float)
    r, g, b = np.moveaxis(rgb, -1, 0)
    weights = {"conv_lstm": np.clip(b - r, 0, None) * (abs(r - g) < 30),
               "conv": np.clip(g - r, 0, None) * (abs(r - b) < 30)}
    (x0, x1, x_top), (y0, y1, y_top) = FRAME["x"], FRAME["y"]
    rows = np.arange(rgb.shape[0])
    inside = (rows > y1) & (rows < y0)
    hidden = (rows >= LEGEND[2]) & (rows <= LEGEND[3])
    curves = {}
    for name, weight in weights.items():
        heights = []
        for step in range(LINE_END + 1):
            x = x0 + step * (x1 - x0) / x_top
            found = []
            for column, share in ((int(x), 1 - (x - int(x))), (int(x) + 1, x - int(x))):
                w = weight[:, column] * inside * ~(hidden & (LEGEND[0] <= column <= LEGEND[1]))
                if column > x0 and w.sum() > 25:  # at least a tenth of a pixel's colour
                    found.append((share + 1e-9, w @ rows / w.sum()))
            row = (sum(s * y for s, y in found) / sum(s for s, _ in found)) if found else np.nan
            heights.append((y0 - row) * y_top / (y0 - y1))
        curves[name] = np.array(heights)
    return curves


def find_pairs(study_dir):
    """`{(step, seed): {model: checkpoint path}}` for each milestone both models of a seed have."""
    found = {}
    for name in MODELS:
        folder = os.path.join(study_dir, name)
        for seed_dir in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            match = re.fullmatch(r"seed(\d+)", seed_dir)
            runs = checkpoint.list_checkpoints(os.path.join(folder, seed_dir)) if match else []
            for path in runs:
                key = (checkpoint.step_of(path), int(match.group(1)))
                found.setdefault(key, {})[name] = path
    return {key: paths for key, paths in sorted(found.items()) if len(paths) == len(MODELS)}


def train_runs(study_dir):
    """Train or resume the study's runs (`SEEDS` x both models, 200,000 steps); copy their
    `MILESTONES` into `study_dir`. Returns the first non-zero exit code, else 0."""
    for seed in SEEDS:
        for name, (_, script) in MODELS.items():
            run, shipped = (os.path.join(d, name, f"seed{seed}") for d in (STUDY_RUNS, study_dir))
            if not checkpoint.list_checkpoints(run) and checkpoint.list_checkpoints(shipped):
                newest = checkpoint.list_checkpoints(shipped)[-1]
                shutil.copytree(newest, os.path.join(run, os.path.basename(newest)))
            print(f"training {name}, seed {seed}, in {run}", flush=True)
            code = subprocess.call([sys.executable, os.path.join(ROOT, script), "--train_dir", run,
                                    "--seed", str(seed), "--keep_every", "10000",
                                    "--log_every", "1000"])
            for path in checkpoint.list_checkpoints(run):
                target = os.path.join(shipped, os.path.basename(path))
                if checkpoint.step_of(path) in MILESTONES and not os.path.isdir(target):
                    os.makedirs(shipped, exist_ok=True)
                    shutil.copytree(path, target + ".tmp", dirs_exist_ok=True)
                    os.replace(target + ".tmp", target)
            if code:
                return code
    return 0


def evaluate_pair(paths, args, variants):
    """`{(variant, alignment): (conv_lstm, conv)}`, each `(horizon,)` mean errors. Raises
    `UsageError` naming a checkpoint that does not load."""
    models = {}
    for name, path in paths.items():
        try:
            models[name] = load(name, path)[0]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UsageError(f"{path} does not load ({error})") from None
    means = {}
    for keep_prob in sorted({1.0 if v in ("clean", "clipped") else EVAL_KEEP_PROB
                             for v in variants}, reverse=True):
        results = evaluate(models, args.num_sequences, args.horizon, args.seed,
                           args.batch_size, quality=False, keep_prob=keep_prob)
        for variant in variants:
            if (keep_prob == 1.0) != variant.startswith("dropout"):
                key = "sse_clipped" if variant.endswith("clipped") else "sse"
                for alignment, suffix in ALIGNMENTS.items():
                    means[variant, alignment] = tuple(
                        results[name + suffix][key].mean(axis=0) for name in MODELS)
    return means


def run_study(pairs, args):
    """`{(train_step, seed, variant, alignment): (conv_lstm, conv)}` over all `pairs`."""
    from tqdm import tqdm

    table = {}
    for (step, seed), paths in tqdm(pairs.items(), desc="study", unit="pair", disable=None):
        dropout = args.variants_at is None or step in args.variants_at
        variants = VARIANTS if dropout else VARIANTS[:2]
        for (variant, alignment), curves in evaluate_pair(paths, args, variants).items():
            table[step, seed, variant, alignment] = curves
    return table


def write_csv(path, table, original):
    """One row per (source, training step, seed, variant, alignment, prediction step)."""
    lines = ["source,train_step,seed,variant,alignment,pred_step,conv_lstm,conv,ratio"]
    rows = [(("original_2016_pixels", 200_000, "", "figure", "2016"),
             (original["conv_lstm"], original["conv"]))]
    rows += [(("ours", *key), curves) for key, curves in sorted(table.items())]
    for (source, step, seed, variant, alignment), (lstm, conv) in rows:
        for k, (a, b) in enumerate(zip(lstm, conv)):
            lines.append(f"{source},{step},{seed},{variant},{alignment},{k},"
                         f"{a:.6g},{b:.6g},{b / a:.6g}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def read_csv(path):
    """`(table, original)` as `run_study` and `read_original` give them, from a CSV that
    `write_csv` wrote (to the 6 significant digits it keeps)."""
    table, original = {}, {name: [] for name in MODELS}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["source"] == "original_2016_pixels":
                curves = original.values()
            else:
                key = (int(row["train_step"]), int(row["seed"]), row["variant"], row["alignment"])
                curves = table.setdefault(key, ([], []))
            for curve, name in zip(curves, MODELS):
                curve.append(float(row[name]))
    return ({key: tuple(np.array(c) for c in curves) for key, curves in table.items()},
            {name: np.array(curve) for name, curve in original.items()})


def errors(table, step, variant="clean", alignment="2016"):
    """`{model: (seeds, horizon)}`: each model's error per seed of milestone `step`."""
    rows = [c for (s, _, v, a), c in sorted(table.items())
            if (s, v, a) == (step, variant, alignment)]
    return {name: np.array([c[index] for c in rows]) for index, name in enumerate(MODELS)}


def ratios(table, step, variant="clean", alignment="2016"):
    """`(seeds, horizon)`: conv / ConvLSTM per seed of milestone `step`."""
    error = errors(table, step, variant, alignment)
    return error["conv"] / error["conv_lstm"]


def growth(table, step, model, alignment="2016"):
    """`(seeds, horizon)`: one model's error over its own step 0, per seed of milestone `step`."""
    error = errors(table, step, alignment=alignment)[model]
    return error / error[:, :1]


def print_table(table, original):
    """The README's table: the ratio at `TABLE_STEPS`, seed mean and range, for the clean
    evaluation in the 2016 alignment at every milestone, then the other alignment and the
    variants at the last milestone."""
    last = max(key[0] for key in table)
    rows = [(step, "clean", "2016") for step in sorted({key[0] for key in table})]
    rows += [(last, "clean", "our")] + [(last, variant, "2016") for variant in VARIANTS[1:]]
    print("| training steps | evaluation | " + " | ".join(f"step {k}" for k in TABLE_STEPS)
          + " |\n|" + " --- |" * (len(TABLE_STEPS) + 2))
    ratio = original["conv"] / original["conv_lstm"]
    print("| original (its figure) | | " + " | ".join(
        "hidden" if np.isnan(ratio[k]) else f"{ratio[k]:.2f}" for k in TABLE_STEPS) + " |")
    for step, variant, alignment in rows:
        r = ratios(table, step, variant, alignment)
        if len(r):
            cells = [f"{r[:, k].mean():.2f} ({r[:, k].min():.2f}-{r[:, k].max():.2f})"
                     for k in TABLE_STEPS if k < r.shape[1]]
            seeds = f"{len(r)} seed{'s' * (len(r) > 1)}"
            print(f"| {step:,} | {variant.replace('_', ' + ')}, {alignment} alignment, {seeds} | "
                  + " | ".join(cells) + " |")


def spans(steps):
    """`[1, 2, 3, 7]` -> `"1-3, 7"`."""
    runs = []
    for k in steps:
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs) or "none"


def verdict(table, original):
    """Print the figures the README's verdict quotes: per milestone and alignment, the steps
    where the conv model is level with or ahead of the ConvLSTM, per seed; per milestone,
    evaluation and alignment, the ratio at step 0 and at steps 3-7 (seed mean; for 3-7 also the
    range of each seed's mean) and the steps 1-20 where the seeds' mean ratio is within `NEAR` of
    the original's (of the steps its figure shows both lines); then, at the last milestone, how
    far the seeds' ConvLSTM errors spread and how much clipping moves the ratio."""
    target = original["conv"] / original["conv_lstm"]
    readable = [k for k in range(1, 21) if not np.isnan(target[k])]
    print("\nprediction steps where the conv model's error is not above the ConvLSTM's, per seed:")
    for (step, seed, variant, alignment), (lstm, conv) in sorted(table.items()):
        if variant == "clean":
            level = [k for k in range(1, len(lstm)) if conv[k] <= lstm[k]]
            print(f"  {step:>7,} seed {seed} {alignment:>4}: {spans(level)}")
    print(f"\nper evaluation: the ratio at step 0 (original {target[0]:.2f}) and at steps 3-7 "
          f"(original {target[MIDDLE].mean():.2f}), seed mean (range); "
          f"its steps 1-20 within +-{NEAR:.0%} of the original's, of {len(readable)} readable "
          f"({readable[0]}-{readable[-1]}):")
    for step, variant, alignment in sorted({key[:1] + key[2:] for key in table}):
        r = ratios(table, step, variant, alignment)
        middle, mean = r[:, MIDDLE].mean(axis=1), r.mean(axis=0)
        near = [k for k in readable if k < len(mean) and abs(mean[k] / target[k] - 1) <= NEAR]
        print(f"  {step:>7,} {variant:>15} {alignment:>4}: 0 {mean[0]:.2f}, 3-7 "
              f"{middle.mean():.2f} ({middle.min():.2f}-{middle.max():.2f}); "
              f"{len(near):2d} near: {spans(near)}")
    last = max(key[0] for key in table)
    lstm = errors(table, last)["conv_lstm"]
    print(f"at {last:,}: ConvLSTM error at steps 5-10, highest seed over lowest: "
          + " ".join(f"{x:.2f}" for x in (lstm.max(0) / lstm.min(0))[5:11]))
    for alignment in ALIGNMENTS:
        change = ratios(table, last, "clipped", alignment) / ratios(table, last, "clean", alignment)
        print(f"at {last:,}, {alignment} alignment: clipping moves the ratio by at most "
              f"{np.abs(change - 1).max():.1%}")


def plot(path, table, original, caption):
    """Ratio vs prediction step per milestone (both alignments), the variants at the last
    milestone, each model's growth over its step 0, and the middle ratio vs training length."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    milestones = sorted({key[0] for key in table})
    colours = dict(zip(milestones, plt.cm.viridis(np.linspace(0, 0.9, len(milestones)))))
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5), dpi=100)
    target = original["conv"] / original["conv_lstm"]
    steps = np.arange(len(target))

    def band(ax, values, colour, label, style="-"):
        k = np.arange(values.shape[1])
        ax.plot(k, values.mean(axis=0), style, color=colour, label=label)
        ax.fill_between(k, values.min(axis=0), values.max(axis=0), color=colour, alpha=0.2)

    def the_original(ax, values):
        ax.plot(steps, values, "k--o", markersize=3, label="original (its figure's pixels)")

    for ax, alignment in zip(axes[0, :2], ALIGNMENTS):
        for step in milestones:
            band(ax, ratios(table, step, alignment=alignment), colours[step], f"{step:,} steps")
        the_original(ax, target)
        ax.set_title(f"conv / ConvLSTM error, {alignment} alignment\n"
                     "mean of the seeds, their range shaded", fontsize=10)
    last = milestones[-1]
    for variant, style in zip(VARIANTS, ("-", ":", "--", "-.")):
        r = ratios(table, last, variant)
        if len(r):
            band(axes[0, 2], r, "tab:red" if "dropout" in variant else "tab:blue", variant, style)
    the_original(axes[0, 2], target)
    axes[0, 2].set_title(f"evaluation variants at {last:,} steps, 2016 alignment", fontsize=10)
    for ax, model in zip(axes[1, :2], MODELS):
        for step in milestones:
            band(ax, growth(table, step, model), colours[step], f"{step:,} steps")
        the_original(ax, original[model] / original[model][0])
        ax.set_title(f"{'ConvLSTM' if model == 'conv_lstm' else 'conv'}: error over its "
                     "own step 0, 2016 alignment", fontsize=10)
    for ax in axes.flat[:5]:
        ax.set_xlabel("future prediction step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[0]:
        ax.axhline(1, color="gray", lw=0.8)
    ax = axes[1, 2]
    for seed in sorted({key[1] for key in table}):
        for variant, style in (("clean", "o-"), ("dropout", "s--")):
            found = [(s, (c[1] / c[0])[MIDDLE].mean())
                     for (s, k, v, a), c in sorted(table.items())
                     if (k, v, a) == (seed, variant, "2016") and len(c[0]) >= MIDDLE.stop]
            if found:
                ax.plot(*zip(*found), style, color=f"C{seed}", label=f"seed {seed}, {variant}")
    middle = np.nanmean(target[MIDDLE])
    ax.axhline(middle, color="k", ls="--", label="original")
    ax.axhspan(middle * (1 - NEAR), middle * (1 + NEAR), color="gray", alpha=0.2,
               label=f"original +-{NEAR:.0%}")
    ax.set_xscale("log")
    ax.set_xlabel("training steps")
    ax.set_title("conv / ConvLSTM at prediction steps 3-7 (mean), 2016 alignment", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    seeds = sorted({key[1] for key in table})
    fig.suptitle(f"Reproduction study: seed pairs {', '.join(map(str, seeds))} at each training "
                 "length (where trained), against the original's figure", fontsize=12)
    fig.text(0.99, 0.005, caption, ha="right", va="bottom", fontsize=7, color="gray")
    fig.tight_layout()
    try:
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def parse_flags(argv=None):
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--study_dir", default=os.path.join(ROOT, "checkpoints", "study"),
        help="folder of <model>/seed<k>/ckpt-<step>/ checkpoints (default: %(default)s)")
    add("--num_sequences", type=int, default=1200, help="sequences averaged (default: 1200)")
    add("--seed", type=int, default=2016, help="seed of the evaluation clips (default: 2016)")
    add("--horizon", type=int, default=24, help="predicted frames per sequence (default: 24)")
    add("--batch_size", type=int, default=200, help="sequences per forward pass (default: 200)")
    add("--variants_at", type=int, nargs="+",
        help="milestones at which the dropout variants are measured too (default: all)")
    add("--train", action="store_true",
        help="first train or resume the six runs (about 4.5 hours on 2 cores)")
    add("--out", default=os.path.join(ROOT, "figs", "reproduction_study"),
        help="output prefix: .csv and .png (default: %(default)s)")
    args = parser.parse_args(argv)
    for name in ("num_sequences", "horizon", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.num_sequences < 2:
        raise UsageError("--num_sequences must be at least 2 (the seeds' spread needs them)")
    return args


def main(argv=None):
    """The exit code: 2 for a bad flag, folder or checkpoint, 1 where training or an output
    write fails, 130 on Ctrl-C and 143 on SIGTERM, each with one line."""
    return script_exit("reproduction_study.py", lambda: run(argv),
                       "nothing written; rerun to evaluate (--train resumes)")


def run(argv=None):
    args = parse_flags(argv)
    runtime.check_backend()
    if args.train and train_runs(args.study_dir):
        return 1
    pairs = find_pairs(args.study_dir)
    if not pairs:
        raise UsageError(f"no seed pair with a common milestone in {args.study_dir} "
                         "(<model>/seed<k>/ckpt-<step>/ for both models)")
    runtime.setup()
    print(f"{len(pairs)} seed pairs: " + ", ".join(f"seed {seed} at {step:,}"
                                                  for step, seed in pairs))
    original = read_original()
    table = run_study(pairs, args)
    print_table(table, original)
    verdict(table, original)
    caption = f"{args.num_sequences} sequences, seed {args.seed}"
    with checkpoint.writing(args.out):
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    write_outputs({args.out + ".csv": lambda p: write_csv(p, table, original),
                   args.out + ".png": lambda p: plot(p, table, original, caption)})
    print(f"wrote {args.out}.csv and {args.out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
