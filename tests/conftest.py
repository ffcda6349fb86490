import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from model import runtime  # noqa: E402

runtime.setup()

TINY = dict(batch_size=2, save_every=3, log_every=1, keep_every=2)  # flags of `tiny_runs`


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """`{model: train_dir}`: tiny runs of both models (batch 2, steps 1-5), checkpoints at 2
    and 4 (milestones, `keep_every` 2), 3 and 5 (`save_every` 3); the newest two kept."""
    import dataclasses

    from model.training import CONV, CONV_LSTM, train

    root = tmp_path_factory.mktemp("tiny_runs")
    dirs = {}
    for config in (CONV_LSTM, CONV):
        dirs[config.model] = str(root / config.model)
        train(dataclasses.replace(config, train_dir=dirs[config.model], max_step=5, **TINY),
              log=lambda _: None)
    return dirs
