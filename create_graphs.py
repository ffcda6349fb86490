"""Reconstruction error against prediction step, ConvLSTM vs conv, over held-out sequences,
beside two baselines: copying the last input frame, and the training clips' mean frame.

Both models see the same clips (`model/evaluation.py` says which frames each gets and
predicts): simulated bouncing balls, or with --data the clips both runs held out of training,
every frame after the ConvLSTM's context. On the bouncing balls a second alignment repeats
the 2016 code's video graphs. Writes `<out>.csv`, `<out>.png` (the 2016 alignment, beside the
original's figure on the bouncing balls, and ours), `<out>_psnr_ssim.png`, `<out>.json` and `rollouts.gif` in the folder
of `--out`: by default `results/` in this repository.
"""

import os
import sys
import textwrap
import warnings

from model import runtime

runtime.start()  # first: Keras and its backend, quietly

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402  (not pyplot's: never a window)
from matplotlib.image import imread  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from model import cli, evaluation, files, runs, video  # noqa: E402
from model.config import MODELS, TrainConfig  # noqa: E402
from model.data import open_source  # noqa: E402
from model.evaluation import BASELINES, alignments, evaluate, mean_and_ci95, series  # noqa: E402
from systems.bouncing_balls import Balls  # noqa: E402

GIF_SEQUENCES, GIF_SIDE, GIF_GAP, GIF_BAND = 3, 160, 8, 24  # rows; px a panel, between, text
GIF_MS = 250  # per frame, as the original's 4 frames per second
DEFAULT_OUT = os.path.join(cli.REPO, "results", "conv_lstm_vs_conv")


def parse_flags(argv=None):
    """The flags, every one checked; raises `UsageError`."""
    parser = cli.Parser(description=__doc__)
    evaluation.add_flags(parser)
    add = parser.add_argument
    for name, kind in MODELS.items():
        train_dir = os.path.join(cli.REPO, kind.defaults.train_dir)
        add(f"--{name}_dir", default=train_dir, help=f"the {kind.label} model's training "
            "folder, or one checkpoint folder (default: %(default)s)")
        add(f"--{name}_step", type=int, help=f"evaluate the {kind.label} checkpoint at this "
            "step (default: the newest that loads)")
    add("--pretrained_dir", default=os.path.join(cli.REPO, "checkpoints", "pretrained"),
        help="shipped weights, used where a training folder holds no checkpoint "
             "(default: %(default)s)")
    cli.add_fields(parser, TrainConfig(), only=("data", "time_major"))
    add("--out", default=DEFAULT_OUT, help="output prefix, or a folder: .csv, .png, "
        "_psnr_ssim.png, .json; rollouts.gif goes into its folder (default: %(default)s; the "
        "committed figures: --out figs/conv_lstm_vs_conv)")
    args = parser.parse_args(argv)
    evaluation.check_flags(args)
    cli.check_positive({f"{n}_step": getattr(args, f"{n}_step") or 0 for n in MODELS}, 0)
    if args.time_major and args.data is None:
        raise cli.UsageError("--time_major applies to --data only: name your clips file with "
                             "--data")
    args.out = cli.out_prefix(args.out, os.path.basename(DEFAULT_OUT))
    return args


def load_models(args):
    """`(source, loaded)`: the clips to evaluate on (`--data`'s, its layout the runs' recorded
    one, or the bouncing balls) and each model's checkpoint (`runs.Loaded`), keyed by name,
    checked to share the data and the context. Raises `UsageError`."""
    pretrained = None if args.data else args.pretrained_dir
    loaded = {n: runs.load_run(n, getattr(args, f"{n}_dir"), getattr(args, f"{n}_step"),
                               pretrained, warn=_warn) for n in MODELS}
    lstm = loaded["conv_lstm"].config
    if args.data is None:
        source = Balls(lstm.num_balls, lstm.friction)
    else:
        config = TrainConfig(data=args.data, time_major=args.time_major, seq_length=1,
                             holdout=min(run.config.holdout for run in loaded.values()))
        source = open_source(config, loaded["conv_lstm"].data.get("layout"), print)
    for run in loaded.values():
        runs.check_data(run, None if args.data is None else source.describe())
    if loaded["conv"].config.seq_start > lstm.seq_start:
        raise cli.UsageError(f"the conv run reads {loaded['conv'].config.seq_start} true frames, "
                             f"more than the ConvLSTM run's {lstm.seq_start}: graph two runs "
                             "whose conv model reads at most the ConvLSTM's context")
    return source, loaded


def describe_weights(loaded, pretrained_dir):
    """`(text, mark)`: which weights at which steps, and a line for the GIF where they differ."""
    shipped = {n: os.path.dirname(os.path.abspath(run.path)) == os.path.abspath(pretrained_dir)
               for n, run in loaded.items()}
    mixed = len(set(shipped.values())) > 1 or len({run.step for run in loaded.values()}) > 1
    label = {n: MODELS[n].label for n in loaded}
    text = " vs ".join(f"{label[n]} {'shipped' if shipped[n] else run.path} (step {run.step:,})"
                       for n, run in loaded.items())
    mark = "MIXED WEIGHTS: " + ", ".join(f"{label[n]} step {run.step:,}"
                                         f"{' (shipped)' if shipped[n] else ''}"
                                         for n, run in loaded.items())
    return text, mark if mixed else ""


def summarise(results):
    """CSV columns: each series' mean error, their 95% half-widths, then the models' PSNR and
    SSIM in our alignment."""
    errors = {s: mean_and_ci95(values["sse"]) for s, values in results.items()}
    columns = {s: errors[s][0] for s in results} | {f"{s}_ci95": errors[s][1] for s in results}
    for key in ("psnr", "ssim"):
        for name in MODELS:
            column = f"{name}_{key}"
            columns[column], columns[column + "_ci95"] = mean_and_ci95(results[name][key])
    return columns


def print_table(columns, context, original):
    """Each alignment's errors and conv / ConvLSTM ratio, then the baselines', per step."""
    names = {"": f"ours: frames {context}.. for both",
             "_2016": f"2016: ConvLSTM {context + 1}.., conv 1.."}
    shown = [a for a in ("", "_2016") if a in alignments(context, original)]
    print(f"{'':4}" + "".join(f"  {names[a]:^30}" for a in shown) + "  baselines (ours)")
    print(f"{'step':>4}" + f"  {'conv_lstm':>10}  {'conv':>10}  {'ratio':>6}" * len(shown)
          + "".join(f"  {b:>10}" for b in BASELINES))
    for k in range(len(columns["conv"])):
        pairs = [(columns["conv_lstm" + a][k], columns["conv" + a][k]) for a in shown]
        print(f"{k:>4}" + "".join(f"  {a:10.2f}  {b:10.2f}  {b / a:6.2f}" for a, b in pairs)
              + "".join(f"  {columns[b][k]:10.2f}" for b in BASELINES))


def write_csv(path, columns):
    table = np.column_stack([np.arange(len(columns["conv"])), *columns.values()])
    np.savetxt(path, table, fmt=["%d"] + ["%.6g"] * len(columns), delimiter=",",
               header=",".join(["step", *columns]), comments="")


def _curves(ax, columns, suffix, ylabel, baselines=False):
    steps = np.arange(len(columns["conv"]))
    for name, colour in (("conv_lstm", "tab:blue"), ("conv", "tab:green")):  # the original's
        mean, half = columns[name + suffix], columns[name + suffix + "_ci95"]
        ax.plot(steps, mean, color=colour, label=MODELS[name].label)
        ax.fill_between(steps, mean - half, mean + half, color=colour, alpha=0.25)
    for (name, label), style in zip(BASELINES.items() if baselines else (), ("--", ":")):
        ax.plot(steps, columns[name], color="grey", lw=0.8, ls=style, label=label)
    ax.set(xlabel="future prediction step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_error(path, columns, title, caption, frame, context, original=True):
    """Each alignment, ours with the baselines; on the bouncing balls after the original's
    figure."""
    shown = alignments(context, original)
    panels = len(shown) + original
    fig = Figure(figsize=(max(7, 6 * panels), 5.2), dpi=100)
    axes = np.atleast_1d(fig.subplots(1, panels, width_ratios=(1.3, 1, 1)[-panels:]))
    if original:
        axes[0].imshow(imread(evaluation.ORIGINAL_FIGURE))
        axes[0].set_title("the original's figure (2016; its units unknown, 1,200 sequences)",
                          fontsize=10)
        axes[0].axis("off")
    for ax, (suffix, text) in zip(axes[original:], shown.items()):
        _curves(ax, columns, suffix, "squared error summed over the %dx%dx%d frame" % frame,
                baselines=suffix == "")
        ax.set_title(f"this repo, {text}", fontsize=9)
    if len(shown) > 1:
        axes[-2].sharey(axes[-1])
    _save(fig, path, f"Squared error vs prediction step (95% CI shaded)\n{title}", caption)


def plot_quality(path, columns, title, caption, context):
    fig = Figure(figsize=(10, 4.4), dpi=120)
    for ax, key, unit in zip(fig.subplots(1, 2), ("psnr", "ssim"), ("PSNR (dB)", "SSIM")):
        _curves(ax, columns, "_" + key, unit + ", higher is better")
    _save(fig, path, f"Prediction quality, {alignments(context, False)['']}\n{title}", caption)


def _save(fig, path, title, caption):
    width = int(fig.get_figwidth() * 10)  # characters a line at 10 pt, with room to spare
    title = "\n".join(textwrap.fill(line, width) for line in title.splitlines())
    fig.suptitle(title, fontsize=10, color="red" if "MIXED WEIGHTS" in title else "black")
    fig.text(0.99, 0.005, caption, ha="right", va="bottom", fontsize=7, color="gray")
    with warnings.catch_warnings():  # a path's characters the font lacks show as boxes
        warnings.filterwarnings("ignore", "Glyph .* missing")
        fig.tight_layout()
        fig.savefig(path, format="png")


def rollout_examples(models, source, horizon, seed, count=GIF_SEQUENCES):
    """`(count, 3, horizon, H, W, C)`: truth, ConvLSTM, conv on the first held-out clips, in
    our alignment."""
    context = models["conv_lstm"].context
    clips = next(source.held_out(count, context + horizon + source.original, seed))
    lstm = models["conv_lstm"].rollout(clips[:, :context], horizon)
    conv = models["conv"].rollout(clips[:, context - 1 : context], horizon)
    return np.stack([clips[:, context : context + horizon], lstm, conv], axis=1)


def gif_frames(examples, context, mark=""):
    """`(horizon, H', W', 3)` uint8: a row per sequence, columns truth | ConvLSTM | conv, frames
    scaled up to about `GIF_SIDE` px, titled, a step counter and any `mark` in red below them."""
    pixels = video.to_pixels(examples, max(1, GIF_SIDE // examples.shape[-3]))
    pixels = np.pad(pixels, [(0, 0)] * 3 + [(GIF_GAP // 2,) * 2] * 2 + [(0, 0)],
                    constant_values=255)  # (R, 3, T, H', W', 3)
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
    """The exit code (`cli.EXIT_CODES`); nothing is written unless all of it is."""
    return cli.run_script("create_graphs.py", lambda: run(argv), "nothing written")


def run(argv=None):
    args = parse_flags(argv)
    source, loaded = load_models(args)
    models = {n: run.model for n, run in loaded.items()}
    context, original = models["conv_lstm"].context, source.original
    weights, mark = describe_weights(loaded, args.pretrained_dir)
    print(f"weights: {weights}")
    if mark:
        _warn(f"warning: the models' weights differ in source or steps: {weights}")
    num_sequences, horizon = args.num_sequences, args.horizon
    if source.frames is not None:  # the clips both runs held out, every frame after the context
        num_sequences = min(num_sequences, source.held_out_count)
        horizon = min(horizon, source.frames - context)
    results = evaluate(models, source, num_sequences, horizon, args.seed, args.batch_size)
    columns = summarise(results)
    print_table(columns, context, original)
    frames = gif_frames(rollout_examples(models, source, horizon, args.seed,
                                         min(GIF_SEQUENCES, num_sequences)), context, mark)
    title = ("MIXED WEIGHTS: " if mark else "weights: ") + weights
    caption = f"{num_sequences} sequences, " + (f"seed {args.seed}, bouncing balls" if original
                                                else f"held-out clips of {args.data}")
    record = {"num_sequences": num_sequences, "seed": args.seed, "horizon": horizon,
              "context": context, "data": source.describe(),
              "alignments": alignments(context, original), "baselines": BASELINES,
              "series": series(original),
              "weights": {n: {"path": run.path, "step": run.step} for n, run in loaded.items()}}
    gif = os.path.join(os.path.dirname(args.out), "rollouts.gif")
    files.write_all({
        args.out + ".csv": lambda p: write_csv(p, columns),
        args.out + ".png": lambda p: plot_error(p, columns, title, caption, source.frame_shape,
                                                context, original),
        args.out + "_psnr_ssim.png": lambda p: plot_quality(p, columns, title, caption, context),
        args.out + ".json": lambda p: files.write_json(p, record),
        gif: lambda p: write_gif(p, frames),
    })
    print(f"wrote {args.out}.csv, .png, _psnr_ssim.png, .json and {gif}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
