"""Both models on a user's clips file (`--data`): training, videos, resume, the graphs, and
every bad file refused before anything is written."""

import dataclasses
import os

import numpy as np
import pytest

import create_graphs
from model import checkpoint, evaluation
from model.train_step import make_train_step
from model.data import batch_at, open_data
from model.training import CONV, CONV_LSTM, build, main
from tests.helpers import error_lines, probe
from tests.test_clip_file import BAD, save, squares

FLAGS = ["--batch_size", "2", "--save_every", "2", "--log_every", "1"]


def train(defaults, train_dir, data, *flags):
    return main(defaults, "", ["--train_dir", str(train_dir), "--data", data, *FLAGS,
                               *map(str, flags)])


@pytest.fixture(scope="module")
def gray(tmp_path_factory):
    """20 one-channel 16x16 clips of 10 frames, clips first: 2 held out."""
    return save(tmp_path_factory.mktemp("gray") / "clips.npy", squares(20, 10))


@pytest.fixture(scope="module")
def tiny_clip_runs(tmp_path_factory, gray):
    root = tmp_path_factory.mktemp("clip_runs")
    for defaults in (CONV_LSTM, CONV):
        assert train(defaults, root / defaults.model, gray, "--max_step", 3) == 0
    return {name: str(root / name) for name in ("conv_lstm", "conv")}


def test_rgb_64_time_major_trains_and_its_video_shows_a_held_out_clip(tmp_path):
    clips = squares(6, 8, side=64, channels=3)
    data = save(tmp_path / "rgb.npy", clips, time_major=True)
    assert train(CONV_LSTM, tmp_path / "run", data, "--time_major", "--max_step", 2,
                 "--seq_length", 7) == 0
    state = checkpoint.read_state(str(tmp_path / "run" / "ckpt-0000002"))
    assert state["clips"]["shape"] == [6, 8, 64, 64, 3]
    assert state["clips"]["layout"] == "time_major" and state["clips"]["path"] == data
    assert probe(str(tmp_path / "run" / "videos" / "step_0000002.mp4"))[2] == 8  # its frames
    config = dataclasses.replace(CONV_LSTM, data=data, time_major=True, seq_length=7,
                                 batch_size=2)
    model, _ = build(config, (64, 64, 3))
    assert model.decoder.output_shape[-1] == 3


def test_no_held_out_clip_is_in_a_training_batch(tmp_path):
    labelled = np.broadcast_to(np.arange(10, dtype=np.uint8)[:, None, None, None] * 20,
                               (10, 6, 4, 4)).copy()  # clip k's every pixel is 20 k
    data = save(tmp_path / "labelled.npy", labelled)
    config = dataclasses.replace(CONV, data=data, seq_length=3, batch_size=8, holdout=0.2)
    clips = open_data(config)
    seen = {round(v * 255 / 20) for step in range(200) for v in np.unique(batch_at(config, step,
                                                                               clips))}
    assert seen == set(range(8))  # every training clip, never 8 or 9


def test_loss_falls_below_predicting_black_on_a_learnable_file(tmp_path):
    clips = squares(20, 10)
    data = save(tmp_path / "clean.npy", np.where(clips > 100, clips, 0))  # squares, no noise
    config = dataclasses.replace(CONV, data=data, batch_size=8, lr=0.01)
    clips = open_data(config)
    model, optimizer = build(config, clips.frame_shape)
    step, _ = make_train_step(model, optimizer)
    batches = [batch_at(config, k, clips) for k in range(150)]
    losses = [float(step(batch)) for batch in batches]
    black = [0.5 * np.sum(batch[:, 1:] ** 2) for batch in batches]  # the loss of all zeros
    assert np.mean(losses[-20:]) < 0.8 * min(np.mean(black[-20:]), np.mean(losses[:5]))


def test_resume_on_a_file_equals_an_uninterrupted_run(tmp_path, gray):
    assert train(CONV, tmp_path / "a", gray, "--max_step", 4) == 0
    assert train(CONV, tmp_path / "b", gray, "--max_step", 2) == 0
    assert train(CONV, tmp_path / "b", gray, "--max_step", 4) == 0
    config = dataclasses.replace(CONV, batch_size=2)
    weights = []
    for run in "ab":
        model, _ = build(config, (16, 16, 1))
        checkpoint.restore(str(tmp_path / run / "ckpt-0000004"), model)
        weights.append([w.numpy() for w in model.weights])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_resuming_with_a_changed_file_is_refused(tmp_path, capsys):
    data = save(tmp_path / "clips.npy", squares(6, 8))
    assert train(CONV, tmp_path / "run", data, "--max_step", 2) == 0
    clips = squares(6, 8)
    clips[0, 0, 0, 0] += 1
    save(tmp_path / "clips.npy", clips)
    before = sorted(os.listdir(tmp_path / "run"))
    assert train(CONV, tmp_path / "run", data, "--max_step", 4) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert "holds a run with other settings: the data's fingerprint" in line
    assert sorted(os.listdir(tmp_path / "run")) == before


@pytest.mark.parametrize("case", ["missing", "text", "truncated", "pickled", "rank", "channels",
                                  "short", "one_clip", "size", "above_1", "nan"])
def test_a_bad_file_exits_2_and_writes_nothing(tmp_path, capsys, case):
    name, make, kwargs, words = BAD[case]
    make(tmp_path / name)
    length = str(kwargs.get("seq_length", 2))
    assert train(CONV, tmp_path / "run", str(tmp_path / name), "--seq_length", length) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert words in line and line.startswith("-c: error: ")
    assert not (tmp_path / "run").exists()


def test_create_graphs_on_the_held_out_clips(tiny_clip_runs, gray, tmp_path):
    out = tmp_path / "g"
    assert create_graphs.main(["--data", gray, "--conv_lstm_dir", tiny_clip_runs["conv_lstm"],
                               "--conv_dir", tiny_clip_runs["conv"], "--out", str(out)]) == 0
    columns = np.genfromtxt(f"{out}.csv", delimiter=",", names=True)
    assert len(columns) == 10 - 5 - 1  # every frame after the ConvLSTM's context, less one
    models = {n: evaluation.load_checkpoint(n, os.path.join(tiny_clip_runs[n], "ckpt-0000003"),
                                            open_data(dataclasses.replace(CONV, data=gray))
                                            .describe())[0] for n in evaluation.MODELS}
    held = squares(20, 10)[18:, :, :, :, None] / np.float32(255)  # the last 2 of 20
    want = models["conv"].rollout(held[:, 4:5], 4)
    sse = np.sum((np.asarray(want) - held[:, 5:9]) ** 2, axis=(-3, -2, -1)).mean(axis=0)
    np.testing.assert_allclose(columns["conv"], sse, rtol=1e-4)


@pytest.mark.parametrize("case", ["balls_weights_on_clips", "clip_weights_on_balls"])
def test_weights_from_other_data_are_refused(tiny_clip_runs, gray, tmp_path, capsys, case):
    shipped = os.path.join(os.path.dirname(__file__), "..", "checkpoints", "pretrained", "conv")
    flags = (["--data", gray, "--conv_dir", shipped] if case == "balls_weights_on_clips"
             else ["--conv_dir", tiny_clip_runs["conv"]])
    assert create_graphs.main([*flags, "--conv_lstm_dir", tiny_clip_runs["conv_lstm"],
                               "--out", str(tmp_path / "g")]) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert "was trained on" in line and os.listdir(tmp_path) == []
