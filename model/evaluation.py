"""Evaluation shared by `create_graphs.py` and `reproduction_study.py`: its flags, which
checkpoint to load, the evaluation clips, both alignments of step 0, and the metrics per
sequence and step.

Both models see the same clips, in two alignments of step 0 (`context`: the ConvLSTM's true
frames, 5):
- ours (`conv_lstm`, `conv`): ConvLSTM gets true frames 0..4, the conv model true frame 4;
  step k compares the prediction of frame 5 + k with the truth.
- the 2016 code's (`conv_lstm_2016`, `conv_2016`), as its 50-frame video graphs kept their
  outputs: ConvLSTM gets true frames 0..4 and its prediction of frame 5 is fed back, not kept,
  so step k is its prediction of frame 6 + k; the conv model gets true frame 0 and step k is its
  prediction of frame 1 + k.
"""

import dataclasses
import functools
import os

import numpy as np

from model import checkpoint, cli
from model.cli import UsageError
from model.data import frame_shape
from model.training import CONV, CONV_LSTM, load, load_newest

MODELS = {"conv_lstm": (CONV_LSTM, "main_conv_lstm.py"), "conv": (CONV, "main_conv.py")}
LABELS = {"conv_lstm": "ConvLSTM", "conv": "conv"}
ALIGNMENTS = {
    "": "our alignment: ConvLSTM in 0-4, conv in 4, step 0 = frame 5",
    "_2016": "2016 alignment: ConvLSTM in 0-4, step 0 = frame 6; conv in 0, step 0 = frame 1",
}
SERIES = ["conv_lstm", "conv", "conv_lstm_2016", "conv_2016"]
MAX_HORIZON = 200  # the rollout is unrolled into one compiled graph
VALUES_PER_PASS = 2**24  # frame values a forward pass predicts per series: bounds its memory


def _flag(default, text):
    return dataclasses.field(default=default, metadata={"help": text})


@dataclasses.dataclass(frozen=True)
class EvalFlags:
    num_sequences: int = _flag(1200, "sequences averaged (at least 2, for the intervals)")
    seed: int = _flag(2016, "seed of the evaluation sequences")
    horizon: int = _flag(24, f"predicted frames per sequence (at most {MAX_HORIZON})")
    batch_size: int = _flag(200, "sequences per forward pass")


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


def load_checkpoint(name, path, data=None, loaded=None):
    """`(model, step)`: the `name` predictor stored at checkpoint folder `path` (`loaded`:
    `training.load(path)` where already called). `data` is the description of the clips it
    will be evaluated on (`Clips.describe()`; `None`: the simulator). Raises `UsageError`, in
    one line, where it does not load, holds the other model or was trained on other data."""
    try:
        config, state, model, _ = loaded or load(path)
    except checkpoint.Damaged as error:
        raise UsageError(f"{path} does not load ({error})") from None
    if config.model != name:
        raise UsageError(f"{path} holds the {LABELS[config.model]} model, not the "
                         f"{LABELS[name]} model")
    trained = state.get("clips")
    if (trained or {}).get("fingerprint") != (data or {}).get("fingerprint"):
        on = f"--data {trained['path']}" if trained else "the bouncing balls"
        raise UsageError(f"{path} was trained on {on}, not on "
                         f"{'--data ' + data['path'] if data else 'the bouncing balls'}")
    return model, state["step"]


def load_run(name, train_dir, step=None, pretrained_dir=None, data=None, warn=print):
    """`(path, model, step)` of the `name` model from `train_dir`: the checkpoint at `step`, or
    else the newest that loads (each newer one skipped is named through `warn`). `train_dir`
    may also be one checkpoint folder. Where `train_dir` holds no checkpoint, the shipped
    `pretrained_dir/name` is used. Raises `UsageError`."""
    flag = f"--{name}_dir"
    if os.path.isfile(os.path.join(train_dir, "state.json")):
        if step is not None and step != checkpoint.read_state(train_dir)["step"]:
            raise UsageError(f"{flag} {train_dir} is one checkpoint, of step "
                             f"{checkpoint.read_state(train_dir)['step']}, not {step}")
        path = train_dir
    elif step is not None:
        path = os.path.join(train_dir, f"ckpt-{step:07d}")
        if not os.path.isdir(path):
            steps = [checkpoint.step_of(p) for p in checkpoint.list_checkpoints(train_dir)]
            raise UsageError(f"{train_dir} has no checkpoint at step {step} "
                             f"(it has: {', '.join(map(str, steps)) or 'none'})")
    else:
        def skipped(path, error):
            warn(f"warning: skipping {path}: it does not load ({error})")

        found = load_newest(train_dir, skipped)
        if found is not None:
            return (found[0], *load_checkpoint(name, found[0], data, found[1]))
        if data is None and os.path.isfile(os.path.join(pretrained_dir or "", name,
                                                          "state.json")):
            path = os.path.join(pretrained_dir, name)
        else:
            raise UsageError(f"no checkpoint of the {name} model in {train_dir}; train one "
                             f"with `python {MODELS[name][1]}`"
                             + ("" if data else f", or evaluate the shipped weights with "
                                f"{flag} checkpoints/pretrained/{name}"))
    return (path, *load_checkpoint(name, path, data))


def eval_clips(count, length, rng, clips=None, first=0):
    """`(count, length, H, W, C)` clips to evaluate on: simulated from `rng`, or the clips
    `first, first + 1, ...` of a user's `clips` from frame 0 (`rng` unused)."""
    if clips is None:
        from systems.bouncing_balls import generate

        return generate(count, length, rng=rng)
    return clips.window(first + np.arange(count), np.zeros(count, int), length)


def _predict(models, context, clips, inputs, horizon):
    """`{series: (prediction, truth)}`, each `(B, horizon, H, W, C)`, for `SERIES`. The models
    read their true frames from `inputs` (the first `context` frames of `clips`, or those with
    dropout)."""
    from keras import ops

    lstm = models["conv_lstm"].rollout(inputs, horizon + 1)  # frames context..
    starts = ops.concatenate([inputs[:, context - 1 : context], inputs[:, :1]])  # one call
    conv, conv_2016 = ops.split(models["conv"].rollout(starts, horizon), 2)
    ours = clips[:, context : context + horizon]
    return {"conv_lstm": (lstm[:, :horizon], ours), "conv": (conv, ours),
            "conv_lstm_2016": (lstm[:, 1:], clips[:, context + 1 :]),
            "conv_2016": (conv_2016, clips[:, 1 : 1 + horizon])}


def metrics(prediction, truth, quality=True):
    """Per sequence and step, each `(B, N)`: `sse` (summed squared error), `sse_clipped` (the
    same with the prediction clipped to [0, 1] first), and with `quality` `psnr` (dB) and
    `ssim` (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5; `keras.ops.image.ssim`), both
    of the clipped prediction. `(B, N, H, W, C)` tensors in."""
    from keras import ops

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


def _score(models, context, horizon, quality, clips, inputs):
    """`metrics` of every series; PSNR and SSIM in our alignment only (what the figures show;
    SSIM is most of an evaluation's time)."""
    pairs = _predict(models, context, clips, inputs, horizon)
    return {series: metrics(*pair, quality=quality and series in MODELS)
            for series, pair in pairs.items()}


def dropped_out(frames, keep_prob, rng):
    """`frames` with inverted dropout: each value kept with probability `keep_prob` and scaled
    by `1 / keep_prob`, else 0 (the 2016 code's `tf.nn.dropout` on its input frames)."""
    return frames * (rng.random(frames.shape) < keep_prob) / np.float32(keep_prob)


def evaluate(models, num_sequences, horizon, seed, batch_size, quality=True, keep_prob=1.0,
             clips=None, desc="evaluating"):
    """`{series: {metric: (num_sequences, horizon)}}` for `SERIES` (as `_score`), all
    from one set of clips: simulated from `seed`, or the last `num_sequences` of a user's
    `clips` (its held-out ones).
    With `keep_prob` < 1 the models' true input frames get dropout (masks from their own
    stream, so the clips stay the same). The rollouts and metrics run as one compiled graph."""
    from model.train_step import compiled

    context = models["conv_lstm"].context
    score = compiled(functools.partial(_score, models, context, horizon, quality))
    frame = np.prod(frame_shape(clips))
    batch_size = max(1, min(batch_size, VALUES_PER_PASS // (horizon * frame)))
    rng, masks = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    first = 0 if clips is None else len(clips) - num_sequences  # the last clips: held out
    results = {series: {} for series in SERIES}
    with cli.progress(total=num_sequences, unit="seq", desc=desc) as bar:
        for start in range(0, num_sequences, batch_size):
            batch = eval_clips(min(batch_size, num_sequences - start), context + 1 + horizon,
                               rng, clips, first + start)
            inputs = batch[:, :context]
            if keep_prob < 1:
                inputs = dropped_out(inputs, keep_prob, masks)
            for series, values in score(batch, inputs).items():
                for key, value in values.items():
                    results[series].setdefault(key, []).append(np.asarray(value))
            bar.update(len(batch))
    return {s: {k: np.concatenate(v) for k, v in r.items()} for s, r in results.items()}


def mean_and_ci95(values):
    """Mean over sequences (axis 0) and the 95 % confidence half-width of that mean."""
    return values.mean(axis=0), 1.96 * values.std(axis=0, ddof=1) / np.sqrt(len(values))
