"""A training run's config, the two models' registry, and the config's checks: no Keras here, so a
bad flag is refused before the backend loads and evaluation reads a config without training."""

import dataclasses

import numpy as np

from model.cli import UsageError, check_positive, check_seed, flag
from systems import bouncing_balls


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: str = flag(None, "conv_lstm or conv")
    train_dir: str = flag(None, "folder for checkpoints, videos/ and TensorBoard events/")
    seq_length: int = flag(None, "frames per training clip")
    seq_start: int = flag(None, "true frames fed in before the network feeds itself")
    max_step: int = flag(200_000, "total training steps; rerun with a larger value to train on")
    keep_prob: float = flag(0.8, "keep probability of dropout on the true input frames")
    lr: float = flag(0.001, "Adam learning rate")
    batch_size: int = flag(16, "clips per step; refused where a run would need more memory "
                               "than is available")
    num_balls: int = flag(2, "bouncing balls per clip")
    friction: bool = flag(False, "add slight gravity and drag to the simulator")
    seed: int = flag(0, "seeds the weights, the dropout and the data stream")
    save_every: int = flag(1000, "steps between checkpoints and rollout videos")
    log_every: int = flag(100, "steps between logged losses")
    keep_every: int = flag(10_000, "also checkpoint at multiples of this step and keep those "
                                   "for good (milestones); 0: none")
    width: int = flag(1, "every layer's channels times this (1: the original's layer table; "
                         "2 or 4 for footage richer than two balls)")
    data: str = flag(None, "your own clips instead of the simulator's: a .npy (or a small .npz "
                           "of one array) of clips (N, T, H, W[, C]) or (T, N, H, W[, C]), uint8 "
                           "or floats in [0, 1], H and W multiples of 4, C 1 or 3; the last "
                           "--holdout of them are never trained on, for the videos, "
                           "create_graphs.py and predict.py", type=str)
    time_major: bool = flag(None, "--data is stored time first, (T, N, H, W[, C]), as Moving "
                                  "MNIST's mnist_test_seq.npy; without it the layout is "
                                  "measured from the data (needed only where they cannot tell)")
    holdout: float = flag(0.1, "the share of --data's clips held out, the last by index")
    fresh: bool = flag(False, "delete what runs of ours wrote in --train_dir (checkpoints, "
                              "videos, event files) and start from step 0")


@dataclasses.dataclass(frozen=True)
class Kind:
    """One of the two models: how it is named and trained."""

    label: str  # in figures and messages
    script: str  # trains it
    predictor: str  # its class in `model.networks`
    scored_offset: int  # its closed-loop predictions made but not scored (`networks.Predictor`)
    defaults: TrainConfig


MODELS = {
    "conv_lstm": Kind("ConvLSTM", "main_conv_lstm.py", "ConvLSTMPredictor", 1, TrainConfig(
        "conv_lstm", "checkpoints/train_store_conv_lstm", seq_length=10, seq_start=5)),
    "conv": Kind("conv", "main_conv.py", "ConvPredictor", 0, TrainConfig(
        "conv", "checkpoints/train_store_conv", seq_length=5, seq_start=1)),
}
RESUMABLE = ("max_step", "save_every", "log_every", "keep_every")  # may change on resume
NOT_COMPARED = ("model", "train_dir", "fresh", "data", "time_major")  # the data: by content
OPTIONAL = {"data": None, "time_major": None, "holdout": 0.1, "width": 1}  # absent from older runs
DATA_ONLY = ("time_major", "holdout")  # flags that mean nothing without --data


def check_values(config, given=()):
    """Raise `UsageError` naming the first value of `config` out of its range (`given`: the
    flags the user passed, of which those of `DATA_ONLY` need --data)."""
    check_positive({n: getattr(config, n) for n in (
        "batch_size", "max_step", "seq_length", "save_every", "log_every", "num_balls",
        "width", "seq_start")})
    check_positive({"keep_every": config.keep_every}, at_least=0)
    check_seed(config.seed)
    if not config.lr > 0 or not np.isfinite(config.lr):
        raise UsageError(f"--lr must be a positive number, got {config.lr}")
    if not 0 < config.keep_prob <= 1:
        raise UsageError(f"--keep_prob must be in (0, 1], got {config.keep_prob}")
    if not 0 < config.holdout < 1:
        raise UsageError(f"--holdout must be in (0, 1), got {config.holdout}")
    if config.data is None and (flag := next((n for n in DATA_ONLY if n in given), None)):
        raise UsageError(f"--{flag} applies to --data only: name your clips file with --data")
    if config.num_balls > bouncing_balls.max_balls():
        raise UsageError(f"--num_balls {config.num_balls} do not fit reliably in the box "
                         f"(at most {bouncing_balls.max_balls()})")
    need = config.seq_start + 1 + MODELS[config.model].scored_offset  # a frame to score
    if config.seq_length < need:
        raise UsageError(f"--seq_length {config.seq_length} leaves no frame to learn from: the "
                         f"{config.model} model needs at least {need} with --seq_start "
                         f"{config.seq_start}")


def from_saved(saved):
    """The `TrainConfig` a checkpoint's `state.json` recorded. Raises `ValueError` where it is
    not one, `UsageError` for a key this version does not know."""
    if saved.get("model") not in MODELS:
        raise ValueError(f"unknown model {saved.get('model')!r}")
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    if unknown := sorted(set(saved) - set(names)):
        raise UsageError(f"saved by a newer version of this code (config key {unknown[0]!r}); "
                         "update the code to load it")
    if missing := [n for n in names if n not in saved and n not in OPTIONAL]:
        raise ValueError(f"config {missing[0]!r} missing")
    config = TrainConfig(**{**OPTIONAL, **saved})
    try:
        check_values(config)
    except (UsageError, TypeError) as error:
        raise ValueError(error) from None
    return config
