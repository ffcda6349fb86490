"""Fixtures every test file shares. Each tiny training run is made once per test session, in a
folder all pytest-xdist workers share, and copied where a test changes it."""

import dataclasses
import fcntl
import os
import shutil

import pytest

from model import runtime

runtime.setup()  # first, as every script does

from model.config import MODELS  # noqa: E402
from model.training import train  # noqa: E402
from tests.helpers import rerun, steps_in  # noqa: E402

TINY = dict(batch_size=2, save_every=3, log_every=1, keep_every=2)  # flags of `tiny_runs`


def shared(tmp_path_factory, name, build):
    """`folder/name`, made by `build(path)` once for the whole session: the first worker to
    ask builds it while the others wait, then all read it."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, above each worker's own
    target = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / f"{name}.done").exists():
            shutil.rmtree(target, ignore_errors=True)
            build(target)
            (root / f"{name}.done").touch()
    return target


def tiny_config(name, train_dir, **changes):
    """The `name` model's defaults for a tiny run in `train_dir`: batch 2, steps 1-5."""
    return dataclasses.replace(MODELS[name].defaults, train_dir=str(train_dir),
                               **{"max_step": 5, **TINY, **changes})


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """`{model: train_dir}`: tiny runs of both models (batch 2, steps 1-5), checkpoints at 2
    and 4 (milestones, `keep_every` 2), 3 and 5 (`save_every` 3); the newest two kept."""
    def build(root):
        for name in MODELS:
            train(tiny_config(name, root / name), log=lambda _: None)

    root = shared(tmp_path_factory, "tiny_runs", build)
    return {name: str(root / name) for name in MODELS}


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """A finished tiny conv run (`helpers.rerun`'s flags): steps 1-4, checkpoints at 2 and 4."""
    def build(train_dir):
        assert rerun(train_dir) == 0
        assert steps_in(train_dir) == [2, 4]

    return shared(tmp_path_factory, "finished", build)


@pytest.fixture
def run_dir(finished, tmp_path):
    """A copy of the finished run, to change or damage."""
    return shutil.copytree(finished, tmp_path / "run")
