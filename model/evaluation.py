"""Evaluation shared by `create_graphs.py` and `reproduction_study.py`: its flags, the series
scored, the metrics per sequence and step.

Both models see the same held-out clips of a source, the ConvLSTM the first `context` frames
(its run's `seq_start`), the conv model the last of them; step k compares each prediction of
frame `context + k` with the truth ("our alignment"). On the bouncing balls a second alignment
repeats the 2016 code's video graphs (`_2016`): the ConvLSTM's prediction of frame `context`
is fed back, not kept, so step k is its prediction of frame `context + 1 + k`, and the conv
model reads frame 0, so step k is its prediction of frame 1 + k. Two baselines are scored
beside them in our alignment: copying the last input frame, and the training clips' mean frame.
"""

import dataclasses
import functools
import os

import numpy as np
from keras import ops

from model import cli
from model.backend import compiled
from model.cli import UsageError
from model.config import MODELS

ORIGINAL_FIGURE = os.path.join(cli.REPO, "figs", "original_2016_conv_lstm_vs_conv.png")
BASELINES = {"copy_last": "copy the last input frame",
             "mean_frame": "the training clips' mean frame"}
MAX_HORIZON = 200  # the rollout is unrolled into one compiled graph
VALUES_PER_PASS = 2**24  # frame values a forward pass predicts per series: bounds its memory


@dataclasses.dataclass(frozen=True)
class EvalFlags:
    num_sequences: int = cli.flag(1200, "sequences averaged (at least 2, for the intervals; "
                                        "with --data at most its held-out clips)")
    seed: int = cli.flag(2016, "seed of the simulated evaluation sequences")
    horizon: int = cli.flag(24, f"predicted frames per sequence (at most {MAX_HORIZON}; with "
                                "--data at most the frames after the context)")
    batch_size: int = cli.flag(200, "sequences per forward pass")


def add_flags(parser):
    cli.add_fields(parser, EvalFlags())


def check_flags(args, min_horizon=1, why=""):
    """Raise `UsageError` naming the first evaluation flag of `args` out of range (`why`: the
    reason for `min_horizon`)."""
    cli.check_positive({"num_sequences": args.num_sequences}, at_least=2)
    cli.check_positive({"batch_size": args.batch_size})
    if args.horizon < min_horizon:
        raise UsageError(f"--horizon must be at least {min_horizon}, got {args.horizon}{why}")
    cli.check_seed(args.seed)
    if args.horizon > MAX_HORIZON:
        raise UsageError(f"--horizon must be at most {MAX_HORIZON}, got {args.horizon}")


def alignments(context, original=True):
    """`{suffix: what it compares}`: our alignment, and on the original's data the 2016 one."""
    ours = {"": f"ConvLSTM in 0-{context - 1}, conv in {context - 1}, step 0 = frame {context}"}
    if not original:
        return ours
    return {"_2016": f"2016 alignment: ConvLSTM in 0-{context - 1}, step 0 = frame "
                     f"{context + 1}; conv in 0, step 0 = frame 1",
            **{k: "our alignment: " + v for k, v in ours.items()}}


def series(original=True):
    """The series an evaluation scores: both models per alignment, then the baselines."""
    return [name + suffix for suffix in sorted(alignments(1, original)) for name in MODELS] + \
        list(BASELINES)


def _predict(models, context, horizon, original, clips, inputs, mean):
    """`{series: (prediction, truth)}`, each `(B, horizon, H, W, C)`. The models read their true
    frames from `inputs` (the first `context` frames of `clips`, or those with dropout)."""
    truth = clips[:, context : context + horizon]
    lstm = models["conv_lstm"].rollout(inputs, horizon + original)  # frames context..
    starts = ops.concatenate([inputs[:, context - 1 : context], inputs[:, :1]])  # one call
    conv, conv_2016 = ops.split(models["conv"].rollout(starts, horizon), 2)
    pairs = {"conv_lstm": (lstm[:, :horizon], truth), "conv": (conv, truth),
             "copy_last": (ops.repeat(clips[:, context - 1 : context], horizon, axis=1), truth),
             "mean_frame": (ops.broadcast_to(mean, ops.shape(truth)), truth)}
    if original:
        pairs |= {"conv_lstm_2016": (lstm[:, 1:], clips[:, context + 1 :]),
                  "conv_2016": (conv_2016, clips[:, 1 : 1 + horizon])}
    return pairs


def metrics(prediction, truth, quality=True):
    """Per sequence and step, each `(B, N)`: `sse` (summed squared error), `sse_clipped` (the
    same with the prediction clipped to [0, 1] first), and with `quality` `psnr` (dB) and
    `ssim` (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5; `keras.ops.image.ssim`), both
    of the clipped prediction. `(B, N, H, W, C)` tensors in."""
    shown = ops.clip(prediction, 0.0, 1.0)
    values = {"sse": ops.sum(ops.square(prediction - truth), axis=(-3, -2, -1)),
              "sse_clipped": ops.sum(ops.square(shown - truth), axis=(-3, -2, -1))}
    if quality:
        frame = tuple(truth.shape[-3:])
        mse = values["sse_clipped"] / float(np.prod(frame))
        values["psnr"] = 10 * ops.log10(1.0 / ops.maximum(mse, 1e-10))
        window = min(11, (min(frame[:2]) - 1) | 1)  # a frame smaller than the window
        ssim = ops.image.ssim(ops.reshape(shown, (-1, *frame)), ops.reshape(truth, (-1, *frame)),
                              filter_size=window)
        values["ssim"] = ops.reshape(ssim, ops.shape(values["sse"]))
    return values


def _score(models, context, horizon, original, quality, clips, inputs, mean):
    """`metrics` of every series; PSNR and SSIM for the models in our alignment only (what the
    figures show; SSIM is most of an evaluation's time)."""
    pairs = _predict(models, context, horizon, original, clips, inputs, mean)
    return {name: metrics(*pair, quality=quality and name in MODELS)
            for name, pair in pairs.items()}


def dropped_out(frames, keep_prob, rng):
    """`frames` with inverted dropout: each value kept with probability `keep_prob` and scaled
    by `1 / keep_prob`, else 0 (the 2016 code's `tf.nn.dropout` on its input frames)."""
    return frames * (rng.random(frames.shape) < keep_prob) / np.float32(keep_prob)


def evaluate(models, source, num_sequences, horizon, seed, batch_size, quality=True,
             keep_prob=1.0, desc="evaluating"):
    """`{series: {metric: (num_sequences, horizon)}}` for `series(source.original)`, all on the
    first `num_sequences` held-out clips of `source` (simulated ones: from `seed`). With
    `keep_prob` < 1 the models' true input frames get dropout (masks from their own stream, so
    the clips stay the same). The rollouts and metrics run as one compiled graph per batch."""
    context, original = models["conv_lstm"].context, source.original
    score = compiled(functools.partial(_score, models, context, horizon, original, quality))
    mean = ops.convert_to_tensor(source.mean_frame())
    batch_size = max(1, min(batch_size, VALUES_PER_PASS // (horizon * np.prod(source.frame_shape))))
    masks = np.random.default_rng([seed, 1])
    results = {name: {} for name in series(original)}
    batches = source.held_out(num_sequences, context + horizon + original, seed, batch_size)
    with cli.progress(total=num_sequences, unit="seq", desc=desc) as bar:
        for batch in batches:
            inputs = batch[:, :context]
            if keep_prob < 1:
                inputs = dropped_out(inputs, keep_prob, masks)
            for name, values in score(batch, inputs, mean).items():
                for key, value in values.items():
                    results[name].setdefault(key, []).append(np.asarray(value))
            bar.update(len(batch))
    return {s: {k: np.concatenate(v) for k, v in r.items()} for s, r in results.items()}


def mean_and_ci95(values):
    """Mean over sequences (axis 0) and the 95 % confidence half-width of that mean."""
    return values.mean(axis=0), 1.96 * values.std(axis=0, ddof=1) / np.sqrt(len(values))
