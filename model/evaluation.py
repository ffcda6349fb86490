"""Evaluation shared by `create_graphs.py` and `reproduction_study.py`: which checkpoint to
load, the evaluation clips, both alignments of step 0, and the errors per sequence and step.

Both models see the same simulated clips, in two alignments of step 0:
- ours (`conv_lstm`, `conv`): ConvLSTM gets true frames 0..4, the conv model true frame 4;
  step k compares the prediction of frame 5 + k with the truth.
- the 2016 code's (`conv_lstm_2016`, `conv_2016`), as its 50-frame video graphs kept their
  outputs: ConvLSTM gets true frames 0..4 and its prediction of frame 5 is fed back, not kept,
  so step k is its prediction of frame 6 + k; the conv model gets true frame 0 and step k is its
  prediction of frame 1 + k.
"""

import os

import numpy as np

from model import checkpoint
from model.training import CONV, CONV_LSTM, UsageError, first_line

CONTEXT = 5  # true frames 0..4 exist for both models; the conv model uses only one of them
MODELS = {"conv_lstm": (CONV_LSTM, "main_conv_lstm.py"), "conv": (CONV, "main_conv.py")}
LABELS = {"conv_lstm": "ConvLSTM", "conv": "conv"}
ALIGNMENTS = {
    "": "our alignment: ConvLSTM in 0-4, conv in 4, step 0 = frame 5",
    "_2016": "2016 alignment: ConvLSTM in 0-4, step 0 = frame 6; conv in 0, step 0 = frame 1",
}
SERIES = ["conv_lstm", "conv", "conv_lstm_2016", "conv_2016"]


class WrongModel(UsageError):
    """A checkpoint that holds the other model."""


def load(name, path):
    """The `name` predictor stored at checkpoint folder `path`, and its training step. Raises
    `WrongModel` when `path` holds the other model; `OSError`, `ValueError`, `KeyError` or
    `TypeError` when it does not load."""
    from model.training import build, load_state

    state, config = load_state(path)
    if config.model != name:
        raise WrongModel(f"{path} holds the {LABELS[config.model]!r} model, not "
                         f"{LABELS[name]!r}")
    model, _ = build(config)
    checkpoint.restore(path, model)
    return model, state["step"]


def load_run(name, train_dir, step=None, pretrained_dir=None, warn=print):
    """`(path, model, step)` of the `name` model from `train_dir`: the checkpoint at `step`, or
    else the newest that loads (each newer one skipped is named through `warn`; nothing is
    renamed). `train_dir` may also be one checkpoint folder. Where `train_dir` holds no
    checkpoint, the shipped `pretrained_dir/name` is used. Raises `UsageError`."""
    if os.path.isfile(os.path.join(train_dir, "state.json")):
        found = [train_dir]
    elif step is not None:
        found = [os.path.join(train_dir, f"ckpt-{step:07d}")]
        if not os.path.isdir(found[0]):
            steps = [checkpoint.step_of(p) for p in checkpoint.list_checkpoints(train_dir)]
            raise UsageError(f"{train_dir} has no checkpoint at step {step} "
                             f"(it has: {', '.join(map(str, steps)) or 'none'})")
    else:
        found = checkpoint.list_checkpoints(train_dir)[::-1]
        if not found and pretrained_dir is not None:
            found = [os.path.join(pretrained_dir, name)]
            if not os.path.isfile(os.path.join(found[0], "state.json")):
                raise UsageError(f"no weights for the {name} model in {train_dir} or "
                                 f"{found[0]}; train them with `python {MODELS[name][1]}`")
    failures = []
    for path in found:
        try:
            return (path, *load(name, path))
        except (OSError, ValueError, KeyError, TypeError) as error:
            failures.append(f"{path} ({first_line(error)})")
            if len(found) > 1:
                warn(f"warning: skipping {failures[-1]}: it does not load")
    raise UsageError(f"no checkpoint of the {name} model loads: {'; '.join(failures) or train_dir}")


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


def metrics(prediction, truth, quality=True):
    """Per sequence and step, each `(B, N)`: `sse` (summed squared error), `sse_clipped` (the
    same with the prediction clipped to [0, 1] first), and with `quality` `psnr` (dB) and
    `ssim`, both of the clipped prediction."""
    shown = np.clip(prediction, 0.0, 1.0)
    values = {"sse": np.sum((prediction - truth) ** 2, axis=(-3, -2, -1)),
              "sse_clipped": np.sum((shown - truth) ** 2, axis=(-3, -2, -1))}
    if quality:
        mse = values["sse_clipped"] / np.prod(truth.shape[-3:])
        values["psnr"] = 10 * np.log10(1.0 / np.maximum(mse, 1e-10))
        values["ssim"] = ssim(shown, truth)
    return values


def eval_clips(count, horizon, rng):
    """`(count, CONTEXT + 1 + horizon, 32, 32, 3)`: enough frames for both alignments."""
    from systems.bouncing_balls import generate

    return generate(count, CONTEXT + 1 + horizon, rng=rng)


def predict(rollouts, clips, horizon, inputs=None):
    """`{series: (prediction, truth)}`, each `(B, horizon, 32, 32, 3)`, for `SERIES`. The
    models read their true frames from `inputs` (`clips` unless given, e.g. with dropout)."""
    inputs = clips if inputs is None else inputs
    lstm = np.asarray(rollouts["conv_lstm"](inputs[:, :CONTEXT], horizon + 1))  # frames 5..
    starts = np.concatenate([inputs[:, CONTEXT - 1 : CONTEXT], inputs[:, :1]])  # one call
    conv, conv_2016 = np.split(np.asarray(rollouts["conv"](starts, horizon)), 2)
    ours = clips[:, CONTEXT : CONTEXT + horizon]
    return {"conv_lstm": (lstm[:, :horizon], ours), "conv": (conv, ours),
            "conv_lstm_2016": (lstm[:, 1:], clips[:, CONTEXT + 1 :]),
            "conv_2016": (conv_2016, clips[:, 1 : 1 + horizon])}


def dropped_out(frames, keep_prob, rng):
    """`frames` with inverted dropout: each value kept with probability `keep_prob` and scaled
    by `1 / keep_prob`, else 0 (the 2016 code's `tf.nn.dropout` on its input frames)."""
    return frames * (rng.random(frames.shape) < keep_prob) / np.float32(keep_prob)


def evaluate(models, num_sequences, horizon, seed, batch_size, quality=True, keep_prob=1.0,
             desc="evaluating"):
    """`{series: {metric: (num_sequences, horizon)}}` for `SERIES` (metrics as `metrics`), all
    from one set of clips drawn from `seed`. With `keep_prob` < 1 the models' true input frames
    get dropout (masks from their own stream, so the clips stay the same)."""
    from tqdm import tqdm

    from model.train_step import compiled_rollout

    rollouts = {name: compiled_rollout(model) for name, model in models.items()}
    rng, masks = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    results = {series: {} for series in SERIES}
    with tqdm(total=num_sequences, unit="seq", desc=desc, leave=False,
              disable=None) as bar:  # no bar where stderr is not a terminal
        for start in range(0, num_sequences, batch_size):
            clips = eval_clips(min(batch_size, num_sequences - start), horizon, rng)
            inputs = None if keep_prob == 1 else dropped_out(clips[:, :CONTEXT], keep_prob, masks)
            for series, pair in predict(rollouts, clips, horizon, inputs).items():
                for key, value in metrics(*pair, quality=quality).items():
                    results[series].setdefault(key, []).append(value)
            bar.update(len(clips))
    return {s: {k: np.concatenate(v) for k, v in r.items()} for s, r in results.items()}


def mean_and_ci95(values):
    """Mean over sequences (axis 0) and the 95 % confidence half-width of that mean."""
    return values.mean(axis=0), 1.96 * values.std(axis=0, ddof=1) / np.sqrt(len(values))
