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
