import numpy as np

from model import video


def test_side_by_side_layout():
    truth = np.zeros((2, 32, 32, 3), np.float32)
    truth[0, 0, 0] = 1.0  # top-left pixel of the first truth frame
    prediction = np.full((2, 32, 32, 3), 0.5, np.float32)
    out = video.side_by_side(truth, prediction)
    assert out.shape == (2, 192, 392, 3) and out.dtype == np.uint8
    assert (out[0, :6, :6] == 255).all() and (out[0, 6:, :6] == 0).all()
    assert (out[:, :, 192:200] == 255).all()  # the white gap
    assert (out[:, :, 200:] == 128).all()  # 0.5 rounds to 128


def test_captions_are_readable_and_name_the_frame_and_the_training_step(tmp_path, monkeypatch):
    import dataclasses

    from model.data import video_clip
    from model.training import CONV_LSTM

    seen, side_by_side = {}, video.side_by_side

    def spy(truth, prediction, captions=None, title=""):
        seen.update(captions=captions, title=title)
        return side_by_side(truth, prediction, captions, title)

    monkeypatch.setattr(video, "side_by_side", spy)
    config = dataclasses.replace(CONV_LSTM, train_dir=str(tmp_path))
    video.write_run_video(config, 5000, video_clip(config),
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
