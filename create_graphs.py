"""Reconstruction error against prediction step, ConvLSTM vs conv, over random sequences.

Both models see the same clips, in two alignments of step 0 (`model/evaluation.py` says which
frames each gets and predicts): ours, where both predict frame 5 + k, and the 2016 video
graphs', where the ConvLSTM predicts frame 6 + k and the conv model frame 1 + k. The clips are
simulated bouncing balls, or with --data the clips both runs held out of training.
Writes `<out>.csv`, `<out>.png` (the 2016 alignment, beside the original's figure on the
bouncing balls, and ours), `<out>_psnr_ssim.png`, `<out>.json` and `rollouts.gif` in the folder
of `--out`: by default `results/` in this repository.
"""

import os
import sys
import textwrap
import warnings

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from model import checkpoint, cli, evaluation, files, runtime
from model.data import frame_shape
from model.evaluation import (ALIGNMENTS, LABELS, MODELS, SERIES, eval_clips, evaluate,
                              load_run, mean_and_ci95)
from systems import clip_file

ORIGINAL = os.path.join(cli.REPO, "figs", "original_2016_conv_lstm_vs_conv.png")
GIF_SEQUENCES, GIF_SIDE, GIF_GAP, GIF_BAND = 3, 160, 8, 24  # rows; px a panel, between, text
GIF_MS = 250  # per frame, as the original's 4 frames per second
DEFAULT_OUT = os.path.join(cli.REPO, "results", "conv_lstm_vs_conv")


def parse_flags(argv=None):
    """The flags, every one checked; raises `UsageError`."""
    parser = cli.Parser(description=__doc__)
    evaluation.add_flags(parser)
    add = parser.add_argument
    for name in MODELS:
        train_dir = os.path.join(cli.REPO, MODELS[name][0].train_dir)
        add(f"--{name}_dir", default=train_dir, help=f"the {LABELS[name]} model's training "
            "folder, or one checkpoint folder (default: %(default)s)")
        add(f"--{name}_step", type=int, help=f"evaluate the {LABELS[name]} checkpoint at this "
            "step (default: the newest that loads)")
    add("--pretrained_dir", default=os.path.join(cli.REPO, "checkpoints", "pretrained"),
        help="shipped weights, used where a training folder holds no checkpoint "
             "(default: %(default)s)")
    cli.add_fields(parser, MODELS["conv"][0], only=("data", "time_major"))
    add("--out", default=DEFAULT_OUT, help="output prefix, or a folder: .csv, .png, "
        "_psnr_ssim.png, .json; rollouts.gif goes into its folder (default: %(default)s; the "
        "committed figures: --out figs/conv_lstm_vs_conv)")
    args = parser.parse_args(argv)
    evaluation.check_flags(args)
    cli.check_positive({f"{n}_step": getattr(args, f"{n}_step") or 0 for n in MODELS}, 0)
    args.out = cli.out_prefix(args.out, os.path.basename(DEFAULT_OUT))
    return args


def load_models(args):
    """`(clips, paths, models, steps)`: `--data`'s clips, checked (`None`: the bouncing balls),
    then each model's checkpoint, keyed by name. Raises `UsageError`."""
    clips = None
    if args.data is not None:
        clips = clip_file.open_clips(args.data, args.time_major, seq_length=7)
    data = None if clips is None else clips.describe()  # reads and checks every value, once
    loaded = {n: load_run(n, getattr(args, f"{n}_dir"), getattr(args, f"{n}_step"),
                          args.pretrained_dir, data, warn=_warn) for n in MODELS}
    return clips, *({n: fields[i] for n, fields in loaded.items()} for i in range(3))


def describe_weights(paths, steps, pretrained_dir):
    """`(text, mark)`: which weights at which steps, and a line for the GIF where they differ."""
    shipped = {n: os.path.dirname(os.path.abspath(p)) == os.path.abspath(pretrained_dir)
               for n, p in paths.items()}
    mixed = len(set(shipped.values())) > 1 or len(set(steps.values())) > 1
    text = " vs ".join(f"{LABELS[n]} {'shipped' if shipped[n] else paths[n]} "
                       f"(step {steps[n]:,})" for n in paths)
    mark = "MIXED WEIGHTS: " + ", ".join(f"{LABELS[n]} step {steps[n]:,}"
                                         f"{' (shipped)' if shipped[n] else ''}" for n in paths)
    return text, mark if mixed else ""


def summarise(results):
    """CSV columns: the four mean errors, their 95% half-widths, then PSNR and SSIM in ours."""
    errors = {s: mean_and_ci95(results[s]["sse"]) for s in SERIES}
    columns = {s: errors[s][0] for s in SERIES} | {f"{s}_ci95": errors[s][1] for s in SERIES}
    for key in ("psnr", "ssim"):
        for name in MODELS:
            column = f"{name}_{key}"
            columns[column], columns[column + "_ci95"] = mean_and_ci95(results[name][key])
    return columns


def print_table(columns, horizon):
    print(f"{'':4}  {'ours: frames 5.. for both':^30}  {'2016: ConvLSTM 6.., conv 1..':^30}")
    print(f"{'step':>4}" + f"  {'conv_lstm':>10}  {'conv':>10}  {'ratio':>6}" * 2)
    for k in range(horizon):
        pairs = [(columns["conv_lstm" + a][k], columns["conv" + a][k]) for a in ALIGNMENTS]
        print(f"{k:>4}" + "".join(f"  {a:10.2f}  {b:10.2f}  {b / a:6.2f}" for a, b in pairs))


def write_csv(path, columns):
    table = np.column_stack([np.arange(len(columns["conv"])), *columns.values()])
    np.savetxt(path, table, fmt=["%d"] + ["%.6g"] * len(columns), delimiter=",",
               header=",".join(["step", *columns]), comments="")


def _curves(ax, columns, suffix, ylabel):
    steps = np.arange(len(columns["conv"]))
    for name, colour in (("conv_lstm", "tab:blue"), ("conv", "tab:green")):  # the original's
        mean, half = columns[name + suffix], columns[name + suffix + "_ci95"]
        ax.plot(steps, mean, color=colour, label=LABELS[name])
        ax.fill_between(steps, mean - half, mean + half, color=colour, alpha=0.25)
    ax.set(xlabel="future prediction step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend()


def plot_error(path, columns, title, caption, frame, balls=True):
    """The 2016 alignment, then ours; on the bouncing balls after the original's figure."""
    from matplotlib.figure import Figure  # not pyplot's: never a window, nothing to close
    from matplotlib.image import imread

    fig = Figure(figsize=(12 + 6 * balls, 5.2), dpi=100)
    axes = fig.subplots(1, 2 + balls, width_ratios=(1.3, 1, 1)[1 - balls:])
    if balls:
        axes[0].imshow(imread(ORIGINAL))
        axes[0].set_title("the original's figure (2016; its units unknown, 1,200 sequences)",
                          fontsize=10)
        axes[0].axis("off")
    for ax, alignment in zip(axes[balls:], ("_2016", "")):
        _curves(ax, columns, alignment, "squared error summed over the %dx%dx%d frame" % frame)
        ax.set_title(f"this repo, {ALIGNMENTS[alignment]}", fontsize=9)
    axes[-2].sharey(axes[-1])
    _save(fig, path, f"Squared error vs prediction step (95% CI shaded)\n{title}", caption)


def plot_quality(path, columns, title, caption):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.4), dpi=120)
    for ax, key, unit in zip(fig.subplots(1, 2), ("psnr", "ssim"), ("PSNR (dB)", "SSIM")):
        _curves(ax, columns, "_" + key, unit + ", higher is better")
    _save(fig, path, f"Prediction quality, {ALIGNMENTS['']}\n{title}", caption)


def _save(fig, path, title, caption):
    width = int(fig.get_figwidth() * 10)  # characters a line at 10 pt, with room to spare
    title = "\n".join(textwrap.fill(line, width) for line in title.splitlines())
    fig.suptitle(title, fontsize=10, color="red" if "MIXED WEIGHTS" in title else "black")
    fig.text(0.99, 0.005, caption, ha="right", va="bottom", fontsize=7, color="gray")
    with warnings.catch_warnings():  # a path's characters the font lacks show as boxes
        warnings.filterwarnings("ignore", "Glyph .* missing")
        fig.tight_layout()
        fig.savefig(path, format="png")


def rollout_examples(models, horizon, seed, clips=None, count=GIF_SEQUENCES):
    """`(count, 3, horizon, H, W, C)`: truth, ConvLSTM, conv on fixed clips, ours (a user's
    clips: the last `count`, held out)."""
    context = models["conv_lstm"].context
    clips = eval_clips(count, context + 1 + horizon, np.random.default_rng(seed), clips,
                       0 if clips is None else len(clips) - count)
    lstm = models["conv_lstm"].rollout(clips[:, :context], horizon)
    conv = models["conv"].rollout(clips[:, context - 1 : context], horizon)
    return np.stack([clips[:, context : context + horizon], lstm, conv], axis=1)


def gif_frames(examples, context, mark=""):
    """`(horizon, H', W', 3)` uint8: a row per sequence, columns truth | ConvLSTM | conv, frames
    scaled up to about `GIF_SIDE` px, titled, a step counter and any `mark` in red below them."""
    scale = max(1, GIF_SIDE // examples.shape[-3])
    pixels = (np.clip(examples, 0, 1) * 255 + 0.5).astype(np.uint8)  # (R, 3, T, H, W, C)
    pixels = np.repeat(pixels, 3 // pixels.shape[-1], axis=-1)  # gray as RGB
    pixels = np.pad(pixels.repeat(scale, -3).repeat(scale, -2),
                    [(0, 0)] * 3 + [(GIF_GAP // 2,) * 2] * 2 + [(0, 0)], constant_values=255)
    rows, columns, steps, height, side = pixels.shape[:5]
    grid = pixels.transpose(2, 0, 3, 1, 4, 5).reshape(steps, rows * height, columns * side, 3)
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
                  f"step {k}: frame {context + k} (in: ConvLSTM 0-{context - 1}, "
                  f"conv {context - 1})", "black", font, anchor="lm")
        draw.text((GIF_GAP, image.height - GIF_BAND // 2), mark, "red", mark_font, anchor="lm")
    return np.stack([np.asarray(image) for image in images])


def write_gif(path, frames):
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=[GIF_MS] * (len(images) - 1) + [4 * GIF_MS])  # the last held


def _warn(message):
    print(f"create_graphs.py: {message}", file=sys.stderr)


def main(argv=None):
    """The exit code (`model/cli.py`); nothing is written unless all of it is."""
    return cli.run_script("create_graphs.py", lambda: run(argv), "nothing written")


def run(argv=None):
    args = parse_flags(argv)
    runtime.setup()
    clips, paths, models, steps = load_models(args)
    context = models["conv_lstm"].context
    weights, mark = describe_weights(paths, steps, args.pretrained_dir)
    print(f"weights: {weights}")
    if mark:
        _warn(f"warning: the models' weights differ in source or steps: {weights}")
    num_sequences, horizon = args.num_sequences, args.horizon
    if clips is not None:  # only the last clips, held out by both runs, and the frames they have
        held = min(clip_file.held_out(len(clips), checkpoint.read_state(p)["config"]["holdout"])
                   for p in paths.values())
        if held < 2:
            raise cli.UsageError(f"{args.data} has {held} held-out clip; the intervals need "
                                 "at least 2 (train with a larger --holdout)")
        num_sequences = min(num_sequences, held)
        horizon = min(horizon, clips.shape[1] - context - 1)
    results = evaluate(models, num_sequences, horizon, args.seed, args.batch_size, clips=clips)
    columns = summarise(results)
    print_table(columns, horizon)
    frames = gif_frames(rollout_examples(models, horizon, args.seed, clips,
                                       min(GIF_SEQUENCES, num_sequences)), context, mark)
    title = ("MIXED WEIGHTS: " if mark else "weights: ") + weights
    source = "bouncing balls" if clips is None else f"held-out clips of {args.data}"
    caption = f"{num_sequences} sequences, seed {args.seed}, {source}"
    frame = frame_shape(clips)
    record = {"num_sequences": num_sequences, "seed": args.seed, "horizon": horizon,
              "data": None if clips is None else clips.describe(), "alignments": ALIGNMENTS,
              "weights": {n: {"path": paths[n], "step": steps[n]} for n in MODELS}}
    gif = os.path.join(os.path.dirname(args.out), "rollouts.gif")
    files.write_all({
        args.out + ".csv": lambda p: write_csv(p, columns),
        args.out + ".png": lambda p: plot_error(p, columns, title, caption, frame,
                                                    clips is None),
        args.out + "_psnr_ssim.png": lambda p: plot_quality(p, columns, title, caption),
        args.out + ".json": lambda p: files.write_json(p, record),
        gif: lambda p: write_gif(p, frames),
    })
    print(f"wrote {args.out}.csv, .png, _psnr_ssim.png, .json and {gif}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
