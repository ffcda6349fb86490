"""Training both predictors: flags, resume, and the loop.

`main_conv_lstm.py` and `main_conv.py` differ only in their config's defaults (`config.MODELS`).
"""

import argparse
import contextlib
import dataclasses
import os
import sys
import time

import numpy as np

from model import checkpoint, cli, files, runs, video
from model.backend import compiled, dispatching_ahead, losses_of, make_train_step
from model.cli import UsageError
from model.config import MODELS, NOT_COMPARED, RESUMABLE, TrainConfig, check_values
from model.data import batches, open_source, video_clip
from model.events import EVENTS_NAME, Events

EPILOG = (
    "Rerunning with the same --train_dir resumes from its newest complete checkpoint, with "
    f"the data an uninterrupted run would have seen. On resume only "
    f"{', '.join('--' + n for n in RESUMABLE)} may change, and --data may name the same file "
    f"moved; pass --fresh to start over. One run at a time per --train_dir. {cli.EXIT_CODES}"
)
BASE_MEMORY, BYTES_PER_VALUE = 1e9, 52  # a run's peak memory at width 1, batch 16 to 4,096


def parse_flags(defaults, argv=None, description=None):
    """`TrainConfig` from command-line flags over `defaults`, every value checked (Keras-free).
    Raises `UsageError`."""
    parser = cli.Parser(description=description, epilog=EPILOG)
    defaults = dataclasses.replace(defaults, train_dir=os.path.join(cli.REPO, defaults.train_dir))
    cli.add_fields(parser, defaults, skip=("model",))
    unset = object()  # argparse keeps a value the namespace already holds for a flag not given
    names = [f.name for f in dataclasses.fields(defaults) if f.name != "model"]
    args = parser.parse_args(argv, argparse.Namespace(**dict.fromkeys(names, unset)))
    given = {name: value for name, value in vars(args).items() if value is not unset}
    config = dataclasses.replace(defaults, **given)
    check_values(config, given)
    _check_train_dir(config.train_dir)
    return config


def _check_train_dir(train_dir):
    cli.check_folder("train_dir", train_dir)
    if os.path.isfile(os.path.join(train_dir, "state.json")):
        raise UsageError(
            f"--train_dir {train_dir!r} is one checkpoint, not a run folder; to train on from "
            f"it, copy it into a new one: mkdir -p runs/mine && cp -r {train_dir} "
            f"runs/mine/ckpt-{checkpoint.read_state(train_dir)['step']:07d}, then --train_dir "
            "runs/mine with its flags")


def _check_memory(config, frame_shape):
    """Raise `UsageError` where the run would need more memory than is available."""
    values = config.batch_size * config.seq_length * np.prod(frame_shape)
    need = BASE_MEMORY + BYTES_PER_VALUE * config.width * values  # activations grow with width
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        available = next(int(line.split()[1]) * 1024 for line in f if "MemAvailable" in line)
        if need > available:
            raise UsageError(f"--batch_size {config.batch_size} would need about "
                             f"{need / 1e9:,.1f} GB of memory, more than the "
                             f"{available / 1e9:.1f} GB available")


def _recorded_layout(train_dir):
    """The data layout the newest readable checkpoint of `train_dir` recorded, or None."""
    for path in reversed(checkpoint.list_checkpoints(train_dir)):
        with contextlib.suppress(checkpoint.Damaged):
            return checkpoint.read_state(path).get("clips", {}).get("layout")
    return None


def _resume(config, source, log):
    """`(step, model, optimizer)` from the newest checkpoint that loads (newer ones set aside,
    so that `checkpoint.save` never counts them among those it keeps), or step 0. Raises
    `UsageError` where the folder holds another run."""
    damaged = []
    found = runs.newest(config.train_dir, lambda path, error: damaged.append((path, error)),
                        with_optimizer=True)
    for path, error in damaged:  # only once one loads: else the user decides (--fresh)
        log(f"warning: {path} does not load ({error}); moved aside to "
            f"{checkpoint.set_aside(path)}")
    if found is None:
        model = runs.build(config, source.frame_shape)
        return 0, model, runs.build_optimizer(config, model)
    _check_same_run(config, found, source.describe(), log)
    log(f"resuming from step {found.step} ({found.path})")
    return found.step, found.model, found.optimizer


def _check_same_run(config, found, data, log):
    """Raise `UsageError` unless `found` (a checkpoint) is the run `config` continues, on the
    same data (`data`: its description), wherever the file now lies."""
    saved = found.config
    if saved.model != config.model:
        raise UsageError(f"--train_dir {config.train_dir!r} holds a {saved.model!r} run, "
                         f"not {config.model!r}; use another --train_dir")
    fixed = [f.name for f in dataclasses.fields(config) if f.name not in NOT_COMPARED + RESUMABLE]
    differ = [f"--{n} {getattr(config, n)} (saved: {getattr(saved, n)})"
              for n in fixed if getattr(saved, n) != getattr(config, n)]
    if differ:
        raise UsageError(f"--train_dir {config.train_dir!r} holds a run with other settings: "
                         f"{', '.join(differ)}; pass --fresh to start over, or use another "
                         "--train_dir")
    if data.get("fingerprint") != found.data.get("fingerprint"):
        recorded = found.data.get("path", "the bouncing balls")
        what = (runs.data_changes(found.data, data) if "fingerprint" in found.data and
                "fingerprint" in data else f"not {data.get('path', 'the bouncing balls')}")
        raise UsageError(f"--train_dir {config.train_dir!r} was trained on {recorded}: "
                         f"{what}; train on that data, or use another --train_dir")
    if data.get("path") != found.data.get("path"):
        log(f"the run's clips file is now {data['path']} (was {found.data['path']}: the same "
            "content)")


class NonFiniteLoss(Exception):
    pass


def train(config, log=print):
    """Train `config.model` to `config.max_step` on its source of clips, resuming from the
    newest checkpoint, holding the folder's lock throughout. Returns the step reached. Raises
    `NonFiniteLoss` or `files.CannotWrite` (the last complete checkpoint is kept), `UsageError`
    (the folder in use, or holding another run) and `DataError` (the data)."""
    source = open_source(config, None if config.fresh else _recorded_layout(config.train_dir), log)
    _check_memory(config, source.frame_shape)
    with files.writing(config.train_dir):
        os.makedirs(config.train_dir, exist_ok=True)
    try:
        with checkpoint.locked(config.train_dir):  # raises `InUse` on entry only
            return _train(config, source, log)
    except checkpoint.InUse as error:
        raise UsageError(f"--train_dir {error}: wait for it to end, or use another "
                         "--train_dir") from None


def _train(config, source, log):
    if config.fresh:
        removed = checkpoint.remove_run(config.train_dir, {"videos": video.VIDEO_NAME,
                                                           "events": EVENTS_NAME})
        log(f"--fresh: removed {removed} checkpoints, videos and event files of ours from "
            f"{config.train_dir}")
    for folder in (config.train_dir, os.path.join(config.train_dir, "videos")):
        files.remove_leftovers(folder, (checkpoint.TEMPORARY, files.TEMPORARY))
    step, model, optimizer = _resume(config, source, log)
    truth = video_clip(source, config.seed)
    if step and not os.path.exists(video.path(config.train_dir, step)):  # killed before it
        video.write_run_video(config, step, truth, model.rollout)
    if step >= config.max_step:
        log(f"{config.train_dir}: already trained to step {step} (--max_step "
            f"{config.max_step}); nothing to do")
        return step
    state = {"config": dataclasses.asdict(config), "clips": source.describe()}
    train_step, sync = make_train_step(model, optimizer)
    rollout = compiled(model.rollout)
    losses, times = [], []
    bar = cli.progress(total=config.max_step, initial=step, unit="step", desc=config.model,
                       smoothing=0.05)
    events = Events(os.path.join(config.train_dir, "events"), step)
    with contextlib.closing(batches(source, config, step)) as data, bar, \
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
        config = parse_flags(defaults, argv, description)
        step = train(config)
        print(f"done: step {step}; checkpoints and videos in {config.train_dir}")
        return 0

    return cli.run_script(prog, body, "rerun the same command to resume from the last "
                          "checkpoint", failures=(NonFiniteLoss,))
