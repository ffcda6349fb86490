"""Training both predictors: the config, loading a checkpoint, resume, and the loop.

`main_conv_lstm.py` and `main_conv.py` differ only in their `TrainConfig` defaults.
"""

import contextlib
import dataclasses
import os
import sys
import time

import numpy as np

from model import checkpoint, cli, files, runtime
from model.cli import UsageError
from model.data import BALL_FRAME, batches, frame_shape, open_data, video_clip
from systems import bouncing_balls



def _flag(default, text, **metadata):
    return dataclasses.field(default=default, metadata={"help": text, **metadata})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: str = _flag(None, "conv_lstm or conv")
    train_dir: str = _flag(None, "folder for checkpoints, videos/ and TensorBoard events/")
    seq_length: int = _flag(None, "frames per training clip")
    seq_start: int = _flag(None, "true frames fed in before the network feeds itself")
    max_step: int = _flag(200_000, "total training steps; rerun with a larger value to train on")
    keep_prob: float = _flag(0.8, "keep probability of dropout on the true input frames")
    lr: float = _flag(0.001, "Adam learning rate")
    batch_size: int = _flag(16, "clips per step; refused where a run would need more memory "
                                "than is available (1 GB + 52 bytes per value of a batch)")
    num_balls: int = _flag(2, "bouncing balls per clip")
    friction: bool = _flag(False, "add slight gravity and drag to the simulator")
    seed: int = _flag(0, "seeds the weights, the dropout and the data stream")
    save_every: int = _flag(1000, "steps between checkpoints and rollout videos")
    log_every: int = _flag(100, "steps between logged losses")
    keep_every: int = _flag(10_000, "also checkpoint at multiples of this step and keep those "
                                    "for good (milestones, about 0.1 MB each); 0: none")
    data: str = _flag(None, "your own clips instead of the simulator's: a .npy (or an .npz of "
                            "one array) of clips (N, T, H, W[, C]), uint8 or floats in [0, 1], "
                            "H and W multiples of 4, C 1 or 3; the last --holdout of them are "
                            "never trained on, for the videos and create_graphs.py", type=str)
    time_major: bool = _flag(False, "--data is stored time first, (T, N, H, W[, C]), as "
                                    "Moving MNIST's mnist_test_seq.npy")
    holdout: float = _flag(0.1, "the share of --data's clips held out, the last by index")
    fresh: bool = _flag(False, "delete what runs of ours wrote in --train_dir (checkpoints, "
                               "videos, event files) and start from step 0")


CONV_LSTM = TrainConfig("conv_lstm", "checkpoints/train_store_conv_lstm", seq_length=10, seq_start=5)
CONV = TrainConfig("conv", "checkpoints/train_store_conv", seq_length=5, seq_start=1)
DEFAULTS = {c.model: c for c in (CONV_LSTM, CONV)}
RESUMABLE = ("max_step", "save_every", "log_every", "keep_every")  # may change on resume
OPTIONAL = ("data", "time_major", "holdout")  # absent from checkpoints made before them
EPILOG = (
    "Rerunning with the same --train_dir resumes from its newest complete checkpoint, with "
    f"the data an uninterrupted run would have seen. On resume only "
    f"{', '.join('--' + n for n in RESUMABLE)} may change; pass --fresh to start over. "
    "One run at a time per --train_dir. Exit codes: 0 done, 1 a write failed or the loss "
    "diverged, 2 a bad flag, file or folder, 130 Ctrl-C, 143 SIGTERM."
)


def parse_flags(defaults, argv=None, description=None):
    """`TrainConfig` from command-line flags over `defaults`, every value checked, the clips
    file opened (`None` without --data): `(config, clips)`. Raises `UsageError`."""
    parser = cli.Parser(description=description, epilog=EPILOG)
    defaults = dataclasses.replace(defaults, train_dir=os.path.join(cli.REPO, defaults.train_dir))
    cli.add_fields(parser, defaults, skip=("model",))
    config = dataclasses.replace(defaults, **vars(parser.parse_args(argv)))
    check_values(config)
    _check_train_dir(config.train_dir)
    clips = open_data(config)
    _check_memory(config, clips)
    return config, clips


def check_values(config):
    """Raise `UsageError` naming the first value of `config` out of its range."""
    cli.check_positive({n: getattr(config, n) for n in (
        "batch_size", "max_step", "seq_length", "save_every", "log_every", "num_balls")})
    cli.check_positive({"keep_every": config.keep_every}, at_least=0)
    cli.check_seed(config.seed)
    if not config.lr > 0 or not np.isfinite(config.lr):
        raise UsageError(f"--lr must be a positive number, got {config.lr}")
    if not 0 < config.keep_prob <= 1:
        raise UsageError(f"--keep_prob must be in (0, 1], got {config.keep_prob}")
    if not 0 < config.holdout < 1:
        raise UsageError(f"--holdout must be in (0, 1), got {config.holdout}")
    if config.num_balls > bouncing_balls.max_balls():
        raise UsageError(f"--num_balls {config.num_balls} do not fit reliably in the box "
                         f"(at most {bouncing_balls.max_balls()})")
    cli.check_positive({"seq_start": config.seq_start})
    runtime.setup()  # quietly, before the networks' module imports Keras
    from model.networks import PREDICTORS

    need = config.seq_start + 1 + PREDICTORS[config.model].scored_offset  # a frame to score
    if config.seq_length < need:
        raise UsageError(f"--seq_length {config.seq_length} leaves no frame to learn from: the "
                         f"{config.model} model needs at least {need} with --seq_start "
                         f"{config.seq_start}")


def _check_train_dir(train_dir):
    cli.check_folder("train_dir", train_dir)
    if os.path.isfile(os.path.join(train_dir, "state.json")):
        raise UsageError(
            f"--train_dir {train_dir!r} is one checkpoint, not a run folder; to train on from "
            f"it, copy it into a new one: mkdir -p runs/mine && cp -r {train_dir} "
            f"runs/mine/ckpt-{checkpoint.read_state(train_dir)['step']:07d}, then --train_dir "
            "runs/mine with its flags")


def _check_memory(config, clips):
    """Raise `UsageError` where the run would need more memory than is available: about 1 GB,
    and 52 bytes per value of a batch (peak resident memory measured at batch 16 to 4,096)."""
    values = config.batch_size * config.seq_length * np.prod(frame_shape(clips))
    need = 1e9 + 52 * values
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f if "MemAvailable" in line)
        if need > available:
            raise UsageError(f"--batch_size {config.batch_size} would need about "
                             f"{need / 1e9:,.1f} GB of memory, more than the "
                             f"{available / 1e9:.1f} GB available")


def build(config, frame=BALL_FRAME):
    """The predictor and its Adam optimiser, weights initialised from `config.seed`."""
    import keras

    from model.networks import PREDICTORS

    runtime.set_random_seed(config.seed)
    model = PREDICTORS[config.model](config.seq_start, config.keep_prob, channels=frame[-1])
    model.build((config.batch_size, config.seq_length, *frame))
    optimizer = keras.optimizers.Adam(config.lr, epsilon=1e-8)  # TensorFlow 1's epsilon
    optimizer.build(model.trainable_variables)
    return model, optimizer


def load(path):
    """`(config, state, model, optimizer)` of checkpoint folder `path`, built from its saved
    config and restored. Raises `checkpoint.Damaged` where it does not load (a missing or
    wrongly typed value too), `UsageError` for a config key this version does not know."""
    state = checkpoint.read_state(path)
    saved = state["config"]
    if saved.get("model") not in DEFAULTS:
        raise checkpoint.Damaged(f"state.json: unknown model {saved.get('model')!r}")
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(saved) - set(names))
    if unknown:
        raise UsageError(f"{path} was saved by a newer version of this code (config key "
                         f"{unknown[0]!r}); update the code to load it")
    missing = [n for n in names if n not in saved and n not in OPTIONAL]
    if missing:
        raise checkpoint.Damaged(f"state.json: config {missing[0]!r} missing")
    config = dataclasses.replace(DEFAULTS[saved["model"]], **saved)
    try:
        check_values(config)
    except (UsageError, TypeError) as error:
        raise checkpoint.Damaged(f"state.json: {error}") from None
    shape = state.get("clips", {}).get("shape", (None, None, *BALL_FRAME))
    model, optimizer = build(config, tuple(shape[2:]))
    try:
        checkpoint.restore(path, model, optimizer)
    except checkpoint.Damaged:
        held = checkpoint.weights_of(path, {"cell": "conv_lstm"}, "conv")
        if held not in (None, config.model):
            raise checkpoint.Damaged(f"its model.weights.h5 holds the {held} model's weights, "
                                     f"not the {config.model} model's its state.json names")
        raise
    return config, state, model, optimizer


def load_newest(train_dir, skipped):
    """`(path, load(path))` for the newest checkpoint of `train_dir` that loads, or `None`
    where it has none; `skipped(path, error)` is told of each newer one that does not load.
    Raises `UsageError` where checkpoints exist but none loads."""
    found = checkpoint.list_checkpoints(train_dir)
    for path in reversed(found):
        try:
            return path, load(path)
        except checkpoint.Damaged as error:
            skipped(path, error)
    if found:
        raise UsageError(f"no checkpoint in {train_dir!r} loads; pass --fresh to start over, "
                         "or use another --train_dir")
    return None


def _resume(config, clips, log):
    """`(step, model, optimizer)` from the newest checkpoint that loads (newer ones set aside,
    so that `checkpoint.save` never counts them among those it keeps), or step 0. Raises
    `UsageError` where the folder holds another run."""
    damaged = []
    found = load_newest(config.train_dir, lambda path, error: damaged.append((path, error)))
    for path, error in damaged:  # only once one loads: else the user decides (--fresh)
        log(f"warning: {path} does not load ({error}); moved aside to "
            f"{checkpoint.set_aside(path)}")
    if found is None:
        return (0, *build(config, frame_shape(clips)))
    path, (saved, state, model, optimizer) = found
    _check_same_run(config, saved, clips, state.get("clips"))
    log(f"resuming from step {state['step']} ({path})")
    return state["step"], model, optimizer


def _check_same_run(config, saved, clips, saved_clips):
    """Raise `UsageError` unless `saved` (a checkpoint's config) is the run `config` continues,
    on the same clips."""
    if saved.model != config.model:
        raise UsageError(f"--train_dir {config.train_dir!r} holds a {saved.model!r} run, "
                         f"not {config.model!r}; use another --train_dir")
    fixed = [f.name for f in dataclasses.fields(config)
             if f.name not in ("model", "train_dir", "fresh", *RESUMABLE)]
    differ = [f"--{n} {getattr(config, n)} (saved: {getattr(saved, n)})"
              for n in fixed if getattr(saved, n) != getattr(config, n)]
    if clips is not None and saved_clips is not None:
        now = clips.describe()
        differ += [f"the data's {key} {now[key]} (saved: {saved_clips[key]})"
                   for key in ("shape", "dtype", "layout", "fingerprint")
                   if now[key] != saved_clips[key]]
    if differ:
        raise UsageError(f"--train_dir {config.train_dir!r} holds a run with other settings: "
                         f"{', '.join(differ)}; pass --fresh to start over, or use another "
                         "--train_dir")


class NonFiniteLoss(Exception):
    pass


def train(config, clips=None, log=print):
    """Train `config.model` to `config.max_step` on the simulator or `clips`, resuming from the
    newest checkpoint, holding the folder's lock throughout. Returns the step reached. Raises
    `NonFiniteLoss` or `files.CannotWrite` (the last complete checkpoint is kept), `UsageError`
    (the folder in use, or holding another run) and `runtime.Unavailable`."""
    runtime.setup()
    with files.writing(config.train_dir):
        os.makedirs(config.train_dir, exist_ok=True)
    try:
        with checkpoint.locked(config.train_dir):  # raises `InUse` on entry only
            return _train(config, clips, log)
    except checkpoint.InUse as error:
        raise UsageError(f"--train_dir {error}: wait for it to end, or use another "
                         "--train_dir") from None


def _train(config, clips, log):
    from model import video
    from model.events import EVENTS_NAME, Events
    from model.train_step import compiled, dispatching_ahead, losses_of, make_train_step

    if config.fresh:
        removed = checkpoint.remove_run(config.train_dir, {"videos": video.VIDEO_NAME,
                                                           "events": EVENTS_NAME})
        log(f"--fresh: removed {removed} checkpoints, videos and event files of ours from "
            f"{config.train_dir}")
    for folder in (config.train_dir, os.path.join(config.train_dir, "videos")):
        files.remove_leftovers(folder, (checkpoint.TEMPORARY, files.TEMPORARY))
    step, model, optimizer = _resume(config, clips, log)
    truth = video_clip(config, clips)
    if step and not os.path.exists(video.path(config.train_dir, step)):  # killed before it
        video.write_run_video(config, step, truth, model.rollout)
    if step >= config.max_step:
        log(f"{config.train_dir}: already trained to step {step} (--max_step "
            f"{config.max_step}); nothing to do")
        return step
    state = {"config": dataclasses.asdict(config)}
    if clips is not None:
        state["clips"] = clips.describe()
    train_step, sync = make_train_step(model, optimizer)
    rollout = compiled(model.rollout)
    losses, times = [], []
    bar = cli.progress(total=config.max_step, initial=step, unit="step", desc=config.model,
                       smoothing=0.05)
    events = Events(os.path.join(config.train_dir, "events"), step)
    with contextlib.closing(batches(config, step, clips)) as data, bar, \
            contextlib.closing(events):
        while step < config.max_step:
            # Up to the next log line, checkpoint or the end, each step is queued before the
            # last one's loss is read (`losses_of`); a checkpoint is written once all have run.
            stop = min(_next_multiple(step, config.log_every),
                       _next_multiple(step, config.save_every), config.max_step,
                       _next_multiple(step, config.keep_every or config.max_step))
            with dispatching_ahead():
                last = time.perf_counter()
                for loss in losses_of(train_step, data, stop - step):
                    now = time.perf_counter()
                    times.append(now - last)  # from one loss to the next: the whole step
                    last = now
                    if not np.isfinite(loss):
                        raise NonFiniteLoss(f"loss became {loss} at step {step + 1}; the last good "
                                            f"checkpoint in {config.train_dir} is kept")
                    losses.append(loss)
                    step += 1
                    bar.update(1)
            if step % config.log_every == 0 or step == config.max_step:
                _log_losses(bar, events, step, losses, times)
                losses, times = [], []
            if (step % config.save_every == 0 or step == config.max_step
                    or (config.keep_every and step % config.keep_every == 0)):
                sync()
                checkpoint.save(config.train_dir, step, model, optimizer,
                                {**state, "data": {"seed": config.seed, "next_step": step}})
                video.write_run_video(config, step, truth, rollout)
    return step


def _next_multiple(step, every):
    """The first multiple of `every` after `step`."""
    return (step // every + 1) * every


def _log_losses(bar, events, step, losses, times):
    mean_loss, ms = float(np.mean(losses)), 1e3 * float(np.median(times))
    events.scalars(step, loss=mean_loss, step_time_ms=ms)
    bar.set_postfix_str(f"loss {mean_loss:.1f}")
    bar.write(f"step {step:>7d}  loss {losses[-1]:8.1f}  mean {mean_loss:8.1f}  {ms:5.1f} ms/step")


def main(defaults, description, argv=None):
    """Entry point for the training scripts: returns the process exit code."""
    prog = os.path.basename(sys.argv[0])

    def body():
        config, clips = parse_flags(defaults, argv, description)
        step = train(config, clips)
        print(f"done: step {step}; checkpoints and videos in {config.train_dir}")
        return 0

    return cli.run_script(prog, body, "rerun the same command to resume from the last "
                          "checkpoint", failures=(NonFiniteLoss,))
