"""`predict.py`: a trained run and a clip in (simulated, a `.npy`, a video), its future out, equal
to a hand rollout of the same checkpoint, scored as `create_graphs.py` scores; every bad input
one line, exit 2, nothing written."""

import dataclasses
import json
import os
import re
import shutil

import av
import numpy as np
import pytest

import create_graphs
import predict
from conftest import tiny_config
from model import checkpoint, evaluation, runs
from systems import video_file
from systems.bouncing_balls import Balls
from tests.helpers import ROOT, one_line, probe

SHIPPED = os.path.join(ROOT, "checkpoints", "pretrained", "conv_lstm")
CONTEXT = 5


@pytest.fixture(scope="module")
def shipped():
    return runs.load(SHIPPED)


def printed_errors(out):
    """`(model, copy last)` per predicted frame, from the table `predict.py` prints."""
    rows = re.findall(r"^\s*\d+\s+\d+\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    return np.array(rows, float).T


def clip_file(path, clip):
    """Save float clip `(T, H, W, C)` as uint8, and return it as the model reads it."""
    pixels = (clip * 255 + 0.5).astype(np.uint8)
    np.save(path, pixels)
    return pixels.astype(np.float32) / 255


def test_a_simulated_clip_is_the_hand_rollout_and_scored_as_the_graphs(shipped, tmp_path,
                                                                        capsys):
    assert predict.run_predict(["--train_dir", SHIPPED, "--seed", "3", "--frames", "6",
                                "--start", "2", "--out", str(tmp_path / "p")]) == 0
    clip = next(Balls().held_out(1, 2 + CONTEXT + 6, seed=3))
    want = np.asarray(shipped.model.rollout(clip[:, 2 : 2 + CONTEXT], 6))[0]
    got = np.load(tmp_path / "p.npy")
    assert got.dtype == np.uint8 and got.shape == (6, 32, 32, 3)
    np.testing.assert_allclose(got, np.clip(want, 0, 1) * 255, atol=1)  # uint8 of the rollout
    truth = clip[0, 2 + CONTEXT :]
    scores = evaluation.metrics(want[None], truth[None], quality=False)["sse"][0]
    copy = evaluation.metrics(np.repeat(clip[:, 2 + CONTEXT - 1 : 2 + CONTEXT], 6, axis=1),
                              truth[None], quality=False)["sse"][0]
    model, copied = printed_errors(capsys.readouterr().out)
    np.testing.assert_allclose(model, np.asarray(scores), atol=0.006)  # printed to 2 decimals
    np.testing.assert_allclose(copied, np.asarray(copy), atol=0.006)
    codec, pix_fmt, frames, width, height = probe(tmp_path / "p.mp4")
    assert (codec, pix_fmt, frames) == ("h264", "yuv420p", CONTEXT + 6)


def test_no_input_defaults_to_the_training_horizon_and_results(tmp_path, monkeypatch):
    monkeypatch.setattr(predict.cli, "REPO", str(tmp_path))
    assert predict.run_predict(["--train_dir", SHIPPED]) == 0
    assert np.load(tmp_path / "results" / "simulated_seed0_future.npy").shape[0] == 10 - CONTEXT
    assert (tmp_path / "results" / "simulated_seed0_future.mp4").is_file()


def test_a_npy_clip_is_predicted_to_its_end_and_a_clips_file_by_index(shipped, tmp_path):
    clips = next(Balls().held_out(3, 9, seed=5))
    seen = clip_file(tmp_path / "one.npy", clips[1])
    assert predict.run_predict([str(tmp_path / "one.npy"), "--train_dir",
                                SHIPPED, "--out", str(tmp_path / "a")]) == 0
    want = np.asarray(shipped.model.rollout(seen[None, :CONTEXT], 4))[0]
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), np.clip(want, 0, 1) * 255, atol=1)
    clip_file(tmp_path / "many.npy", clips)
    assert predict.run_predict([str(tmp_path / "many.npy"), "--clip", "1", "--train_dir",
                                SHIPPED, "--out", str(tmp_path / "b")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), np.load(tmp_path / "a.npy"))


def write_video(path, frames, fmt):
    """`frames` uint8 `(T, H, W, 3)` as an H.264 mp4 or a GIF."""
    if fmt == "gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
        return
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=4)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.parametrize("fmt", ["mp4", "gif"])
def test_a_video_is_decoded_as_the_converter_does_and_read_only_as_far_as_needed(
        shipped, tmp_path, monkeypatch, fmt):
    frames = (next(Balls().held_out(1, 40, seed=1))[0].repeat(2, 1).repeat(2, 2) * 255
              ).astype(np.uint8)  # 64x64, scaled down to the run's 32x32 when read
    path = tmp_path / f"v.{fmt}"
    write_video(path, frames, fmt)
    asked = []
    read = video_file.read_frames
    monkeypatch.setattr(video_file, "read_frames",
                        lambda *a, **k: asked.append(k["count"]) or read(*a, **k))
    assert predict.run_predict([str(path), "--train_dir", SHIPPED, "--frames", "3",
                                "--out", str(tmp_path / "p")]) == 0
    assert asked == [CONTEXT + 3]
    seen = read(str(path), (32, 32), True, count=CONTEXT).astype(np.float32) / 255
    want = np.asarray(shipped.model.rollout(seen[None], 3))[0]
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), np.clip(want, 0, 1) * 255, atol=1)


@pytest.fixture
def data_run(tmp_path):
    """The shipped ConvLSTM as if trained on a clips file."""
    run = shutil.copytree(SHIPPED, tmp_path / "data_run")
    state = json.loads((run / "state.json").read_text())
    state["clips"] = {"path": "/data/clips.npy", "shape": [50, 20, 32, 32, 3], "dtype": "uint8",
                      "layout": "clips_first", "fingerprint": "0" * 64}
    (run / "state.json").write_text(json.dumps(state))
    return run


@pytest.mark.parametrize("case, says", [
    ("not_a_video", "cannot be read as a video"),
    ("too_short", "has 3 frames; the run reads 5 from frame 0"),
    ("other_size", "frames of 16x16x3 (H x W x C), but the run's are 32x32x3"),
    ("other_channels", "frames of 32x32x1 (H x W x C), but the run's are 32x32x3"),
    ("clips_without_index", "is not one clip (T, H, W[, C]); for a file of clips, pass --clip"),
    ("no_input_for_a_data_run", "was trained on /data/clips.npy, not on the bouncing balls"),
    ("missing", "no such file"),
    ("negative_frames", "--frames must be an integer of at least 1"),
    ("out_over_input", "would overwrite the input"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, data_run, case,
                                                          says):
    inputs = tmp_path / "in"
    inputs.mkdir()
    arrays = {"too_short": (3, 32, 32, 3), "other_size": (9, 16, 16, 3),
              "other_channels": (9, 32, 32, 1), "clips_without_index": (4, 9, 32, 32, 3)}
    path = inputs / ("clip.npy" if case in arrays else "clip.mp4")
    if case in arrays:
        np.save(path, np.zeros(arrays[case], np.uint8))
    elif case == "not_a_video":
        path.write_bytes(os.urandom(5000))
    argv = [str(path), "--train_dir", SHIPPED, "--out", str(tmp_path / "out" / "p")]
    if case == "no_input_for_a_data_run":
        argv = ["--train_dir", str(data_run), "--out", str(tmp_path / "out" / "p")]
    elif case == "negative_frames":
        argv += ["--frames", "-2"]
    elif case == "out_over_input":
        write_video(path, np.zeros((9, 64, 64, 3), np.uint8), "mp4")
        argv[-1] = str(inputs / "clip")
    before = sorted(os.listdir(inputs))
    assert predict.main(argv) == 2
    assert says in one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []
    assert sorted(os.listdir(inputs)) == before


def test_a_wider_run_is_predicted_and_graphed_at_its_width(tmp_path):
    """A checkpoint of a `--width 2` run (saved untrained: training at width 2 is
    test_training's), loaded at its width, predicted and graphed."""
    config = tiny_config("conv_lstm", tmp_path / "wide", width=2)
    model = runs.build(config, Balls.frame_shape)
    state = {"config": dataclasses.asdict(config), "clips": Balls().describe()}
    os.makedirs(config.train_dir)
    checkpoint.save(config.train_dir, 1, model, runs.build_optimizer(config, model), state)
    loaded = runs.load_run(None, config.train_dir)
    assert loaded.config.width == 2 and loaded.model.cell.filters == 8
    assert predict.run_predict(["--train_dir", config.train_dir, "--frames", "2", "--seed", "4",
                                "--out", str(tmp_path / "p")]) == 0
    clip = next(Balls().held_out(1, CONTEXT + 2, seed=4))
    want = np.asarray(model.rollout(clip[:, :CONTEXT], 2))[0]
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), np.clip(want, 0, 1) * 255, atol=1)
    assert create_graphs.main(["--conv_lstm_dir", config.train_dir, "--conv_dir",
                               os.path.join(os.path.dirname(SHIPPED), "conv"), "--num_sequences",
                               "2", "--horizon", "2", "--out", str(tmp_path / "g")]) == 0
    with open(tmp_path / "g.json") as f:
        assert json.load(f)["weights"]["conv_lstm"]["path"] == loaded.path
