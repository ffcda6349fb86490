"""Atomic, self-describing checkpoints: weights, optimiser state, step and config.

A checkpoint is a folder `ckpt-0001000/` holding `model.weights.h5` (Keras's own
format, loadable with `model.load_weights`), `train_state.h5` (the optimiser's
variables and the model's non-trainable ones, such as the dropout seed, in order)
and `state.json` (step, config, data-stream state). It is
written under a temporary name and renamed into place, so a crash at any moment
leaves either the whole checkpoint or none of it; the next run removes what a killed save
left behind (`remove_leftovers`). Every write failure surfaces as one `CannotWrite`.

One process at a time writes a run folder: it holds `locked(folder)` while it does.
"""

import contextlib
import errno
import fcntl
import itertools
import json
import os
import re
import shutil
import tempfile

import h5py
import numpy as np

PATTERN = re.compile(r"^ckpt-(\d{7,})$")
DAMAGED = re.compile(r"^ckpt-\d{7,}\.damaged(-\d+)?$")  # checkpoints `set_aside`
LOCK = "train.lock"  # in a run folder while a process writes it; holds that process's ID
KEEP = 2  # complete checkpoints kept; older ones are removed after a new one lands
TEMPORARY = (".ckpt-", ".tmp-")  # name prefixes of unfinished checkpoints and files


def _read_umask():
    """The process's file-mode creation mask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# `tempfile` makes its files and folders private (0600 / 0700); ours get the modes that
# `open` and `os.mkdir` would have given them.
_UMASK = _read_umask()


class CannotWrite(Exception):
    """A write that failed (full disk, no permission): one line naming the path and the cause."""


@contextlib.contextmanager
def writing(path):
    """Turn an `OSError` inside into `CannotWrite` naming `path`, the file the user knows
    (not the temporary one the error names)."""
    try:
        yield
    except OSError as error:
        cause = os.strerror(error.errno) if error.errno else str(error)
        raise CannotWrite(f"cannot write {path}: {cause}") from None


class InUse(Exception):
    """A run folder that another process holds (`locked`)."""


@contextlib.contextmanager
def locked(folder):
    """Hold `folder`'s lock for the block, or raise `InUse` naming the process that holds it.

    An OS file lock (`flock`) on `folder/LOCK`: the kernel releases it however the holder ends,
    so a killed run never leaves a stale one. The file holds the holder's process ID and is
    removed as the lock is released."""
    path = os.path.join(folder, LOCK)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise InUse(f"{folder} is in use by another run (process {holder})") from None
        if _same_file(fd, path):
            break
        os.close(fd)  # the holder removed the file as it released it: lock a new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        os.close(fd)


def _same_file(fd, path):
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def probe_writable(folder):
    """Make and remove a temporary folder in `folder`; raises `OSError` where that fails
    (`os.access` says yes to /proc and /sys for root)."""
    os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=folder))


def save(train_dir, step, model, optimizer, state, keep_every=0):
    """Write checkpoint `step` into `train_dir` atomically; return its path. Then remove all
    but the newest `KEEP` checkpoints, except milestones: steps that are multiples of
    `keep_every` (0: none) stay for good. Raises `CannotWrite`; the checkpoints already there
    stay as they were."""
    final = os.path.join(train_dir, f"ckpt-{step:07d}")
    variables = _train_state(model, optimizer)
    with writing(final):
        tmp = tempfile.mkdtemp(prefix=TEMPORARY[0], dir=train_dir)
        try:
            os.chmod(tmp, 0o777 & ~_UMASK)
            _check_space(tmp, model.weights + variables)
            model.save_weights(os.path.join(tmp, "model.weights.h5"))
            with h5py.File(os.path.join(tmp, "train_state.h5"), "w") as f:
                for i, variable in enumerate(variables):
                    f.create_dataset(f"{i:04d}", data=np.asarray(variable.numpy()))
                    f[f"{i:04d}"].attrs["path"] = variable.path
            write_json(os.path.join(tmp, "state.json"), {"step": step, **state})
            for name in ("model.weights.h5", "train_state.h5"):  # write_json syncs its own
                _fsync(os.path.join(tmp, name))
            _fsync(tmp)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync(train_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    for old in list_checkpoints(train_dir)[:-KEEP]:
        if not (keep_every and step_of(old) % keep_every == 0):
            shutil.rmtree(old, ignore_errors=True)
    return final


def step_of(path):
    """The step of checkpoint folder `path` (`.../ckpt-0001000` -> 1000)."""
    return int(PATTERN.match(os.path.basename(path)).group(1))


def _check_space(folder, variables):
    """Raise ENOSPC unless `folder`'s disk holds `variables` twice over, with room for HDF5's
    headers: HDF5 can crash the process (exit 139) when the disk fills up in mid-write."""
    need = sum(2 * np.asarray(v).nbytes + 4096 for v in variables)
    if shutil.disk_usage(folder).free < need:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), folder)


def list_checkpoints(train_dir):
    """Complete checkpoint folders in `train_dir`, oldest first."""
    if not os.path.isdir(train_dir):
        return []
    names = sorted(n for n in os.listdir(train_dir) if PATTERN.match(n))
    return [os.path.join(train_dir, n) for n in names]


def remove_leftovers(folder):
    """Remove the temporary folders and files that a killed or failed save left in `folder`."""
    names = os.listdir(folder) if os.path.isdir(folder) else []
    for path in (os.path.join(folder, n) for n in names if n.startswith(TEMPORARY)):
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)


def set_aside(path):
    """Rename checkpoint folder `path` to `path.damaged` (or `.damaged-2`, ...), out of
    `list_checkpoints`' sight but kept for the user to inspect; return the new name."""
    for n in itertools.count(1):
        aside = f"{path}.damaged" + (f"-{n}" if n > 1 else "")
        if not os.path.exists(aside):
            os.rename(path, aside)
            return aside


def holds_run(folder):
    """Whether `folder` holds a checkpoint of ours (one set aside as damaged counts too)."""
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return any(os.path.isfile(os.path.join(folder, n, "state.json"))
               for n in names if PATTERN.match(n) or DAMAGED.match(n))


def read_state(path):
    """The `state.json` of checkpoint folder `path`. Raises `ValueError` unless it is an object
    with a `config` object and a `step` that is a whole number, the step of the folder's name
    where it has one: a value of the wrong type or range makes the checkpoint damaged."""
    with open(os.path.join(path, "state.json")) as f:
        state = json.load(f)
    step = state.get("step") if isinstance(state, dict) else None
    named = PATTERN.match(os.path.basename(path))
    if type(step) is not int or step < 0 or (named and int(named.group(1)) != step):
        raise ValueError(f"state.json: step {step!r} is not this checkpoint's step")
    if not isinstance(state.get("config"), dict):
        raise ValueError("state.json: no config")
    return state


def restore(path, model, optimizer=None):
    """Load weights (and optimiser variables) from checkpoint folder `path`; return its state."""
    state = read_state(path)
    model.load_weights(os.path.join(path, "model.weights.h5"))
    if optimizer is not None:
        variables = _train_state(model, optimizer)
        with h5py.File(os.path.join(path, "train_state.h5"), "r") as f:
            if len(f) != len(variables):
                raise ValueError(f"{path}: optimiser state does not match this model")
            for i, variable in enumerate(variables):
                variable.assign(f[f"{i:04d}"][()])
    return state


def _train_state(model, optimizer):
    """What a resumed run needs beyond the weights file."""
    return list(optimizer.variables) + list(model.non_trainable_variables)


def write_json(path, data):
    """Write `data` as JSON to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success rename it over `path`, else remove it."""
    root, ext = os.path.splitext(path)
    fd, tmp = tempfile.mkstemp(prefix=TEMPORARY[1], suffix=ext, dir=os.path.dirname(path) or ".")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fsync(path):
    """Flush a file's or a folder's data (a folder's: its entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
