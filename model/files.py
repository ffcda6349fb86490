"""Writing files safely: every file lands whole or not at all, and a failed write is one
`CannotWrite` naming the file the user knows."""

import contextlib
import json
import os
import shutil
import tempfile

TEMPORARY = ".tmp-"  # name prefix of a file being written (`atomic_path`)
# `tempfile` makes its files and folders private (0600 / 0700); ours get the modes that
# `open` and `os.mkdir` would have given them. Reading the umask means setting it: put it back.
UMASK = os.umask(0o022)
os.umask(UMASK)


class CannotWrite(Exception):
    """A write that failed (full disk, no permission): one line naming the path and the cause."""


@contextlib.contextmanager
def writing(path):
    """Turn an `OSError` inside into `CannotWrite` naming `path`."""
    try:
        yield
    except OSError as error:
        cause = os.strerror(error.errno) if error.errno else str(error)
        raise CannotWrite(f"cannot write {path}: {cause}") from None


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success rename it over `path`, else remove it."""
    _, ext = os.path.splitext(path)
    fd, tmp = tempfile.mkstemp(prefix=TEMPORARY, suffix=ext, dir=os.path.dirname(path) or ".")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~UMASK)
    try:
        yield tmp
        fsync(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, data):
    """Write `data` as JSON to `path` atomically. Raises `CannotWrite`."""
    with writing(path), atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=2)


def write_all(writers):
    """Run `{path: write(tmp_path)}`; the files land only once all were written. Raises
    `CannotWrite` naming the file that failed."""
    folder = os.path.dirname(next(iter(writers))) or "."
    with writing(folder), contextlib.ExitStack() as stack:  # the renames at its end
        os.makedirs(folder, exist_ok=True)
        for path, write in writers.items():
            with writing(path):
                write(stack.enter_context(atomic_path(path)))


def fsync(path):
    """Flush a file's or a folder's data (a folder's: its entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def probe_writable(folder):
    """Make and remove a temporary folder in `folder`; raises `OSError` where that fails
    (`os.access` says yes to /proc and /sys for root)."""
    os.rmdir(tempfile.mkdtemp(prefix=TEMPORARY, dir=folder))


def remove_leftovers(folder, prefixes=(TEMPORARY,)):
    """Remove what a killed or failed write left in `folder`: names starting with `prefixes`."""
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if name.startswith(prefixes):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
