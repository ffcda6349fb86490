"""A run's checkpoints in use: reading one's config, building its model and restoring it, and
choosing which checkpoint of a run folder to load (evaluation, prediction and resume alike)."""

import os

import keras

from model import checkpoint, networks, runtime
from model.cli import UsageError
from model.config import MODELS, from_saved

BALL_FRAME = (32, 32, 3)  # frames of runs that recorded no data (the simulator's)


class Loaded:
    """A checkpoint read and restored: its `path`, `config`, `state` (its `state.json`, read
    once), `model` and, where asked for, `optimizer`."""

    def __init__(self, path, config, state, model, optimizer=None):
        self.path, self.config, self.state, self.model = path, config, state, model
        self.optimizer, self.step = optimizer, state["step"]

    @property
    def data(self):
        """What the run recorded of its data (`describe()` of its source)."""
        return self.state.get("clips") or {"shape": [None, None, *BALL_FRAME]}


def build(config, frame_shape):
    """The predictor of `config` for frames `frame_shape`, weights initialised from its seed."""
    runtime.set_random_seed(config.seed)
    predictor = getattr(networks, MODELS[config.model].predictor)
    model = predictor(config.seq_start, config.keep_prob, channels=frame_shape[-1],
                      width=config.width)
    model.build((config.batch_size, config.seq_length, *frame_shape))
    return model


def build_optimizer(config, model):
    optimizer = keras.optimizers.Adam(config.lr, epsilon=1e-8)  # TensorFlow 1's epsilon
    optimizer.build(model.trainable_variables)
    return optimizer


def load(path, with_optimizer=False):
    """Checkpoint folder `path` as `Loaded`: its config read, its model (and optimiser) built
    from it and restored. Raises `checkpoint.Damaged` where it does not load, `UsageError`
    for a config this version does not know."""
    state = checkpoint.read_state(path)
    try:
        config = from_saved(state["config"])
    except ValueError as error:
        raise checkpoint.Damaged(f"state.json: {error}") from None
    except UsageError as error:
        raise UsageError(f"{path} was {error}") from None
    loaded = Loaded(path, config, state, None)
    loaded.model = build(config, tuple(loaded.data["shape"][2:]))
    loaded.optimizer = build_optimizer(config, loaded.model) if with_optimizer else None
    try:
        checkpoint.restore(path, loaded.model, loaded.optimizer)
    except checkpoint.Damaged:
        held = checkpoint.weights_of(path, {"cell": "conv_lstm"}, "conv")
        if held not in (None, config.model):
            raise checkpoint.Damaged(f"its model.weights.h5 holds the {held} model's weights, "
                                     f"not the {config.model} model's its state.json names")
        raise
    return loaded


def newest(train_dir, skipped, with_optimizer=False):
    """`load` of the newest checkpoint of `train_dir` that loads, or `None` where it has none;
    `skipped(path, error)` is told of each newer one that does not load. Raises `UsageError`
    where checkpoints exist but none loads."""
    found = checkpoint.list_checkpoints(train_dir)
    for path in reversed(found):
        try:
            return load(path, with_optimizer)
        except checkpoint.Damaged as error:
            skipped(path, error)
    if found:
        raise UsageError(f"no checkpoint in {train_dir!r} loads; pass --fresh to start over, "
                         "or use another --train_dir")
    return None


def load_run(name, train_dir, step=None, pretrained_dir=None, warn=print):
    """`Loaded` of the `name` model (None: either) from `train_dir`: its checkpoint at `step`,
    or else the newest that loads (each newer one skipped named through `warn`). `train_dir`
    may also be one checkpoint folder; where it holds no checkpoint, the shipped
    `pretrained_dir/name` is used. Raises `UsageError`, in one line."""
    flag = f"--{name}_dir" if name else "--train_dir"
    try:
        if os.path.isfile(os.path.join(train_dir, "state.json")):
            loaded = load(train_dir)
            if step is not None and step != loaded.step:
                raise UsageError(f"{flag} {train_dir} is one checkpoint, of step {loaded.step}, "
                                 f"not {step}")
        elif step is not None:
            path = os.path.join(train_dir, f"ckpt-{step:07d}")
            if not os.path.isdir(path):
                steps = [checkpoint.step_of(p) for p in checkpoint.list_checkpoints(train_dir)]
                raise UsageError(f"{train_dir} has no checkpoint at step {step} "
                                 f"(it has: {', '.join(map(str, steps)) or 'none'})")
            loaded = load(path)
        else:
            loaded = newest(train_dir, lambda path, error: warn(
                f"warning: skipping {path}: it does not load ({error})"))
            if loaded is None and pretrained_dir and os.path.isfile(
                    os.path.join(pretrained_dir, name, "state.json")):
                loaded = load(os.path.join(pretrained_dir, name))
    except checkpoint.Damaged as error:
        raise UsageError(f"{train_dir} does not load ({error})") from None
    if loaded is None:
        which = f" of the {name} model" if name else ""
        raise UsageError(f"no checkpoint{which} in {train_dir}; train one with `python "
                         f"{MODELS[name or 'conv_lstm'].script}`, or use the shipped weights: "
                         f"{flag} checkpoints/pretrained/{name or 'conv_lstm'}")
    if name is not None and loaded.config.model != name:
        raise UsageError(f"{loaded.path} holds the {MODELS[loaded.config.model].label} model, "
                         f"not the {MODELS[name].label} model")
    return loaded


def check_data(loaded, trained_on):
    """Raise `UsageError` unless `loaded` was trained on the data `trained_on` describes
    (`None`: the bouncing balls; a file: the same bytes and layout, anywhere)."""
    ours, theirs = (tuple(d.get(k) for k in ("fingerprint", "layout"))
                    for d in (loaded.data, trained_on or {}))
    if ours[0] and theirs[0] and ours != theirs:
        raise UsageError(f"--data {trained_on['path']} is not what {loaded.path} was trained "
                         f"on: {data_changes(loaded.data, trained_on)}")
    if ours != theirs:  # one of them the bouncing balls
        on = f"the clips file {loaded.data['path']}" if ours[0] else "the bouncing balls"
        given = f"--data {trained_on['path']}" if theirs[0] else "the bouncing balls"
        raise UsageError(f"{loaded.path} was trained on {on}, not on {given}")


def data_changes(recorded, now):
    """What differs between two descriptions of a clips file, for a message: its shape, dtype,
    layout or, where only the bytes differ, its content."""
    differ = [f"{key} {now[key]} (the run's: {recorded[key]})"
              for key in ("shape", "dtype", "layout") if now[key] != recorded[key]]
    return ", ".join(differ) or "the same shape, dtype and layout, but other content"
