"""Atomic, self-describing checkpoints, which of them are kept, and the lock on a run folder.

A checkpoint is a folder `ckpt-0001000/` holding `model.weights.h5` (Keras's own format),
`train_state.h5` (the optimiser's variables and the model's non-trainable ones, such as the
dropout seed, in order) and `state.json` (step, config, data stream). It is written under a
temporary name, synced and renamed into place: a crash leaves the whole checkpoint or none."""

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile

import h5py
import numpy as np

from model.files import UMASK, fsync, write_json, writing

PATTERN = re.compile(r"^ckpt-(\d{7,})$")
DAMAGED = re.compile(r"^ckpt-\d{7,}\.damaged$")  # checkpoints `set_aside`
LOCK = "train.lock"  # holds the ID of the process that holds the run folder's lock
KEEP = 2  # complete checkpoints kept besides milestones; older ones go once a new one lands
TEMPORARY = ".ckpt-"  # name prefix of a checkpoint being written


class Damaged(Exception):
    """A checkpoint that does not load: a missing, truncated or mismatched file."""


class InUse(Exception):
    """A run folder that another process holds (`locked`)."""


@contextlib.contextmanager
def locked(folder):
    """Hold `folder`'s lock for the block, or raise `InUse` naming the process that holds it.

    An OS lock (`flock`) on the folder itself, which the kernel releases however the holder
    ends, `kill -9` included, and which no file operation inside the folder can undo;
    `folder/LOCK` only tells a second run who holds it."""
    path = os.path.join(folder, LOCK)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = "unknown"
            with contextlib.suppress(OSError), open(path) as f:
                holder = f.read(32).strip() or holder
            raise InUse(f"{folder} is in use by another run (process {holder})") from None
        with writing(path), open(path, "w") as f:
            f.write(f"{os.getpid()}\n")
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    finally:
        os.close(fd)


def save(train_dir, step, model, optimizer, state):
    """Write checkpoint `step` into `train_dir` atomically and return its path. Then remove all
    but the newest `KEEP` checkpoints that are not milestones (`is_milestone`). Raises
    `CannotWrite`; the checkpoints already there stay."""
    final = os.path.join(train_dir, f"ckpt-{step:07d}")
    variables = _train_state(model, optimizer)
    with writing(final):
        tmp = tempfile.mkdtemp(prefix=TEMPORARY, dir=train_dir)
        try:
            os.chmod(tmp, 0o777 & ~UMASK)
            # twice the variables' size free, or HDF5 may crash (exit 139) on a full disk
            need = sum(2 * np.asarray(v).nbytes + 4096 for v in model.weights + variables)
            if shutil.disk_usage(tmp).free < need:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)
            model.save_weights(os.path.join(tmp, "model.weights.h5"))
            with h5py.File(os.path.join(tmp, "train_state.h5"), "w") as f:
                for i, variable in enumerate(variables):
                    f.create_dataset(f"{i:04d}", data=np.asarray(variable.numpy()))
            write_json(os.path.join(tmp, "state.json"), {"step": step, **state})
            for name in ("model.weights.h5", "train_state.h5"):  # write_json syncs its own
                fsync(os.path.join(tmp, name))
            fsync(tmp)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(tmp, final)
            fsync(train_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    for old in list_checkpoints(train_dir)[:-KEEP]:
        if not is_milestone(old):
            shutil.rmtree(old, ignore_errors=True)
    return final


def is_milestone(path):
    """Whether checkpoint `path` is kept for good: its step a multiple of the `keep_every` of the
    run that saved it (recorded in its config), whatever later runs' flag says."""
    try:
        state = read_state(path)
    except Damaged:
        return False
    every = state["config"].get("keep_every", 0)
    return bool(every) and state["step"] % every == 0


def step_of(path):
    """The step of checkpoint folder `path` (`.../ckpt-0001000` -> 1000)."""
    return int(PATTERN.match(os.path.basename(path)).group(1))


def list_checkpoints(train_dir):
    """Complete checkpoint folders in `train_dir`, oldest first."""
    names = os.listdir(train_dir) if os.path.isdir(train_dir) else []
    return [os.path.join(train_dir, n) for n in sorted(names) if PATTERN.match(n)]


def set_aside(path):
    """Rename checkpoint folder `path` to `path.damaged`, out of `list_checkpoints`' sight but
    kept for the user to inspect (replacing an earlier one of that step); return the new name."""
    aside = f"{path}.damaged"
    shutil.rmtree(aside, ignore_errors=True)
    os.rename(path, aside)
    return aside


def remove_run(train_dir, others):
    """Where `train_dir` holds a checkpoint of ours (a damaged one counts), remove checkpoints,
    damaged ones and, in each subfolder of `others` (`{name: pattern}`), the files matching its
    pattern, and the subfolder if emptied; nothing else. Returns the count; raises `CannotWrite`."""
    names = os.listdir(train_dir) if os.path.isdir(train_dir) else []
    if not any(os.path.isfile(os.path.join(train_dir, n, "state.json"))
               for n in names if PATTERN.match(n) or DAMAGED.match(n)):
        return 0
    removed = 0
    for sub, pattern in [("", PATTERN), ("", DAMAGED), *others.items()]:
        folder = os.path.join(train_dir, sub)
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            path = os.path.join(folder, name)
            if pattern.match(name):
                with writing(path):
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
                removed += 1
        if sub in others:
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only if empty
    return removed


def read_state(path):
    """The `state.json` of checkpoint folder `path`: an object with a whole-number `step` and
    a `config` object. Raises `Damaged` otherwise."""
    try:
        with open(os.path.join(path, "state.json")) as f:
            state = json.load(f)
        step, config = state["step"], state["config"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise Damaged(f"state.json: {error}") from None
    if type(step) is not int or step < 0 or not isinstance(config, dict):
        raise Damaged(f"state.json: step {step!r} or config {config!r} is not one")
    return state


def restore(path, model, optimizer=None):
    """Load weights (and the optimiser's variables) from checkpoint folder `path` into `model`,
    built as the checkpoint's config says; return its `read_state`. Raises `Damaged`."""
    try:
        model.load_weights(os.path.join(path, "model.weights.h5"))
        if optimizer is not None:
            variables = _train_state(model, optimizer)
            with h5py.File(os.path.join(path, "train_state.h5"), "r") as f:
                if len(f) != len(variables):
                    raise ValueError("train_state.h5 does not match this model")
                for i, variable in enumerate(variables):
                    variable.assign(f[f"{i:04d}"][()])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise Damaged(str(error).split("\n")[0] or type(error).__name__) from None
    return read_state(path)


def weights_of(path, marks, otherwise):
    """Which model checkpoint `path`'s weights file holds: `marks[layer]` for the first of its
    layers in `marks`, else `otherwise`; None where it cannot be read."""
    try:
        with h5py.File(os.path.join(path, "model.weights.h5"), "r") as f:
            return next((marks[name] for name in f if name in marks), otherwise)
    except OSError:
        return None


def _train_state(model, optimizer):
    """What a resumed run needs beyond the weights file."""
    return list(optimizer.variables) + list(model.non_trainable_variables)
