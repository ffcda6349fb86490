"""Reconstruction error against prediction step, ConvLSTM vs conv, over random sequences.

Both models see the same simulated sequences. ConvLSTM gets true frames 0..4, the conv model
true frame 4; both then feed themselves and predict frames 5 .. 5 + horizon - 1. Step k
compares the prediction of frame 5 + k with the truth.
"""

import argparse
import dataclasses
import os
import sys

import numpy as np

from model import checkpoint
from model.training import CONV, CONV_LSTM, Parser, UsageError

CONTEXT = 5  # true frames 0..4 exist for both models; the conv model uses only the last
MODELS = {"conv_lstm": (CONV_LSTM, "main_conv_lstm.py"), "conv": (CONV, "main_conv.py")}
LABELS = {"conv_lstm": "ConvLSTM (5 frames in)", "conv": "conv (1 frame in)"}


def parse_flags(argv=None):
    parser = Parser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--num_sequences", type=int, default=1200, help="sequences to average over")
    parser.add_argument("--seed", type=int, default=2016, help="seed of the evaluation sequences")
    parser.add_argument("--horizon", type=int, default=24, help="predicted frames per sequence")
    parser.add_argument("--batch_size", type=int, default=200, help="sequences per forward pass")
    parser.add_argument("--conv_lstm_dir", default=CONV_LSTM.train_dir,
                        help="training folder of the ConvLSTM run")
    parser.add_argument("--conv_dir", default=CONV.train_dir, help="training folder of the conv run")
    parser.add_argument("--pretrained_dir", default="checkpoints/pretrained",
                        help="shipped weights, used where a training folder holds no checkpoint")
    parser.add_argument("--out", default="figs/conv_lstm_vs_conv",
                        help="output prefix: .csv, .png, _psnr_ssim.png, .json")
    args = parser.parse_args(argv)
    for name in ("num_sequences", "horizon", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be a positive integer, got {getattr(args, name)}")
    return args


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


def ssim(a, b, window=7):
    """Mean SSIM of `(..., H, W, C)` images in [0, 1]: Gaussian-free 7x7 windows, sample
    covariance, per channel, averaged (scikit-image's defaults)."""
    c1, c2 = 0.01**2, 0.03**2
    n = window * window
    mean = lambda x: _box_mean(x, window)  # noqa: E731
    ma, mb = mean(a), mean(b)
    va = (mean(a * a) - ma * ma) * n / (n - 1)
    vb = (mean(b * b) - mb * mb) * n / (n - 1)
    cov = (mean(a * b) - ma * mb) * n / (n - 1)
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return s.mean(axis=(-3, -2, -1))


def _box_mean(x, k):
    """Means over all k x k windows lying inside the image, `(..., H-k+1, W-k+1, C)`."""
    from keras import ops

    flat = ops.reshape(ops.convert_to_tensor(x), (-1, *x.shape[-3:]))
    means = ops.average_pool(flat, pool_size=k, strides=1, padding="valid")
    return np.asarray(means).reshape(*x.shape[:-3], *means.shape[1:])


def metrics(prediction, truth):
    """Per sequence and step: summed squared error, PSNR (dB), SSIM; each `(B, N)`."""
    sse = np.sum((prediction - truth) ** 2, axis=(-3, -2, -1))
    shown = np.clip(prediction, 0.0, 1.0)
    mse = np.mean((shown - truth) ** 2, axis=(-3, -2, -1))
    psnr = 10 * np.log10(1.0 / np.maximum(mse, 1e-10))
    return sse, psnr, ssim(shown, truth)


def evaluate(models, num_sequences, horizon, seed, batch_size):
    """`{name: {"sse"|"psnr"|"ssim": (num_sequences, horizon)}}` on one shared set of clips."""
    from tqdm import tqdm

    from systems.bouncing_balls import generate

    from model.train_step import compiled_rollout

    rollouts = {name: compiled_rollout(model) for name, model in models.items()}
    rng = np.random.default_rng(seed)
    results = {name: {"sse": [], "psnr": [], "ssim": []} for name in models}
    with tqdm(total=num_sequences, unit="seq", desc="evaluating", leave=False) as bar:
        for start in range(0, num_sequences, batch_size):
            count = min(batch_size, num_sequences - start)
            clips = generate(count, CONTEXT + horizon, rng=rng)
            truth = clips[:, CONTEXT:]
            for name in models:
                context = clips[:, :CONTEXT] if name == "conv_lstm" else clips[:, CONTEXT - 1 : CONTEXT]
                prediction = np.asarray(rollouts[name](context, horizon))
                for key, value in zip(("sse", "psnr", "ssim"), metrics(prediction, truth)):
                    results[name][key].append(value)
            bar.update(count)
    return {n: {k: np.concatenate(v) for k, v in r.items()} for n, r in results.items()}


def summarise(results):
    """Columns for the CSV: means and 95% confidence half-widths per step."""
    columns = {}
    for key in ("sse", "psnr", "ssim"):
        for name in ("conv_lstm", "conv"):
            values = results[name][key]
            suffix = "" if key == "sse" else f"_{key}"
            columns[f"{name}{suffix}"] = values.mean(axis=0)
            columns[f"{name}{suffix}_ci95"] = 1.96 * values.std(axis=0, ddof=1) / np.sqrt(len(values))
    order = ["conv_lstm", "conv", "conv_lstm_ci95", "conv_ci95"]
    order += [c for c in columns if c not in order]
    return {c: columns[c] for c in order}


def write_csv(path, columns):
    steps = len(next(iter(columns.values())))
    lines = [",".join(["step", *columns])]
    for k in range(steps):
        lines.append(",".join([str(k), *(f"{columns[c][k]:.6g}" for c in columns)]))
    with checkpoint.atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot_error(path, columns, caption):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(len(columns["conv"]))
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, colour in (("conv_lstm", "tab:blue"), ("conv", "tab:orange")):
        mean, half = columns[name], columns[f"{name}_ci95"]
        ax.plot(steps, mean, color=colour, label=LABELS[name])
        ax.fill_between(steps, mean - half, mean + half, color=colour, alpha=0.25)
    ax.set_xlabel("future prediction step")
    ax.set_ylabel("squared error summed over the 32x32x3 frame")
    ax.set_title("Reconstruction error vs prediction step (95% CI shaded)")
    ax.text(0.99, 0.02, caption, transform=ax.transAxes, ha="right", fontsize=7, color="gray")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 0.06))
    _save(fig, path)


def plot_quality(path, columns, caption):
    import matplotlib.pyplot as plt

    steps = np.arange(len(columns["conv"]))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for ax, key, unit in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        for name, colour in (("conv_lstm", "tab:blue"), ("conv", "tab:orange")):
            mean, half = columns[f"{name}_{key}"], columns[f"{name}_{key}_ci95"]
            ax.plot(steps, mean, color=colour, label=LABELS[name])
            ax.fill_between(steps, mean - half, mean + half, color=colour, alpha=0.25)
        ax.set_xlabel("future prediction step")
        ax.set_ylabel(unit + ", higher is better")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Prediction quality vs step; " + caption, fontsize=9)
    _save(fig, path)


def _save(fig, path):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with checkpoint.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main(argv=None):
    try:
        args = parse_flags(argv)
        dirs = {"conv_lstm": args.conv_lstm_dir, "conv": args.conv_dir}
        paths = {n: find_weights(n, dirs[n], args.pretrained_dir) for n in MODELS}
        from model import runtime

        runtime.setup()
        loaded = {n: load(n, p) for n, p in paths.items()}
    except UsageError as error:
        print(f"create_graphs.py: error: {error}", file=sys.stderr)
        return 2
    for name, (_, step) in loaded.items():
        print(f"{name}: {paths[name]} (step {step})")
    models = {n: m for n, (m, _) in loaded.items()}
    results = evaluate(models, args.num_sequences, args.horizon, args.seed, args.batch_size)
    columns = summarise(results)
    caption = (f"{args.num_sequences} sequences, seed {args.seed}; steps trained: "
               + ", ".join(f"{n} {s:,}" for n, (_, s) in loaded.items()))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    write_csv(args.out + ".csv", columns)
    plot_error(args.out + ".png", columns, caption)
    plot_quality(args.out + "_psnr_ssim.png", columns, caption)
    checkpoint.write_json(args.out + ".json", {
        "num_sequences": args.num_sequences, "seed": args.seed, "horizon": args.horizon,
        "weights": {n: {"path": paths[n], "step": s} for n, (_, s) in loaded.items()},
    })
    print(f"{'step':>4}  {'conv_lstm':>10}  {'conv':>10}  {'ratio':>6}")
    for k in range(args.horizon):
        a, b = columns["conv_lstm"][k], columns["conv"][k]
        print(f"{k:>4}  {a:10.2f}  {b:10.2f}  {b / a:6.2f}")
    print(f"wrote {args.out}.csv, {args.out}.png, {args.out}_psnr_ssim.png, {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
