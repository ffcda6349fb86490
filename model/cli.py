"""What every script shares at the command line: flags, one-line errors, exit codes
(`EXIT_CODES`; SIGTERM is handled as Ctrl-C is, so `finally` blocks run), progress."""

import argparse
import dataclasses
import os
import signal
import sys

from tqdm import tqdm

from model.files import CannotWrite, probe_writable
from systems.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # default folders are in it
SEED_RANGE = (0, 2**32 - 1)  # what NumPy's and Keras's seeding accept
EXIT_CODES = ("Exit codes: 0 done, 1 a write failed or training diverged, 2 a bad flag, file or "
              "folder, 130 Ctrl-C, 143 SIGTERM.")


class UsageError(Exception):
    """A bad flag, file or folder: reported as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """An argument parser that raises `UsageError` instead of printing usage and exiting."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    def error(self, message):
        raise UsageError(message)


def flag(default, text, **metadata):
    """A dataclass field that `add_fields` makes a flag of, with help `text`."""
    return dataclasses.field(default=default, metadata={"help": text, **metadata})


def add_fields(parser, defaults, skip=(), only=None):
    """A flag per field of the dataclass `defaults` (those in `only`, where given), its help the
    field's `metadata["help"]` and its default the field's value; booleans are switches."""
    for field in dataclasses.fields(defaults):
        if field.name in skip or (only is not None and field.name not in only):
            continue
        value, text = getattr(defaults, field.name), field.metadata["help"]
        if field.type is bool:
            parser.add_argument(f"--{field.name}", action="store_true", default=value, help=text)
        else:
            kind = field.metadata.get("type", type(value))
            shown = "" if value is None else " (default: %(default)s)"
            parser.add_argument(f"--{field.name}", type=kind, default=value, help=text + shown)


def check_positive(values, at_least=1):
    """Raise `UsageError` naming the first of `{flag: value}` below `at_least`."""
    for name, value in values.items():
        if value < at_least:
            raise UsageError(f"--{name} must be an integer of at least {at_least}, got {value}")


def check_seed(seed):
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise UsageError(f"--seed must be in {SEED_RANGE[0]}..{SEED_RANGE[1]}, got {seed}")


def check_folder(flag, folder, given=None):
    """Raise `UsageError` unless `folder` is a usable folder name: not empty, not a file, and
    its nearest existing parent writable. The message names the flag's value `given`."""
    given = folder if given is None else given
    if not folder.strip():
        raise UsageError(f"--{flag} is empty: name a folder")
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        if os.path.islink(path):
            raise UsageError(f"--{flag} {given!r}: {path} is a link to nowhere")
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise UsageError(f"--{flag} {given!r}: {path} is a file, not a folder")
    try:
        probe_writable(path)
    except OSError as error:
        raise UsageError(f"--{flag} {given!r} is not writable "
                         f"({path}: {error.strerror or error})") from None


def out_prefix(out, default_name):
    """`--out` as a path prefix: a folder (an existing one, or a name ending in a separator)
    gets `default_name` inside it. Raises `UsageError` where it cannot be written."""
    if out.endswith(os.sep) or os.path.isdir(out):
        out = os.path.join(out, default_name)
    check_folder("out", os.path.dirname(os.path.abspath(out)), out)
    return out


def progress(**kwargs):
    """A tqdm bar: live on a terminal; in a log, a line every 30 seconds."""
    return tqdm(dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 30, **kwargs)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it ends as Ctrl-C does."""


def run_script(prog, body, then, failures=()):
    """`body()`'s exit code (`EXIT_CODES`), with each way out a line on stderr: 2 for
    `UsageError` and the data's `DataError`, 1 for `files.CannotWrite` and `failures`, 130 /
    143 on Ctrl-C / SIGTERM, after which `then` says what to do next."""
    def terminate(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        try:
            return body()
        finally:
            signal.signal(signal.SIGTERM, previous)
    except (UsageError, DataError, CannotWrite, *failures) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, (UsageError, DataError)) else 1
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        print(f"\n{prog}: {'terminated' if terminated else 'interrupted'}; {then}",
              file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
