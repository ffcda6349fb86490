"""Reconstruction error against prediction step, ConvLSTM vs conv, over random sequences.

Both models see the same simulated clips, in two alignments of step 0 (`model/evaluation.py`
says which frames each gets and predicts): ours, where both predict frame 5 + k, and the 2016
video graphs', where the ConvLSTM predicts frame 6 + k and the conv model frame 1 + k.
Writes `<out>.csv`, `<out>.png` (the 2016 alignment beside the original's figure, ours beside
it), `<out>_psnr_ssim.png`, `<out>.json` and `rollouts.gif` in the folder of `--out`: by default
`results/` in this repository, so the committed `figs/` change only when `--out` names them.
Default folders are this repository's, from any working folder.
"""

import argparse
import contextlib
import os
import sys

import numpy as np

from model import checkpoint, runtime
from model.evaluation import (ALIGNMENTS, CONTEXT, LABELS, MODELS, SERIES, eval_clips,
                              evaluate, load_run, mean_and_ci95, predict)
from model.training import CONV, CONV_LSTM, REPO, Parser, UsageError, script_exit

ORIGINAL = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "figs", "original_2016_conv_lstm_vs_conv.png")
GIF_SEQUENCES, GIF_SCALE, GIF_GAP, GIF_BAND = 3, 5, 8, 24  # rows; px per pixel, between, text
GIF_MS = 250  # per frame, as the original's 4 frames per second


def parse_flags(argv=None):
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_sequences", type=int, default=1200,
                        help="sequences averaged (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=2016,
                        help="seed of the evaluation sequences (default: %(default)s)")
    parser.add_argument("--horizon", type=int, default=24,
                        help="predicted frames per sequence (default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=200,
                        help="sequences per forward pass (default: %(default)s)")
    parser.add_argument("--conv_lstm_dir", default=os.path.join(REPO, CONV_LSTM.train_dir),
                        help="training folder of the ConvLSTM run (default: %(default)s)")
    parser.add_argument("--conv_dir", default=os.path.join(REPO, CONV.train_dir),
                        help="training folder of conv (default: %(default)s)")
    parser.add_argument("--conv_lstm_step", type=int,
                        help="evaluate the ConvLSTM checkpoint at this step (default: the "
                             "newest that loads)")
    parser.add_argument("--conv_step", type=int,
                        help="evaluate the conv checkpoint at this step (default: the newest "
                             "that loads)")
    parser.add_argument("--pretrained_dir", default=os.path.join(REPO, "checkpoints", "pretrained"),
                        help="shipped weights, used where a training folder holds no checkpoint "
                             "(default: %(default)s)")
    parser.add_argument("--out", default=os.path.join(REPO, "results", "conv_lstm_vs_conv"),
                        help="output prefix: .csv, .png, _psnr_ssim.png, .json; rollouts.gif "
                             "goes into its folder (default: %(default)s; the committed "
                             "figures: --out figs/conv_lstm_vs_conv)")
    args = parser.parse_args(argv)
    for name in ("num_sequences", "horizon", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    check_writable(args.out)
    return args


def check_writable(prefix):
    """Raise `UsageError` unless the folder of `prefix` (made if missing) can be written."""
    folder = os.path.dirname(prefix) or "."
    try:
        if not os.path.exists(folder):
            os.makedirs(folder)
        checkpoint.probe_writable(folder)
    except OSError as error:
        raise UsageError(f"--out {prefix!r} cannot be written: {folder} "
                         f"({error.strerror or error})") from error


def describe_weights(paths, steps, pretrained_dir):
    """`(text, mark)`: which weights at which steps, and where their sources or steps differ
    a short line saying so for the GIF ("" where they do not)."""
    shipped = {n: os.path.dirname(os.path.abspath(p)) == os.path.abspath(pretrained_dir)
               for n, p in paths.items()}
    mixed = len(set(shipped.values())) > 1 or len(set(steps.values())) > 1
    text = " vs ".join(f"{LABELS[n]} {'shipped' if shipped[n] else paths[n]} "
                       f"(step {steps[n]:,})" for n in paths)
    mark = "MIXED WEIGHTS: " + ", ".join(f"{LABELS[n]} step {steps[n]:,}"
                                         f"{' (shipped)' if shipped[n] else ''}" for n in paths)
    return text, mark if mixed else ""


def summarise(results):
    """CSV columns: the four mean errors, their 95% confidence half-widths, then PSNR, SSIM."""
    columns = {}
    for key in ("sse", "psnr", "ssim"):
        for series in SERIES:
            name = series if key == "sse" else f"{series}_{key}"
            columns[name], columns[f"{name}_ci95"] = mean_and_ci95(results[series][key])
    order = SERIES + [f"{s}_ci95" for s in SERIES]
    return {c: columns[c] for c in order + [c for c in columns if c not in order]}


def write_csv(path, columns):
    table = np.column_stack([np.arange(len(columns["conv"])), *columns.values()])
    np.savetxt(path, table, fmt=["%d"] + ["%.6g"] * len(columns), delimiter=",",
               header=",".join(["step", *columns]), comments="")


def _curves(ax, columns, key, alignment, ylabel):
    steps = np.arange(len(columns["conv"]))
    for name, colour in (("conv_lstm", "tab:blue"), ("conv", "tab:green")):  # the original's
        column = name + alignment + key
        mean, half = columns[column], columns[column + "_ci95"]
        ax.plot(steps, mean, color=colour, label=LABELS[name])
        ax.fill_between(steps, mean - half, mean + half, color=colour, alpha=0.25)
    ax.set_xlabel("future prediction step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_error(path, columns, title, caption):
    """The original's figure, then ours in its alignment, then ours in our alignment."""
    import matplotlib.image

    fig, axes = _pyplot().subplots(1, 3, figsize=(18, 5.2), dpi=100, width_ratios=(1.3, 1, 1))
    axes[0].imshow(matplotlib.image.imread(ORIGINAL))
    axes[0].set_title("the original's figure (2016; its units unknown, 1,200 sequences)",
                      fontsize=10)
    axes[0].axis("off")
    for ax, alignment in zip(axes[1:], ("_2016", "")):
        _curves(ax, columns, "", alignment, "squared error summed over the 32x32x3 frame")
        ax.set_title(f"this repo, {ALIGNMENTS[alignment]}", fontsize=9)
    axes[1].sharey(axes[2])
    _save(fig, path, f"Squared error vs prediction step (95% CI shaded)\n{title}", caption)


def plot_quality(path, columns, title, caption):
    fig, axes = _pyplot().subplots(1, 2, figsize=(10, 4.4), dpi=120)
    for ax, key, unit in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        _curves(ax, columns, "_" + key, "", unit + ", higher is better")
    _save(fig, path, f"Prediction quality, {ALIGNMENTS['']}\n{title}", caption)


def _save(fig, path, title, caption):
    fig.suptitle(title, fontsize=10, color="red" if "MIXED WEIGHTS" in title else "black")
    fig.text(0.99, 0.005, caption, ha="right", va="bottom", fontsize=7, color="gray")
    try:
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        _pyplot().close(fig)


def rollout_examples(models, horizon, seed):
    """`(GIF_SEQUENCES, 3, horizon, 32, 32, 3)`: truth, ConvLSTM, conv on fixed clips, ours."""
    clips = eval_clips(GIF_SEQUENCES, horizon, np.random.default_rng(seed))
    pairs = predict({n: m.rollout for n, m in models.items()}, clips, horizon)
    rows = [pairs["conv"][1], pairs["conv_lstm"][0], pairs["conv"][0]]
    return np.stack([np.asarray(r) for r in rows], axis=1)


def gif_frames(examples, mark=""):
    """`(horizon, H, W, 3)` uint8: a row per sequence, columns truth | ConvLSTM | conv, scaled
    up `GIF_SCALE` times, with column titles and a step counter drawn in; a `mark` (mixed
    weights) in red in a band of its own below."""
    from PIL import Image, ImageDraw, ImageFont

    pixels = (np.clip(examples, 0, 1) * 255 + 0.5).astype(np.uint8)  # (R, 3, T, 32, 32, 3)
    pixels = np.pad(pixels.repeat(GIF_SCALE, -3).repeat(GIF_SCALE, -2),
                    [(0, 0)] * 3 + [(GIF_GAP // 2,) * 2] * 2 + [(0, 0)], constant_values=255)
    rows, columns, steps, side = pixels.shape[:4]
    grid = pixels.transpose(2, 0, 3, 1, 4, 5).reshape(steps, rows * side, columns * side, 3)
    bands = (GIF_BAND, GIF_BAND * (2 if mark else 1))
    grid = np.pad(grid, [(0, 0), bands, (0, 0), (0, 0)], constant_values=255)
    font = mark_font = ImageFont.load_default(size=16)
    images = [Image.fromarray(frame) for frame in grid]
    while ImageDraw.Draw(images[0]).textlength(mark, mark_font) > grid.shape[2] - 2 * GIF_GAP:
        mark_font = ImageFont.load_default(size=mark_font.size - 1)  # a long mark, smaller
    for k, image in enumerate(images):
        draw = ImageDraw.Draw(image)
        for c, label in enumerate(("truth", "ConvLSTM", "conv")):
            draw.text(((c + 0.5) * side, GIF_BAND // 2), label, "black", font, anchor="mm")
        draw.text((GIF_GAP, image.height - bands[1] + GIF_BAND // 2),
                  f"step {k}: frame {CONTEXT + k} (in: ConvLSTM 0-4, conv 4)", "black", font,
                  anchor="lm")
        if mark:
            draw.text((GIF_GAP, image.height - GIF_BAND // 2), mark, "red", mark_font,
                      anchor="lm")
    return np.stack([np.asarray(image) for image in images])


def write_gif(path, frames):
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    durations = [GIF_MS] * (len(images) - 1) + [4 * GIF_MS]  # hold the last frame
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=durations, loop=0)


def write_outputs(writers):
    """Run `{path: write(tmp_path)}`; the files land only once all were written. Raises
    `checkpoint.CannotWrite` naming the file that failed."""
    folder = os.path.dirname(next(iter(writers))) or "."
    with checkpoint.writing(folder), contextlib.ExitStack() as stack:  # the renames at its end
        for path, write in writers.items():
            with checkpoint.writing(path):
                write(stack.enter_context(checkpoint.atomic_path(path)))


def print_table(columns, horizon):
    print(f"{'':4}  {'ours: frames 5.. for both':^30}  {'2016: ConvLSTM 6.., conv 1..':^30}")
    print(f"{'step':>4}" + f"  {'conv_lstm':>10}  {'conv':>10}  {'ratio':>6}" * 2)
    for k in range(horizon):
        row = f"{k:>4}"
        for alignment in ALIGNMENTS:
            a, b = columns["conv_lstm" + alignment][k], columns["conv" + alignment][k]
            row += f"  {a:10.2f}  {b:10.2f}  {b / a:6.2f}"
        print(row)


def load_models(args):
    """`(paths, models, steps)`, each keyed by model name; raises `UsageError` and
    `runtime.Unavailable`."""
    runtime.setup()
    loaded = {n: load_run(n, getattr(args, f"{n}_dir"), getattr(args, f"{n}_step"),
                          args.pretrained_dir, warn=_warn) for n in MODELS}
    return tuple({n: run[i] for n, run in loaded.items()} for i in range(3))


def _warn(message):
    print(f"create_graphs.py: {message}", file=sys.stderr)


def main(argv=None):
    """The exit code: 2 for a bad flag or folder, 1 where an output cannot be written, 130 on
    Ctrl-C and 143 on SIGTERM (nothing written then), each with one line."""
    return script_exit("create_graphs.py", lambda: run(argv), "nothing written")


def run(argv=None):
    args = parse_flags(argv)
    paths, models, steps = load_models(args)
    weights, mark = describe_weights(paths, steps, args.pretrained_dir)
    print(f"weights: {weights}")
    if mark:
        print(f"create_graphs.py: warning: the models' weights differ in source or steps: "
              f"{weights}", file=sys.stderr)
    results = evaluate(models, args.num_sequences, args.horizon, args.seed, args.batch_size)
    columns = summarise(results)
    print_table(columns, args.horizon)
    frames = gif_frames(rollout_examples(models, args.horizon, args.seed), mark)
    title = ("MIXED WEIGHTS: " if mark else "weights: ") + weights
    caption = f"{args.num_sequences} sequences, seed {args.seed}"
    record = {"num_sequences": args.num_sequences, "seed": args.seed, "horizon": args.horizon,
              "alignments": ALIGNMENTS, "weights": {
                  n: {"path": paths[n], "step": steps[n]} for n in MODELS}}
    gif = os.path.join(os.path.dirname(args.out), "rollouts.gif")
    write_outputs({
        args.out + ".csv": lambda p: write_csv(p, columns),
        args.out + ".png": lambda p: plot_error(p, columns, title, caption),
        args.out + "_psnr_ssim.png": lambda p: plot_quality(p, columns, title, caption),
        args.out + ".json": lambda p: checkpoint.write_json(p, record),
        gif: lambda p: write_gif(p, frames),
    })
    print(f"wrote {args.out}.csv, .png, _psnr_ssim.png, .json and {gif}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
