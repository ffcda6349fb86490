"""A run's rollout videos: the two panels side by side, scaled up, and their captions."""

import dataclasses

import numpy as np

from model import video
from model.config import MODELS
from model.data import video_clip
from systems.bouncing_balls import Balls


def test_side_by_side_layout():
    truth = np.zeros((2, 32, 32, 3), np.float32)
    truth[0, 0, 0] = 1.0  # top-left pixel of the first truth frame
    prediction = np.full((2, 32, 32, 3), 0.5, np.float32)
    out = video.side_by_side(truth, prediction)
    assert out.shape == (2, 192, 392, 3) and out.dtype == np.uint8
    assert (out[0, :6, :6] == 255).all() and (out[0, 6:, :6] == 0).all()
    assert (out[:, :, 192:200] == 255).all()  # the white gap
    assert (out[:, :, 200:] == 128).all()  # 0.5 rounds to 128


def test_to_pixels_clips_rounds_and_shows_gray_as_rgb():
    gray = np.array([[[[-0.5], [0.2]], [[0.5], [1.5]]]], np.float32)  # (1, 2, 2, 1)
    pixels = video.to_pixels(gray, scale=2)
    assert pixels.shape == (1, 4, 4, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels[0, ::2, ::2, 0], [[0, 51], [128, 255]])
    np.testing.assert_array_equal(pixels[0, 1::2, 1::2], pixels[0, ::2, ::2])  # 2 x 2 blocks
    np.testing.assert_array_equal(pixels[..., 1], pixels[..., 0])
    np.testing.assert_array_equal(pixels[..., 2], pixels[..., 0])


def test_video_frames_are_captioned():
    truth = np.zeros((3, 32, 32, 3), np.float32)
    captions = [("truth", "input, step 7")] + [("truth", "prediction, step 7")] * 2
    frames = video.side_by_side(truth, truth, captions)
    plain = video.side_by_side(truth, truth)
    band, half = video.BAND, (plain.shape[2] + video.GAP) // 2
    assert frames.shape == (3, band + plain.shape[1], plain.shape[2], 3)
    np.testing.assert_array_equal(frames[:, band:], plain)
    for frame in frames:
        assert (frame[:band, :half - video.GAP] < 128).any()  # text over each panel
        assert (frame[:band, half:] < 128).any()
    np.testing.assert_array_equal(frames[0, :band, :half], frames[1, :band, :half])
    assert (frames[0, :band, half:] != frames[1, :band, half:]).any()  # input, then prediction
    np.testing.assert_array_equal(frames[1], frames[2])


def test_captions_are_readable_and_name_the_frame_and_the_training_step(tmp_path, monkeypatch):
    seen, side_by_side = {}, video.side_by_side

    def spy(truth, prediction, captions=None, title=""):
        seen.update(captions=captions, title=title)
        return side_by_side(truth, prediction, captions, title)

    monkeypatch.setattr(video, "side_by_side", spy)
    config = dataclasses.replace(MODELS["conv_lstm"].defaults, train_dir=str(tmp_path))
    video.write_run_video(config, 5000, video_clip(Balls(), config.seed),
                          rollout=lambda context, n: np.zeros((1, n, 32, 32, 3)))
    assert seen["captions"][4] == ("truth, frame 4", "input, frame 4")
    assert seen["captions"][5] == ("truth, frame 5", "prediction, frame 5")
    assert seen["title"] == "conv_lstm after 5,000 training steps"
    frame = video.side_by_side(np.zeros((1, 32, 32, 3)), np.zeros((1, 32, 32, 3)),
                               seen["captions"][5:6], seen["title"])[0]
    assert frame.shape == (video.BAND + 192, 392, 3)
    rows = np.flatnonzero((frame[: video.BAND] < 128).any(axis=(1, 2)))
    for line in (rows[rows < video.LINE], rows[rows >= video.LINE]):  # title, then captions
        assert line.max() - line.min() + 1 >= 13  # a 16 px font's glyphs; the old ones were 10
