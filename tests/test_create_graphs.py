import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest

import create_graphs
from model.training import CONV, CONV_LSTM, build, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOUND = 60.0  # summed squared error at step 0; a blank frame scores about 113 here


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    dirs = {}
    for config in (CONV_LSTM, CONV):
        train_dir = str(root / config.model)
        train(dataclasses.replace(config, train_dir=train_dir, batch_size=2, max_step=2,
                                  save_every=2), log=lambda _: None)
        dirs[config.model] = train_dir
    return dirs


def graphs(tiny_runs, out, *extra):
    return create_graphs.main([
        "--conv_lstm_dir", tiny_runs["conv_lstm"], "--conv_dir", tiny_runs["conv"],
        "--num_sequences", "7", "--batch_size", "3", "--horizon", "4", "--out", str(out), *extra,
    ])


def test_writes_csv_and_figures(tiny_runs, tmp_path):
    assert graphs(tiny_runs, tmp_path / "g") == 0
    lines = (tmp_path / "g.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:3] == ["step", "conv_lstm", "conv"]
    assert {"conv_lstm_ci95", "conv_psnr", "conv_lstm_ssim", "conv_ssim_ci95"} <= set(header)
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2", "3"]
    for name in ("g.png", "g_psnr_ssim.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_same_seed_same_csv(tiny_runs, tmp_path):
    assert graphs(tiny_runs, tmp_path / "a") == 0
    assert graphs(tiny_runs, tmp_path / "b") == 0
    assert graphs(tiny_runs, tmp_path / "c", "--seed", "5") == 0
    a, b, c = ((tmp_path / f"{n}.csv").read_text() for n in "abc")
    assert a == b and a != c


def test_missing_weights_name_the_training_command(tmp_path):
    out = subprocess.run(
        [sys.executable, "create_graphs.py", "--conv_lstm_dir", str(tmp_path / "none"),
         "--conv_dir", str(tmp_path / "none"), "--pretrained_dir", str(tmp_path / "none")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2
    assert "python main_conv_lstm.py" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_ssim_matches_definition():
    rng = np.random.default_rng(0)
    a = rng.random((2, 16, 16, 3))
    assert np.allclose(create_graphs.ssim(a, a), 1.0)
    noisy = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    assert np.all(create_graphs.ssim(a, noisy) < 0.9)
    # one 7x7 window: SSIM from its textbook formula with sample (ddof=1) statistics
    x, y = a[0, :7, :7, 0], noisy[0, :7, :7, 0]
    c1, c2 = 0.01**2, 0.03**2
    cov = np.cov(x.ravel(), y.ravel())
    want = ((2 * x.mean() * y.mean() + c1) * (2 * cov[0, 1] + c2)) / (
        (x.mean() ** 2 + y.mean() ** 2 + c1) * (cov[0, 0] + cov[1, 1] + c2))
    got = create_graphs.ssim(x[None, :, :, None], y[None, :, :, None])
    np.testing.assert_allclose(got, [want], rtol=1e-6)


@pytest.mark.parametrize("name,config", [("conv_lstm", CONV_LSTM), ("conv", CONV)])
def test_shipped_weights_predict_well(name, config):
    path = os.path.join(ROOT, "checkpoints", "pretrained", name)
    trained, step = create_graphs.load(name, path)
    untrained, _ = build(config)
    models = {name: trained}
    errors = create_graphs.evaluate(models, 60, 2, 1, 60)[name]["sse"][:, 0].mean()
    blank = create_graphs.evaluate({name: untrained}, 60, 2, 1, 60)[name]["sse"][:, 0].mean()
    assert step >= 1000 and errors < BOUND < blank
