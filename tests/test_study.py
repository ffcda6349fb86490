"""Milestone checkpoints (`--keep_every`), evaluating a chosen checkpoint, and the reproduction
study on tiny runs."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import reproduction_study as study
from model import checkpoint, evaluation
from conftest import TINY
from model.training import CONV, UsageError, main



def steps_in(train_dir):
    return [checkpoint.step_of(p) for p in checkpoint.list_checkpoints(train_dir)]


@pytest.fixture(scope="module")
def runs(tiny_runs):
    """The shared tiny runs (`conftest.py`): checkpoints at 2 and 4 (milestones), 3, 5."""
    return Path(tiny_runs["conv"]).parent


@pytest.fixture(scope="module")
def study_dir(runs, tmp_path_factory):
    """The runs' milestones as a study's seed 0 and seed 1 (copies)."""
    root = tmp_path_factory.mktemp("study")
    for name in evaluation.MODELS:
        for seed in (0, 1):
            for step in (2, 4):
                shutil.copytree(runs / name / f"ckpt-{step:07d}",
                                root / name / f"seed{seed}" / f"ckpt-{step:07d}")
    return root


def test_milestones_survive_the_keep_rule(runs):
    # saves at 2 (milestone), 3, 4 (milestone), 5: the newest two are 4 and 5
    assert steps_in(runs / "conv") == [2, 4, 5]


def test_damaged_milestone_is_set_aside_like_any_other(runs, tmp_path, capsys):
    run = shutil.copytree(runs / "conv", tmp_path / "run")
    shutil.rmtree(run / "ckpt-0000005")  # the milestone at 4 is now the newest
    weights = run / "ckpt-0000004" / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:100])
    flags = ["--train_dir", run, "--max_step", 6, *[f"--{k}={v}" for k, v in TINY.items()]]
    assert main(CONV, "", [str(f) for f in flags]) == 0
    out = capsys.readouterr().out
    assert "ckpt-0000004 does not load" in out and "resuming from step 2" in out
    assert (run / "ckpt-0000004.damaged").is_dir()
    assert steps_in(run) == [2, 4, 6]  # 4 trained again and kept as a milestone


def test_load_run_picks_a_chosen_checkpoint(runs):
    run = str(runs / "conv_lstm")
    assert evaluation.load_run("conv_lstm", run)[::2] == (os.path.join(run, "ckpt-0000005"), 5)
    assert evaluation.load_run("conv_lstm", run, step=2)[::2] == (
        os.path.join(run, "ckpt-0000002"), 2)
    with pytest.raises(UsageError, match=r"no checkpoint at step 3 \(it has: 2, 4, 5\)"):
        evaluation.load_run("conv_lstm", run, step=3)
    with pytest.raises(evaluation.WrongModel, match="holds the 'ConvLSTM' model, not 'conv'"):
        evaluation.load_run("conv", run)


def test_dropped_out_keeps_and_scales():
    frames = np.ones((4, 5, 32, 32, 3), np.float32)
    dropped = evaluation.dropped_out(frames, 0.8, np.random.default_rng(0))
    assert set(np.unique(dropped)) == {0.0, np.float32(1 / 0.8)}
    assert abs(np.mean(dropped == 0) - 0.2) < 0.01


def test_evaluation_with_input_dropout():
    """With `keep_prob` the models see their true frames through dropout (masks drawn from
    `[seed, 1]`), and are scored against the clean clips."""
    shipped = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "checkpoints", "pretrained")
    models = {n: evaluation.load(n, os.path.join(shipped, n))[0] for n in evaluation.MODELS}
    results = evaluation.evaluate(models, 4, 2, 7, 4, quality=False, keep_prob=0.8)
    clips = evaluation.eval_clips(4, 2, np.random.default_rng(7))
    seen = evaluation.dropped_out(clips[:, :evaluation.CONTEXT], 0.8, np.random.default_rng([7, 1]))
    want = models["conv_lstm"].rollout(seen, 3)[:, :2]
    np.testing.assert_allclose(results["conv_lstm"]["sse"], np.sum(
        (np.asarray(want) - clips[:, 5:7]) ** 2, axis=(-3, -2, -1)), rtol=1e-4)
    clean = evaluation.evaluate(models, 4, 2, 7, 4, quality=False)
    assert np.all(np.abs(results["conv"]["sse"] / clean["conv"]["sse"] - 1) > 1e-3)


def test_original_read_off_its_pixels():
    """Within a pixel (625) of the reading in the project's reference notes; hidden steps NaN."""
    original = study.read_original()
    np.testing.assert_allclose(original["conv_lstm"][[3, 5, 7]], [40_300, 73_400, 115_300],
                               atol=625)
    np.testing.assert_allclose(original["conv"][[3, 5, 7]], [64_700, 122_800, 180_900], atol=625)
    assert np.all(np.isnan(original["conv_lstm"][18:]))  # behind the legend
    assert not np.any(np.isnan(original["conv"][:18]))
    ratio = original["conv"] / original["conv_lstm"]
    assert np.argmax(ratio[:18]) == 5 and np.all(np.diff(ratio[5:18]) < 0)  # one peak, at 5


def run_study(study_dir, out):
    return study.main(["--study_dir", str(study_dir), "--num_sequences", "3", "--horizon", "8",
                       "--batch_size", "3", "--variants_at", "4", "--out", str(out)])


def read_csv(path):
    lines = path.read_text().splitlines()
    return lines[0].split(","), [line.split(",") for line in lines[1:]]


def test_study_csv(study_dir, tmp_path, monkeypatch):
    """Rows for every checkpoint, seed, variant, alignment and prediction step; the clean rows
    are `evaluation.evaluate`'s mean errors; a second run writes the same bytes."""
    from model import train_step

    # eager rollouts: 3 sequences do not repay tracing a graph per model (20 s)
    monkeypatch.setattr(train_step, "compiled_rollout", lambda model: model.rollout)
    assert run_study(study_dir, tmp_path / "s") == 0
    assert sorted(os.listdir(tmp_path)) == ["s.csv", "s.png"]
    header, rows = read_csv(tmp_path / "s.csv")
    assert header == ["source", "train_step", "seed", "variant", "alignment", "pred_step",
                      "conv_lstm", "conv", "ratio"]
    original = [r for r in rows if r[0] == "original_2016_pixels"]
    assert len(original) == 24
    ours = {tuple(r[1:6]): [float(x) for x in r[6:]] for r in rows if r[0] == "ours"}
    # milestones 2 and 4 of seeds 0 and 1; the dropout variants only at 4
    assert {k[:3] for k in ours} == {(s, seed, v) for s in ("2", "4") for seed in "01"
                                     for v in study.VARIANTS if s == "4" or "dropout" not in v}
    assert len(ours) == (2 + 4) * 2 * 2 * 8  # variants x seeds x alignments x steps
    for lstm, conv, ratio in ours.values():
        assert ratio == pytest.approx(conv / lstm, rel=5e-5)  # each written to 6 digits
    for key, (lstm, conv, _) in ours.items():
        if key[2] == "clipped":  # clipping to [0, 1] only moves a prediction towards the truth
            clean = ours[(key[0], key[1], "clean", *key[3:])]
            assert lstm <= clean[0] * (1 + 1e-6) and conv <= clean[1] * (1 + 1e-6)

    models = {n: evaluation.load(n, study_dir / n / "seed1" / "ckpt-0000002")[0]
              for n in evaluation.MODELS}
    results = evaluation.evaluate(models, 3, 8, 2016, 3, quality=False)
    table, original = study.read_csv(tmp_path / "s.csv")  # back as the study holds it
    for alignment, suffix in (("2016", "_2016"), ("our", "")):
        got = [ours[("2", "1", "clean", alignment, str(k))][:2] for k in range(8)]
        want = [results["conv_lstm" + suffix]["sse"].mean(0), results["conv" + suffix]["sse"].mean(0)]
        np.testing.assert_allclose(np.array(got).T, want, rtol=1e-5)
        np.testing.assert_allclose(table[2, 1, "clean", alignment], want, rtol=1e-5)
    assert len(table) == len(ours) // 8
    np.testing.assert_allclose(original["conv"], study.read_original()["conv"], rtol=1e-5)

    assert run_study(study_dir, tmp_path / "again" / "s") == 0
    assert (tmp_path / "s.csv").read_bytes() == (tmp_path / "again" / "s.csv").read_bytes()


def test_study_without_pairs_is_one_line(tmp_path, capsys):
    (tmp_path / "conv" / "seed0").mkdir(parents=True)
    assert run_study(tmp_path, tmp_path / "s") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no seed pair" in err[0] and not (tmp_path / "s.csv").exists()


def test_each_variant_reads_its_own_evaluation(monkeypatch):
    """clean/clipped: no dropout, raw/clipped error; dropout variants: keep 0.8, likewise."""
    def fake_evaluate(models, n, horizon, seed, batch_size, quality, keep_prob):
        base = 10.0 if keep_prob == study.EVAL_KEEP_PROB else 1.0
        return {s: {"sse": np.full((n, horizon), base), "sse_clipped": np.full((n, horizon), 2 * base)}
                for s in evaluation.SERIES}

    monkeypatch.setattr(study, "evaluate", fake_evaluate)
    monkeypatch.setattr(study, "load", lambda name, path: (None, 0))
    args = study.parse_flags(["--num_sequences", "2", "--horizon", "3"])
    means = study.evaluate_pair({"conv_lstm": "a", "conv": "b"}, args, study.VARIANTS)
    want = {"clean": 1, "clipped": 2, "dropout": 10, "dropout_clipped": 20}
    for (variant, alignment), curves in means.items():
        np.testing.assert_array_equal(curves, np.full((2, 3), want[variant]))
    assert len(means) == 8
