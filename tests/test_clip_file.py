import os
import pickle

import numpy as np
import pytest

from model.cli import UsageError
from systems import clip_file
from systems.clip_file import held_out, held_out_clips, open_clips, training_batch


def squares(n, t, side=16, channels=None, seed=0):
    """uint8 clips `(n, t, side, side[, channels])`: a bright square moving one pixel a frame
    from a random start, on noise."""
    rng = np.random.default_rng(seed)
    clips = rng.integers(0, 60, (n, t, side, side, channels or 1), dtype=np.uint8)
    for i, (y, x) in enumerate(rng.integers(0, side // 2, (n, 2))):
        for k in range(t):
            clips[i, k, y : y + 4, (x + k) % (side - 4) :][:, :4] = 255
    return clips if channels else clips[..., 0]


def save(path, clips, time_major=False):
    np.save(path, np.ascontiguousarray(np.swapaxes(clips, 0, 1)) if time_major else clips)
    return str(path)


def labelled(n=20, t=8, side=4):
    """Clips whose every pixel is `10 * clip + frame`."""
    values = 10 * np.arange(n)[:, None] + np.arange(t)
    return np.broadcast_to(values[..., None, None], (n, t, side, side)).astype(np.uint8)


def _text(p):
    p.write_text("clip,frame\n0,0\n")


def _truncated(p):
    np.save(p, squares(4, 5))
    os.truncate(p, os.path.getsize(p) - 100)


def _bad_header(p):
    np.save(p, squares(4, 5))
    with open(p, "r+b") as f:
        f.seek(12)
        f.write(b"not a python dict")


def _object(p):
    np.save(p, np.array([{"frames": 1}] * 4, dtype=object), allow_pickle=True)


def _object_npz(p):
    np.savez(p, np.array([None, 1], dtype=object))


def _bad_zip(p):
    p.write_bytes(b"PK\x03\x04 and then nothing a zip needs")


BAD = {  # name: (file name, make it in the given path, open_clips arguments, words of the error)
    "missing": ("none.npy", lambda p: None, {}, "No such file"),
    "folder": ("dir.npy", lambda p: p.mkdir(), {}, "Is a directory"),
    "text": ("text.npy", _text, {}, "not a NumPy file"),
    "truncated": ("cut.npy", _truncated, {}, "truncated"),
    "header": ("header.npy", _bad_header, {}, "unreadable .npy header"),
    "pickled": ("objects.npy", _object, {}, "Python objects"),
    "pickled_npz": ("objects.npz", _object_npz, {}, "Object arrays cannot be loaded"),
    "bad_zip": ("broken.npz", _bad_zip, {}, "unreadable .npz"),
    "two_arrays": ("two.npz", lambda p: np.savez(p, squares(4, 5), squares(4, 5)), {}, "2 arrays"),
    "no_array": ("none.npz", lambda p: np.savez(p), {}, "0 arrays"),
    "rank": ("rank.npy", lambda p: np.save(p, squares(4, 5)[0]), {}, "shape (5, 16, 16)"),
    "channels": ("c2.npy", lambda p: np.save(p, squares(4, 5, channels=2)), {}, "2 channels"),
    "short": ("short.npy", lambda p: np.save(p, squares(4, 5)), {"seq_length": 6},
              "clips of 5 frames, fewer than --seq_length 6"),
    "one_clip": ("one.npy", lambda p: np.save(p, squares(1, 5)), {}, "1 clip, but at least 2"),
    "size": ("size.npy", lambda p: np.save(p, np.zeros((2, 2, 66, 64), np.uint8)), {},
             "66x64 (H x W), but each side must be a multiple of 4: use 64x64 or 68x64"),
    "tiny": ("tiny.npy", lambda p: np.save(p, np.zeros((2, 2, 2, 6), np.uint8)), {},
             "use 4x4 or 4x8"),
    "dtype": ("int.npy", lambda p: np.save(p, squares(4, 5).astype(np.int16)), {}, "dtype int16"),
    "above_1": ("high.npy", lambda p: np.save(p, squares(4, 5) / 170), {}, "found 1.5"),
    "below_0": ("low.npz", lambda p: np.savez(p, squares(4, 5) / -255.0), {}, "found -1"),
    "nan": ("nan.npy", lambda p: np.save(p, np.full((2, 2, 4, 4), np.nan, np.float16)), {},
            "found NaN"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_files_raise_one_line_naming_the_file(tmp_path, case):
    name, make, kwargs, words = BAD[case]
    path = tmp_path / name
    make(path)
    with pytest.raises(UsageError) as error:
        open_clips(str(path), **kwargs).verify()
    message = str(error.value)
    assert "\n" not in message and str(path) in message and words in message


@pytest.mark.parametrize("shape, time_major, seq_length, hint", [
    ((20, 5), False, 10, "if it is stored time first (T, N, ...), pass --time_major"),
    ((1, 20), False, 1, "pass --time_major"),
    ((5, 20), True, 10, "if it is stored clips first, drop --time_major"),
    ((3, 5), False, 10, None),  # too short either way: no hint
])
def test_the_other_layout_is_hinted_only_where_it_would_pass(tmp_path, shape, time_major,
                                                             seq_length, hint):
    path = str(tmp_path / "clips.npy")
    np.save(path, np.zeros((*shape, 4, 4), np.uint8))
    with pytest.raises(UsageError) as error:
        open_clips(path, time_major, seq_length)
    assert ("--time_major" in str(error.value)) == (hint is not None)
    assert hint is None or str(error.value).endswith(hint)


def test_a_file_in_the_other_layout_opens_where_no_check_fails(tmp_path):
    """The documented limit: 20 clips of 10000 frames is a fair file, so no hint is possible."""
    path = str(tmp_path / "moving_mnist_like.npy")
    np.save(path, np.zeros((20, 100, 4, 4), np.uint8))  # stored (T, N, H, W)
    assert open_clips(path).shape == (20, 100, 4, 4, 1)


@pytest.mark.parametrize("channels, side", [(None, 16), (3, 64)])
def test_time_major_and_clips_first_files_give_the_same_windows(tmp_path, channels, side):
    clips = squares(6, 9, side, channels)
    first = open_clips(save(tmp_path / "first.npy", clips))
    stored = open_clips(save(tmp_path / "time.npy", clips, time_major=True), time_major=True)
    assert first.shape == stored.shape == (6, 9, side, side, channels or 1)
    assert len(first) == len(stored) == 6 and first.frame_shape == (side, side, channels or 1)
    index, start = np.array([5, 0, 3, 3]), np.array([0, 4, 2, 1])
    want = np.stack([clips[i, s : s + 5] for i, s in zip(index, start)]) / np.float32(255)
    for source in (first, stored):
        window = source.window(index, start, 5)
        assert window.dtype == np.float32
        np.testing.assert_array_equal(window, want.reshape(window.shape))


def test_uint8_is_scaled_to_0_1_and_floats_are_read_as_float32(tmp_path):
    values = np.array([0, 51, 255, 102], np.uint8)[None, :, None, None] * np.ones((2, 1, 4, 4),
                                                                                   np.uint8)
    window = open_clips(save(tmp_path / "u8.npy", values)).window([1], [0], 4)
    np.testing.assert_allclose(window[0, :, 0, 0, 0], [0, 0.2, 1, 0.4], rtol=1e-7)
    halves = open_clips(save(tmp_path / "f16.npy", (values / 255).astype(np.float16)))
    assert halves.window([1], [0], 4).dtype == np.float32 and halves.dtype == "float16"


def test_a_time_major_npy_is_read_through_the_file_not_a_copy(tmp_path):
    path = save(tmp_path / "time.npy", np.zeros((3, 4, 4, 4), np.uint8), time_major=True)
    clips = open_clips(path, time_major=True)
    with open(path, "r+b") as f:  # the last byte: clip 2, frame 3, pixel (3, 3)
        f.seek(-1, os.SEEK_END)
        f.write(b"\xff")
    assert clips.window([2], [3], 1)[0, 0, 3, 3, 0] == 1.0  # a memory map sees the change


@pytest.mark.parametrize("time_major", [False, True])
def test_training_batches_are_a_function_of_the_seed_and_never_held_out(tmp_path, time_major):
    clips = open_clips(save(tmp_path / "l.npy", labelled(), time_major), time_major)
    seen = set()
    for seed in range(200):
        batch = training_batch(clips, np.random.default_rng(seed), 16, 4, 0.25)
        assert batch.shape == (16, 4, 4, 4, 1) and batch.dtype == np.float32
        np.testing.assert_array_equal(batch, training_batch(clips, np.random.default_rng(seed),
                                                            16, 4, 0.25))
        value = np.rint(batch[:, :, 0, 0, 0] * 255).astype(int)  # (16, 4): 10 * clip + frame
        clip, frame = value // 10, value % 10
        assert (clip == clip[:, :1]).all() and (np.diff(frame, axis=1) == 1).all()
        seen.update(zip(clip[:, 0], frame[:, 0]))
    assert seen == {(c, s) for c in range(15) for s in range(5)}  # clips 15..19 held out
    other = training_batch(clips, np.random.default_rng(1), 16, 4, 0.25)
    assert not np.array_equal(other, training_batch(clips, np.random.default_rng(0), 16, 4, 0.25))


def test_held_out_is_the_last_fraction_at_least_one_leaving_one():
    cases = ((10, 0.1), (100, 0.07), (10, 0.32), (10, 0.36), (3, 0.1), (10000, 0.05))
    assert [held_out(n, holdout) for n, holdout in cases] == [1, 7, 3, 4, 1, 500]  # rounded
    for n, holdout in ((2, 0.9), (10, 0.0), (10, 1.0)):
        with pytest.raises(UsageError, match="--holdout"):
            held_out(n, holdout)


@pytest.mark.parametrize("time_major", [False, True])
def test_held_out_clips_are_the_last_ones_from_frame_0(tmp_path, time_major):
    clips = open_clips(save(tmp_path / "l.npy", labelled(), time_major), time_major)
    every = held_out_clips(clips, 0.2)
    assert every.shape == (4, 8, 4, 4, 1)
    np.testing.assert_allclose(every[:, :, 0, 0, 0] * 255, labelled()[16:, :, 0, 0], atol=1e-4)
    first = held_out_clips(clips, 0.2, count=1, length=3)
    np.testing.assert_array_equal(first, every[:1, :3])
    with pytest.raises(UsageError, match="clips of 8 frames, fewer than 9"):
        held_out_clips(clips, 0.2, length=9)


def test_the_fingerprint_follows_the_data_and_nothing_else(tmp_path):
    clips = squares(4, 5)
    path = save(tmp_path / "a.npy", clips)
    fingerprint = open_clips(path).verify()
    np.savez(tmp_path / "same.npz", clips)
    assert open_clips(save(tmp_path / "b.npy", clips)).verify() == fingerprint
    assert open_clips(str(tmp_path / "same.npz")).verify() == fingerprint
    changed = clips.copy()
    changed[3, 4, 15, 15] ^= 1
    assert open_clips(save(tmp_path / "c.npy", changed)).verify() != fingerprint
    assert open_clips(save(tmp_path / "d.npy", clips[..., None])).verify() != fingerprint


def test_verify_reads_in_chunks_once_and_describe_records_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(clip_file, "CHUNK", 64)
    monkeypatch.setattr(clip_file, "BAR_BYTES", 100)
    data = np.full((2, 3, 4, 4), 0.5, np.float32)
    data[1, 2, 3, 3] = 2.0  # in the last of the 6 chunks
    with pytest.raises(UsageError, match="found 2"):
        open_clips(save(tmp_path / "f.npy", data)).verify()
    assert "checking" in capsys.readouterr().err  # a bar for data over BAR_BYTES
    path = save(tmp_path / "g.npy", np.full((2, 3, 4, 4), 0.5, np.float32), time_major=True)
    clips = open_clips(path, time_major=True)
    description = clips.describe()
    assert description == {"path": path, "shape": [2, 3, 4, 4, 1], "dtype": "float32",
                           "layout": "time_major", "fingerprint": description["fingerprint"]}
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"\x00")
    assert clips.verify() == description["fingerprint"]  # computed once per object
    assert open_clips(path, time_major=True).verify() != description["fingerprint"]


def test_nothing_is_unpickled(tmp_path, monkeypatch):
    path = tmp_path / "objects.npy"
    _object(path)
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(UsageError, match="Python objects"):
        open_clips(str(path))
