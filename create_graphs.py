"""Reconstruction error against prediction step, ConvLSTM vs conv, over random sequences.

Both models see the same simulated clips, in two alignments of step 0:
- ours (`conv_lstm`, `conv`): ConvLSTM gets true frames 0..4, the conv model true frame 4;
  step k compares the prediction of frame 5 + k with the truth.
- the 2016 code's (`conv_lstm_2016`, `conv_2016`), as its 50-frame video graphs kept their
  outputs: ConvLSTM gets true frames 0..4 and its prediction of frame 5 is fed back, not kept,
  so step k is its prediction of frame 6 + k; the conv model gets true frame 0 and step k is its
  prediction of frame 1 + k.
Writes `<out>.csv`, `<out>.png` (the 2016 alignment beside the original's figure, ours beside
it), `<out>_psnr_ssim.png`, `<out>.json` and `rollouts.gif` in the folder of `--out`.
"""

import argparse
import contextlib
import dataclasses
import os
import sys

import numpy as np

from model import checkpoint
from model.training import CONV, CONV_LSTM, Parser, UsageError

CONTEXT = 5  # true frames 0..4 exist for both models; the conv model uses only one of them
MODELS = {"conv_lstm": (CONV_LSTM, "main_conv_lstm.py"), "conv": (CONV, "main_conv.py")}
LABELS = {"conv_lstm": "ConvLSTM", "conv": "conv"}
ALIGNMENTS = {
    "": "our alignment: ConvLSTM in 0-4, conv in 4, step 0 = frame 5",
    "_2016": "2016 alignment: ConvLSTM in 0-4, step 0 = frame 6; conv in 0, step 0 = frame 1",
}
SERIES = ["conv_lstm", "conv", "conv_lstm_2016", "conv_2016"]
ORIGINAL = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "figs", "original_2016_conv_lstm_vs_conv.png")
GIF_SEQUENCES, GIF_SCALE, GIF_GAP, GIF_BAND = 3, 5, 8, 24  # rows; px per pixel, between, text
GIF_MS = 250  # per frame, as the original's 4 frames per second


def parse_flags(argv=None):
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_sequences", type=int, default=1200, help="sequences averaged")
    parser.add_argument("--seed", type=int, default=2016, help="seed of the evaluation sequences")
    parser.add_argument("--horizon", type=int, default=24, help="predicted frames per sequence")
    parser.add_argument("--batch_size", type=int, default=200, help="sequences per forward pass")
    parser.add_argument("--conv_lstm_dir", default=CONV_LSTM.train_dir,
                        help="training folder of the ConvLSTM run")
    parser.add_argument("--conv_dir", default=CONV.train_dir, help="training folder of conv")
    parser.add_argument("--pretrained_dir", default="checkpoints/pretrained",
                        help="shipped weights, used where a training folder holds no checkpoint")
    parser.add_argument("--out", default="figs/conv_lstm_vs_conv",
                        help="output prefix: .csv, .png, _psnr_ssim.png, .json; rollouts.gif "
                             "goes into its folder")
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


def find_weights(name, train_dir, pretrained_dir):
    """The latest checkpoint in `train_dir`, else the shipped one; raises `UsageError`."""
    found = checkpoint.list_checkpoints(train_dir)
    if found:
        return found[-1]
    shipped = os.path.join(pretrained_dir, name)
    if os.path.isfile(os.path.join(shipped, "state.json")):
        return shipped
    raise UsageError(
        f"no weights for the {name} model in {train_dir} or {shipped}; "
        f"train them with `python {MODELS[name][1]}`"
    )


def load(name, path):
    """The predictor stored at checkpoint folder `path`, and its training step."""
    from model.training import build

    try:
        state = checkpoint.read_state(path)
        config = dataclasses.replace(MODELS[name][0], **state["config"])
        model, _ = build(config)
        checkpoint.restore(path, model)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"cannot read the {name} weights in {path} ({error}); "
                         f"retrain with `python {MODELS[name][1]} --fresh`") from error
    return model, state["step"]


def describe_weights(paths, steps, pretrained_dir):
    """`(text, mixed)`: which weights at which steps, and whether their sources or steps differ."""
    shipped = {n: os.path.dirname(os.path.abspath(p)) == os.path.abspath(pretrained_dir)
               for n, p in paths.items()}
    mixed = len(set(shipped.values())) > 1 or len(set(steps.values())) > 1
    return " vs ".join(f"{LABELS[n]} {'shipped' if shipped[n] else paths[n]} "
                       f"(step {steps[n]:,})" for n in paths), mixed


def ssim(a, b, window=7):
    """Mean SSIM of `(..., H, W, C)` images in [0, 1]: Gaussian-free 7x7 windows, sample
    covariance, per channel, averaged (scikit-image's defaults)."""
    from keras import ops

    c1, c2 = 0.01**2, 0.03**2
    shape = a.shape
    a, b = (ops.reshape(ops.convert_to_tensor(x), (-1, *shape[-3:])) for x in (a, b))
    maps = ops.concatenate([a, b, a * a, b * b, a * b], axis=-1)  # one pooling for all five
    means = ops.average_pool(maps, pool_size=window, strides=1, padding="valid")
    ma, mb, maa, mbb, mab = ops.split(means, 5, axis=-1)
    n = window * window / (window * window - 1)  # sample (ddof=1) statistics
    va, vb, cov = (maa - ma * ma) * n, (mbb - mb * mb) * n, (mab - ma * mb) * n
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return np.asarray(ops.mean(s, axis=(-3, -2, -1))).reshape(shape[:-3])


def metrics(prediction, truth):
    """Per sequence and step: summed squared error, PSNR (dB), SSIM; each `(B, N)`."""
    sse = np.sum((prediction - truth) ** 2, axis=(-3, -2, -1))
    shown = np.clip(prediction, 0.0, 1.0)
    mse = np.mean((shown - truth) ** 2, axis=(-3, -2, -1))
    psnr = 10 * np.log10(1.0 / np.maximum(mse, 1e-10))
    return sse, psnr, ssim(shown, truth)


def eval_clips(count, horizon, rng):
    """`(count, CONTEXT + 1 + horizon, 32, 32, 3)`: enough frames for both alignments."""
    from systems.bouncing_balls import generate

    return generate(count, CONTEXT + 1 + horizon, rng=rng)


def predict(rollouts, clips, horizon):
    """`{series: (prediction, truth)}`, each `(B, horizon, 32, 32, 3)`, for `SERIES`."""
    lstm = np.asarray(rollouts["conv_lstm"](clips[:, :CONTEXT], horizon + 1))  # frames 5..
    starts = np.concatenate([clips[:, CONTEXT - 1 : CONTEXT], clips[:, :1]])  # one call for both
    conv, conv_2016 = np.split(np.asarray(rollouts["conv"](starts, horizon)), 2)
    ours = clips[:, CONTEXT : CONTEXT + horizon]
    return {"conv_lstm": (lstm[:, :horizon], ours), "conv": (conv, ours),
            "conv_lstm_2016": (lstm[:, 1:], clips[:, CONTEXT + 1 :]),
            "conv_2016": (conv_2016, clips[:, 1 : 1 + horizon])}


def evaluate(models, num_sequences, horizon, seed, batch_size):
    """`{series: {"sse"|"psnr"|"ssim": (num_sequences, horizon)}}` for `SERIES`, all from one
    set of clips."""
    from tqdm import tqdm

    from model.train_step import compiled_rollout

    rollouts = {name: compiled_rollout(model) for name, model in models.items()}
    rng = np.random.default_rng(seed)
    results = {series: {"sse": [], "psnr": [], "ssim": []} for series in SERIES}
    with tqdm(total=num_sequences, unit="seq", desc="evaluating", leave=False,
              disable=None) as bar:  # no bar where stderr is not a terminal
        for start in range(0, num_sequences, batch_size):
            count = min(batch_size, num_sequences - start)
            pairs = predict(rollouts, eval_clips(count, horizon, rng), horizon)
            for series, (prediction, truth) in pairs.items():
                for key, value in zip(("sse", "psnr", "ssim"), metrics(prediction, truth)):
                    results[series][key].append(value)
            bar.update(count)
    return {s: {k: np.concatenate(v) for k, v in r.items()} for s, r in results.items()}


def summarise(results):
    """CSV columns: the four mean errors, their 95% confidence half-widths, then PSNR, SSIM."""
    columns = {}
    for key in ("sse", "psnr", "ssim"):
        for series in SERIES:
            values = results[series][key]
            name = series if key == "sse" else f"{series}_{key}"
            columns[name] = values.mean(axis=0)
            columns[f"{name}_ci95"] = 1.96 * values.std(axis=0, ddof=1) / np.sqrt(len(values))
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


def gif_frames(examples):
    """`(horizon, H, W, 3)` uint8: a row per sequence, columns truth | ConvLSTM | conv, scaled
    up `GIF_SCALE` times, with column titles and a step counter drawn in."""
    from PIL import Image, ImageDraw, ImageFont

    pixels = (np.clip(examples, 0, 1) * 255 + 0.5).astype(np.uint8)  # (R, 3, T, 32, 32, 3)
    pixels = np.pad(pixels.repeat(GIF_SCALE, -3).repeat(GIF_SCALE, -2),
                    [(0, 0)] * 3 + [(GIF_GAP // 2,) * 2] * 2 + [(0, 0)], constant_values=255)
    rows, columns, steps, side = pixels.shape[:4]
    grid = pixels.transpose(2, 0, 3, 1, 4, 5).reshape(steps, rows * side, columns * side, 3)
    grid = np.pad(grid, [(0, 0), (GIF_BAND, GIF_BAND), (0, 0), (0, 0)], constant_values=255)
    font = ImageFont.load_default(size=16)
    images = [Image.fromarray(frame) for frame in grid]
    for k, image in enumerate(images):
        draw = ImageDraw.Draw(image)
        for c, label in enumerate(("truth", "ConvLSTM", "conv")):
            draw.text(((c + 0.5) * side, GIF_BAND // 2), label, "black", font, anchor="mm")
        draw.text((GIF_GAP, image.height - GIF_BAND // 2),
                  f"step {k}: frame {CONTEXT + k} (in: ConvLSTM 0-4, conv 4)", "black", font,
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
    """`(paths, models, steps)`, each keyed by model name; raises `UsageError`."""
    dirs = {"conv_lstm": args.conv_lstm_dir, "conv": args.conv_dir}
    paths = {n: find_weights(n, dirs[n], args.pretrained_dir) for n in MODELS}
    from model import runtime

    runtime.setup()
    loaded = {n: load(n, p) for n, p in paths.items()}
    return paths, {n: m for n, (m, _) in loaded.items()}, {n: s for n, (_, s) in loaded.items()}


def main(argv=None):
    try:
        args = parse_flags(argv)
        paths, models, steps = load_models(args)
    except UsageError as error:
        print(f"create_graphs.py: error: {error}", file=sys.stderr)
        return 2
    weights, mixed = describe_weights(paths, steps, args.pretrained_dir)
    print(f"weights: {weights}")
    if mixed:
        print(f"create_graphs.py: warning: the models' weights differ in source or steps: "
              f"{weights}", file=sys.stderr)
    results = evaluate(models, args.num_sequences, args.horizon, args.seed, args.batch_size)
    columns = summarise(results)
    print_table(columns, args.horizon)
    frames = gif_frames(rollout_examples(models, args.horizon, args.seed))
    title = ("MIXED WEIGHTS: " if mixed else "weights: ") + weights
    caption = f"{args.num_sequences} sequences, seed {args.seed}"
    record = {"num_sequences": args.num_sequences, "seed": args.seed, "horizon": args.horizon,
              "alignments": ALIGNMENTS, "weights": {
                  n: {"path": paths[n], "step": steps[n]} for n in MODELS}}
    gif = os.path.join(os.path.dirname(args.out), "rollouts.gif")
    try:
        write_outputs({
            args.out + ".csv": lambda p: write_csv(p, columns),
            args.out + ".png": lambda p: plot_error(p, columns, title, caption),
            args.out + "_psnr_ssim.png": lambda p: plot_quality(p, columns, title, caption),
            args.out + ".json": lambda p: checkpoint.write_json(p, record),
            gif: lambda p: write_gif(p, frames),
        })
    except checkpoint.CannotWrite as error:
        print(f"create_graphs.py: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}.csv, .png, _psnr_ssim.png, .json and {gif}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
