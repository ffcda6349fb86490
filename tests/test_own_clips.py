"""Both models on a user's clips file (`--data`): training on its true clips whatever the layout,
resume and evaluation following the data rather than its name, the graphs and their baselines,
and every bad file or flag refused in one line before anything is written."""

import dataclasses
import json
import os
import shutil
import zipfile

import numpy as np
import pytest

import create_graphs
from model import checkpoint, data, runs, video
from model.backend import make_train_step
from model.cli import UsageError
from model.config import MODELS
from model.training import parse_flags
from systems import clip_file
from systems.clip_file import Clips, measure_layout, open_clips
from tests.helpers import ROOT, files, one_line, probe, rerun, save_clips, waves
from tests.test_clip_file import BAD

CONV = MODELS["conv"].defaults
NOISE = np.random.default_rng(0).integers(0, 256, (16, 20, 8, 8), np.uint8)  # no axis is time


def squares(n, t, side=16, seed=0):
    """uint8 clips `(n, t, side, side)`: a white 4x4 square moving one pixel right a frame from a
    random start, on black."""
    clips = np.zeros((n, t, side, side), np.uint8)
    for i, (y, x) in enumerate(np.random.default_rng(seed).integers(0, side // 2, (n, 2))):
        for k in range(t):
            clips[i, k, y : y + 4, (x + k) % (side - 4) :][:, :4] = 255
    return clips


def sse(prediction, truth):
    """The squared error summed over each frame, averaged over the clips: `(steps,)`."""
    return np.square(prediction - truth).sum(axis=(-3, -2, -1)).mean(axis=0)


def graphs(out, *flags):
    return create_graphs.main([*map(str, flags), "--out", str(out)])


@pytest.fixture(scope="module")
def clips_file(tmp_path_factory):
    """`(path, clips)`: 20 gray 8x8 clips of 10 frames stored clips first, the 2 held out darker
    than the rest, so that a mean frame over all clips would show."""
    clips = waves(20, 10)
    clips[18:] //= 2
    return save_clips(tmp_path_factory.mktemp("clips") / "clips.npy", clips), clips


@pytest.fixture(scope="module")
def clip_runs(tmp_path_factory, clips_file):
    """`{model: train_dir}` on `clips_file` (`helpers.rerun`'s flags, checkpoints at 2 and 4);
    the ConvLSTM reads 3 true frames."""
    root = tmp_path_factory.mktemp("clip_runs")
    flags = {"conv_lstm": ["--seq_start", 3, "--seq_length", 6], "conv": []}
    for name in MODELS:
        assert rerun(root / name, "--data", clips_file[0], *flags[name], model=name) == 0
    return {name: str(root / name) for name in MODELS}


@pytest.fixture(scope="module")
def noise_runs(tmp_path_factory):
    """`(path, {model: train_dir})`: both models to step 2 on `NOISE` with --time_major, so
    read as 20 clips of 16 frames: the file does not show its layout, the runs record it."""
    root = tmp_path_factory.mktemp("noise_runs")
    path = save_clips(root / "noise.npy", NOISE)
    for name in MODELS:
        assert rerun(root / name, "--data", path, "--time_major", "--max_step", 2, model=name) == 0
    return path, {name: str(root / name) for name in MODELS}


def test_a_file_stored_time_first_trains_on_its_clips_without_the_flag(tmp_path, monkeypatch,
                                                                        capsys):
    clips = waves(16, 8, side=16, channels=3)  # 14 training clips, 2 held out
    path = save_clips(tmp_path / "rgb.npy", clips, time_major=True)
    batches, batch = [], Clips.batch

    def recorded(*args):
        batches.append(batch(*args))
        return batches[-1]

    monkeypatch.setattr(Clips, "batch", recorded)
    assert rerun(tmp_path / "run", "--data", path, "--max_step", 2) == 0
    assert capsys.readouterr().out.startswith(f"{path}: read as time first (T, N, ...), measured")
    windows = {(clips[c, s : s + 5] / np.float32(255)).tobytes()
               for c in range(14) for s in range(8 - 5 + 1)}  # the training clips' windows
    assert len(batches) >= 2 and all(b.shape == (2, 5, 16, 16, 3) for b in batches)
    assert all(window.tobytes() in windows for b in batches for window in b)
    recorded = checkpoint.read_state(str(tmp_path / "run" / "ckpt-0000002"))["clips"]
    assert recorded == {"path": path, "shape": [16, 8, 16, 16, 3], "dtype": "uint8",
                        "layout": "time_major", "fingerprint": recorded["fingerprint"]}
    assert probe(video.path(str(tmp_path / "run"), 2))[2] == 8  # a held-out clip's frames


def test_time_major_on_a_file_stored_clips_first_is_refused(clips_file, tmp_path, capsys):
    path, clips = clips_file
    assert rerun(tmp_path / "run", "--data", path, "--time_major") == 2
    first, second = measure_layout(clips)[1]
    assert one_line(capsys.readouterr().err).endswith(
        f"error: {path}: --time_major says time first (T, N, ...), but the data are stored clips "
        f"first (N, T, ...) (neighbours along its first axis differ by {first:.3f}, along its "
        f"second by {second:.3f})")
    assert not (tmp_path / "run").exists()


def test_a_still_file_resumes_in_the_layout_its_run_recorded(noise_runs, tmp_path, capsys):
    path, runs_on = noise_runs
    run = shutil.copytree(runs_on["conv"], tmp_path / "run")
    assert rerun(run, "--data", path) == 0  # steps 3-4
    assert capsys.readouterr().out.splitlines()[0].endswith(
        "read as time first (T, N, ...), as the run recorded")
    recorded = checkpoint.read_state(str(run / "ckpt-0000004"))["clips"]
    assert recorded["layout"] == "time_major" and recorded["shape"] == [20, 16, 8, 8, 1]


def test_a_flag_its_run_contradicts_on_a_still_file_is_refused(tmp_path, capsys):
    path, run = save_clips(tmp_path / "noise.npy", NOISE), tmp_path / "run"
    assert rerun(run, "--data", path, "--max_step", 2) == 0  # read clips first, the default
    before = files(run)
    capsys.readouterr()
    assert rerun(run, "--data", path, "--time_major") == 2
    line = one_line(capsys.readouterr().err)
    assert (f"{path}: --time_major says time first (T, N, ...), but the run recorded clips first "
            "(N, T, ...) and the data do not show which axis is time") in line
    assert files(run) == before


def test_resume_follows_the_clips_not_their_path(clip_runs, clips_file, tmp_path, monkeypatch,
                                                 capsys):
    path, clips = clips_file
    run = shutil.copytree(clip_runs["conv"], tmp_path / "run")
    shutil.rmtree(run / "ckpt-0000004")  # back to step 2
    (tmp_path / "moved").mkdir()
    shutil.copy(path, tmp_path / "moved" / "clips.npy")
    monkeypatch.chdir(tmp_path / "moved")
    moved = os.path.abspath("clips.npy")
    assert rerun(run, "--data", "./clips.npy") == 0  # steps 3-4
    assert [line for line in capsys.readouterr().out.splitlines() if "clips file" in line] == [
        f"the run's clips file is now {moved} (was {path}: the same content)"]
    assert checkpoint.read_state(str(run / "ckpt-0000004"))["clips"]["path"] == moved
    resumed, uninterrupted = (runs.load(os.path.join(d, "ckpt-0000004")).model.get_weights()
                              for d in (run, clip_runs["conv"]))
    for a, b in zip(resumed, uninterrupted, strict=True):
        np.testing.assert_array_equal(a, b)
    assert rerun(run, "--data", moved) == 0  # the same file by its absolute name: nothing to say
    assert "clips file" not in capsys.readouterr().out
    content, shape = clips.copy(), np.concatenate([clips, clips[:1]])
    content[0, 0, 0, 0] ^= 1
    for changed, what in ((content, "the same shape, dtype and layout, but other content"),
                          (shape, "shape [21, 10, 8, 8, 1] (the run's: [20, 10, 8, 8, 1])")):
        save_clips(moved, changed)
        before = files(run)
        assert rerun(run, "--data", "./clips.npy", "--max_step", 6) == 2
        line = one_line(capsys.readouterr().err)
        assert line.endswith(f"was trained on {moved}: {what}; train on that data, or use "
                             "another --train_dir")
        assert "--fresh" not in line and line.count("clips.npy") == 1
        assert files(run) == before


TOO_SMALL = {  # as `BAD`: files that open but hold out too few clips to score
    "few_clips": ("few.npy", lambda p: np.save(p, waves(12, 5)), {}, "1 of its 12 clips is held "
                  "out, but evaluation needs 2: use --holdout 0.13 or more"),
    "two_clips": ("two.npy", lambda p: np.save(p, waves(2, 5)), {},
                  "1 of its 2 clips is held out, but evaluation needs 2: use at least 3 clips"),
}


@pytest.mark.parametrize("case", ["missing", "text", "truncated", "pickled", "rank", "channels",
                                  "short", "one_clip", "size", "above_1", "nan", *TOO_SMALL])
def test_a_bad_file_exits_2_and_writes_nothing(tmp_path, capsys, case):
    name, make, kwargs, words = {**BAD, **TOO_SMALL}[case]
    make(tmp_path / name)
    length = kwargs.get("seq_length", 2)
    assert rerun(tmp_path / "run", "--data", tmp_path / name, "--seq_length", length) == 2
    line = one_line(capsys.readouterr().err)
    assert ": error: " in line and str(tmp_path / name) in line and words in line
    assert not (tmp_path / "run").exists()


def test_the_holdout_a_too_small_file_is_told_to_use_works(tmp_path):
    path = save_clips(tmp_path / "few.npy", waves(12, 5))
    config = dataclasses.replace(CONV, data=path, holdout=0.13)
    assert data.open_source(config, say=lambda _: None).held_out_count == 2


def test_a_big_npz_is_refused_with_the_advice_to_save_a_npy(tmp_path, monkeypatch, capsys):
    path = tmp_path / "clips.npz"
    np.savez(path, waves(16, 5))
    with zipfile.ZipFile(path) as archive:
        size = sum(info.file_size for info in archive.infolist())
    monkeypatch.setattr(clip_file, "NPZ_LIMIT", size - 1)
    assert rerun(tmp_path / "run", "--data", path) == 2
    assert one_line(capsys.readouterr().err).endswith(
        f"error: {path}: an .npz is read whole, and this one holds 0 MB; save the array as a .npy "
        "(np.save), which is read as needed")
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(clip_file, "NPZ_LIMIT", size)
    assert open_clips(str(path))[0].shape == (16, 5, 8, 8, 1)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("flag", [["--time_major"], ["--holdout", 0.2]])
def test_data_flags_without_data_exit_2_in_one_line(tmp_path, capsys, model, flag):
    assert rerun(tmp_path / "run", *flag, model=model) == 2
    assert one_line(capsys.readouterr().err).endswith(
        f"error: {flag[0]} applies to --data only: name your clips file with --data")
    assert not (tmp_path / "run").exists()


def test_holdout_without_data_is_refused_at_its_default_value_too(tmp_path):
    with pytest.raises(UsageError, match="--holdout applies to --data only"):
        parse_flags(CONV, ["--train_dir", str(tmp_path / "run"), "--holdout", "0.1"])


def test_checking_a_big_file_shows_a_progress_bar(tmp_path, monkeypatch, capsys):
    config = dataclasses.replace(CONV, data=save_clips(tmp_path / "w.npy", waves(16, 5)))
    data.open_source(config)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(data, "BAR_BYTES", 100)
    data.open_source(config)
    assert f"checking {config.data}" in capsys.readouterr().err


def test_loss_falls_below_predicting_black_on_a_learnable_file(tmp_path):
    config = dataclasses.replace(CONV, data=save_clips(tmp_path / "clean.npy", squares(20, 10)),
                                 batch_size=8, lr=0.01)
    source = data.open_source(config, say=lambda _: None)
    model = runs.build(config, source.frame_shape)
    step, _ = make_train_step(model, runs.build_optimizer(config, model))
    batches = [source.batch(config.seed, k, config.batch_size, config.seq_length)
               for k in range(150)]
    losses = [float(step(batch)) for batch in batches]
    black = [0.5 * np.sum(batch[:, 1:] ** 2) for batch in batches]  # the loss of all zeros
    assert np.mean(losses[-20:]) < 0.8 * min(np.mean(black[-20:]), np.mean(losses[:5]))


def test_graphs_of_a_clips_file_score_its_held_out_clips_and_both_baselines(clip_runs, clips_file,
                                                                            tmp_path, capsys):
    path, clips = clips_file
    moved = shutil.copy(path, str(tmp_path / "moved.npy"))
    assert graphs(tmp_path / "g", "--data", moved, "--conv_lstm_dir", clip_runs["conv_lstm"],
                  "--conv_dir", clip_runs["conv"]) == 0
    stdout = capsys.readouterr().out
    record = json.loads((tmp_path / "g.json").read_text())
    columns = np.genfromtxt(tmp_path / "g.csv", delimiter=",", names=True)
    assert record["context"] == 3 and record["horizon"] == len(columns) == 10 - 3
    assert record["alignments"] == {"": "ConvLSTM in 0-2, conv in 2, step 0 = frame 3"}
    assert record["series"] == ["conv_lstm", "conv", "copy_last", "mean_frame"]
    assert list(record["baselines"]) == ["copy_last", "mean_frame"]
    assert record["num_sequences"] == 2 and record["data"]["path"] == moved
    assert "ours: frames 3.. for both" in stdout and "2016: ConvLSTM" not in stdout
    assert not [name for name in columns.dtype.names if "2016" in name]
    frames = clips[..., None] / np.float32(255)
    held, truth = frames[18:], frames[18:, 3:]
    np.testing.assert_allclose(columns["copy_last"], sse(held[:, 2:3], truth), rtol=1e-5)
    mean = frames[:18].mean(axis=(0, 1))
    np.testing.assert_allclose(columns["mean_frame"], sse(mean, truth), rtol=1e-5)
    assert np.all(np.abs(sse(frames.mean(axis=(0, 1)), truth) / columns["mean_frame"] - 1) > 1e-3)
    conv = runs.load(os.path.join(clip_runs["conv"], "ckpt-0000004")).model
    np.testing.assert_allclose(columns["conv"], sse(np.asarray(conv.rollout(held[:, 2:3], 7)),
                                                    truth), rtol=1e-4)


def test_graphs_read_a_still_file_as_its_runs_recorded(noise_runs, tmp_path, capsys):
    path, runs_on = noise_runs
    assert graphs(tmp_path / "g", "--data", path, "--conv_lstm_dir", runs_on["conv_lstm"],
                  "--conv_dir", runs_on["conv"], "--horizon", 2) == 0
    assert f"{path}: the data do not show which axis is time" in capsys.readouterr().out
    recorded = json.loads((tmp_path / "g.json").read_text())["data"]
    assert recorded["layout"] == "time_major" and recorded["shape"] == [20, 16, 8, 8, 1]


SHIPPED_CONV = os.path.join(ROOT, "checkpoints", "pretrained", "conv")
REFUSED = {  # name: (flags after both runs' folders, words of the error)
    "balls_weights_on_clips": (["--data", "{data}", "--conv_dir", SHIPPED_CONV],
                               "was trained on the bouncing balls, not on --data {data}"),
    "clip_weights_on_balls": ([], "was trained on the clips file {data}, not on the bouncing "
                                  "balls"),
    "time_major_contradicted": (["--data", "{data}", "--time_major"],
                                "{data}: --time_major says time first (T, N, ...), but the data "
                                "are stored clips first"),
    "changed": (["--data", "{changed}"], "the same shape, dtype and layout, but other content"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_graphs_refuse_what_their_runs_were_not_trained_on(clip_runs, clips_file, tmp_path,
                                                           capsys, case):
    path, clips = clips_file
    changed = clips.copy()
    changed[0, 0, 0, 0] ^= 1
    names = {"data": path, "changed": save_clips(tmp_path / "changed.npy", changed)}
    flags, words = REFUSED[case]
    (tmp_path / "out").mkdir()
    assert graphs(tmp_path / "out" / "g", "--conv_lstm_dir", clip_runs["conv_lstm"], "--conv_dir",
                  clip_runs["conv"], *(flag.format(**names) for flag in flags)) == 2
    assert words.format(**names) in one_line(capsys.readouterr().err)
    assert os.listdir(tmp_path / "out") == []


def test_graphs_refuse_time_major_without_data(tmp_path, capsys):
    assert graphs(tmp_path / "g", "--time_major") == 2
    assert one_line(capsys.readouterr().err).endswith(
        "error: --time_major applies to --data only: name your clips file with --data")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("change", [{"fingerprint": "other"},
                                    {"layout": "time_major", "shape": [10, 20, 8, 8, 1]}])
def test_a_run_is_not_told_the_file_it_was_trained_on_is_another(change):
    recorded = {"path": "/data/clips.npy", "shape": [20, 10, 8, 8, 1], "dtype": "uint8",
                "layout": "clips_first", "fingerprint": "abc"}
    loaded = runs.Loaded("run/ckpt-0000004", CONV, {"step": 4, "clips": recorded}, None)
    with pytest.raises(UsageError) as error:
        runs.check_data(loaded, {**recorded, **change})
    assert "another clips file" not in str(error.value)
