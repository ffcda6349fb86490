"""A user's clips file as a source of clips (`systems.clip_file`): bad files refused in one line,
the layout measured, windows, training and held-out clips, fingerprint and mean frame."""

import os
import pickle
import re

import numpy as np
import pytest

from systems import clip_file
from systems.clip_file import Clips, held_out_count, measure_layout, open_clips
from systems.errors import DataError
from tests.helpers import save_clips, waves

TIME_FIRST, CLIPS_FIRST = "time first (T, N, ...)", "clips first (N, T, ...)"


def ramps(n=20, t=8, per_clip=10, per_frame=1, side=4):
    """uint8 clips `(n, t, side, side)` whose every pixel is `per_clip * clip + per_frame * frame`:
    neighbouring clips differ by `per_clip / 255`, neighbouring frames by `per_frame / 255`."""
    values = per_clip * np.arange(n)[:, None] + per_frame * np.arange(t)
    return np.broadcast_to(values[..., None, None], (n, t, side, side)).astype(np.uint8)


def _text(p):
    p.write_text("clip,frame\n0,0\n")


def _truncated(p):
    np.save(p, waves(4, 5))
    os.truncate(p, os.path.getsize(p) - 100)


def _bad_header(p):
    np.save(p, waves(4, 5))
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
    "two_arrays": ("two.npz", lambda p: np.savez(p, waves(4, 5), waves(4, 5)), {}, "2 arrays"),
    "no_array": ("none.npz", lambda p: np.savez(p), {}, "0 arrays"),
    "rank": ("rank.npy", lambda p: np.save(p, waves(4, 5)[0]), {}, "shape (5, 8, 8)"),
    "channels": ("c2.npy", lambda p: np.save(p, waves(4, 5, channels=2)), {}, "2 channels"),
    "short": ("short.npy", lambda p: np.save(p, waves(4, 5)), {"seq_length": 6},
              "clips of 5 frames, fewer than --seq_length 6"),
    "one_clip": ("one.npy", lambda p: np.save(p, waves(1, 5)), {}, "1 clip, but at least 2"),
    "size": ("size.npy", lambda p: np.save(p, np.zeros((2, 2, 66, 64), np.uint8)), {},
             "66x64 (H x W), but each side must be a multiple of 4: use 64x64 or 68x64"),
    "tiny": ("tiny.npy", lambda p: np.save(p, np.zeros((2, 2, 2, 6), np.uint8)), {},
             "use 4x4 or 4x8"),
    "dtype": ("int.npy", lambda p: np.save(p, waves(4, 5).astype(np.int16)), {}, "dtype int16"),
    "above_1": ("high.npy", lambda p: np.save(p, np.full((16, 2, 4, 4), 1.5)), {}, "found 1.5"),
    "below_0": ("low.npz", lambda p: np.savez(p, np.full((16, 2, 4, 4), -1.0)), {}, "found -1"),
    "nan": ("nan.npy", lambda p: np.save(p, np.full((16, 2, 4, 4), np.nan, np.float16)), {},
            "found NaN"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_files_raise_one_line_naming_the_file(tmp_path, case):
    name, make, kwargs, words = BAD[case]
    path = tmp_path / name
    make(path)
    with pytest.raises(DataError) as error:
        open_clips(str(path), **kwargs)[0].verify()
    message = str(error.value)
    assert "\n" not in message and str(path) in message and words in message


@pytest.mark.parametrize("per_clip, per_frame, clips_first", [
    (10, 1, False),
    (10, 5, False),  # time neighbours half as different: clear (`CLEAR` 0.6)
    (10, 7, None),  # 0.7 times as different: too close to tell
    (10, 10, None),
    (0, 0, None),  # still frames
])
def test_the_layout_is_the_axis_whose_neighbours_are_more_alike(per_clip, per_frame, clips_first):
    clips = ramps(per_clip=per_clip, per_frame=per_frame)
    steps = (per_clip / 255, per_frame / 255)
    assert measure_layout(clips) == (None if clips_first is None else False, steps)
    stored = np.swapaxes(clips, 0, 1)
    assert measure_layout(stored) == (None if clips_first is None else True, steps[::-1])


@pytest.mark.parametrize("channels, side", [(None, 8), (3, 16)])
def test_a_file_stored_time_first_is_read_time_first_without_the_flag(tmp_path, channels, side):
    clips = waves(6, 9, side, channels)
    first, _ = open_clips(save_clips(tmp_path / "first.npy", clips))
    path = save_clips(tmp_path / "time.npy", clips, time_major=True)
    stored, note = open_clips(path)
    assert note.startswith(f"{path}: read as time first (T, N, ...), measured (neighbours")
    assert open_clips(path, time_major=True)[0].time_major and stored.time_major
    assert first.shape == stored.shape == (6, 9, side, side, channels or 1)
    assert first.frame_shape == stored.frame_shape == (side, side, channels or 1)
    index, start = np.array([5, 0, 3, 3]), np.array([0, 4, 2, 1])
    want = np.stack([clips[i, s : s + 5] for i, s in zip(index, start)]) / np.float32(255)
    for source in (first, stored):
        window = source.window(index, start, 5)
        assert window.dtype == np.float32
        np.testing.assert_array_equal(window, want.reshape(window.shape))


def test_the_note_gives_the_measured_differences(tmp_path):
    path = save_clips(tmp_path / "ramps.npy", ramps())
    assert open_clips(path)[1] == (f"{path}: read as clips first (N, T, ...), measured "
                                   "(neighbours along its first axis differ by 0.039, along its "
                                   "second by 0.004)")


@pytest.mark.parametrize("time_major, flag, recorded", [
    (False, True, None), (False, None, "time_major"), (True, None, "clips_first"),
    (False, True, "time_major"),
])
def test_a_layout_the_data_contradict_is_refused_naming_both_readings(tmp_path, time_major, flag,
                                                                      recorded):
    path = save_clips(tmp_path / "ramps.npy", ramps(), time_major)
    with pytest.raises(DataError) as error:
        open_clips(path, flag, recorded=recorded)
    said, stored = (CLIPS_FIRST, TIME_FIRST) if time_major else (TIME_FIRST, CLIPS_FIRST)
    steps = "0.004, along its second by 0.039" if time_major else "0.039, along its second by 0.004"
    name = "--time_major" if flag else "the run's recorded layout"
    assert str(error.value) == (f"{path}: {name} says {said}, but the data are stored {stored} "
                                f"(neighbours along its first axis differ by {steps})")


STILL = {"zeros": np.zeros((16, 20, 4, 4), np.uint8),
         "one_image": np.broadcast_to(np.arange(256, dtype=np.uint8).reshape(16, 16),
                                      (16, 20, 16, 16))}


@pytest.mark.parametrize("still", STILL)
@pytest.mark.parametrize("flag, recorded, time_major, why", [
    (None, None, False, ""),
    (True, None, True, ", as --time_major says"),
    (None, "time_major", True, ", as the run recorded"),
    (None, "clips_first", False, ", as the run recorded"),
    (True, "time_major", True, ", as --time_major says"),
])
def test_still_frames_are_read_as_the_flag_then_the_run_then_clips_first(tmp_path, still, flag,
                                                                         recorded, time_major, why):
    path = save_clips(tmp_path / "still.npy", STILL[still])
    clips, note = open_clips(path, flag, recorded=recorded)
    assert measure_layout(STILL[still]) == (None, (0.0, 0.0))
    assert clips.time_major == time_major
    assert clips.shape[:2] == ((20, 16) if time_major else (16, 20))
    layout = TIME_FIRST if time_major else CLIPS_FIRST
    assert note == (f"{path}: the data do not show which axis is time (neighbours along its first "
                    f"axis differ by 0.000, along its second by 0.000); read as {layout}{why}")


def test_a_flag_the_run_contradicts_on_still_frames_is_refused(tmp_path):
    path = save_clips(tmp_path / "still.npy", STILL["zeros"])
    with pytest.raises(DataError) as error:
        open_clips(path, True, recorded="clips_first")
    assert str(error.value).startswith(f"{path}: --time_major says {TIME_FIRST}, but the run "
                                       f"recorded {CLIPS_FIRST}")


@pytest.mark.parametrize("time_major", [False, True])
def test_no_message_suggests_the_layout_the_data_contradict(tmp_path, time_major):
    path = save_clips(tmp_path / "waves.npy", waves(20, 5), time_major)
    right, wrong = (TIME_FIRST, CLIPS_FIRST) if time_major else (CLIPS_FIRST, TIME_FIRST)
    for flag in (None, True):
        for recorded in (None, "time_major", "clips_first"):
            for seq_length in (2, 10):  # 10: too short as stored, not read the other way
                try:
                    message = open_clips(path, flag, seq_length=seq_length, recorded=recorded)[1]
                    assert f"read as {right}, measured" in message
                except DataError as error:
                    message = str(error)
                assert f"read as {wrong}" not in message and "pass --time_major" not in message
                assert wrong not in message or f"but the data are stored {right}" in message


def test_uint8_is_scaled_to_0_1_and_floats_are_read_as_float32(tmp_path):
    clips = ramps(26, 6)  # 0 .. 255
    window = open_clips(save_clips(tmp_path / "u8.npy", clips))[0].window([0, 25], [0, 0], 6)
    np.testing.assert_array_equal(window[..., 0], clips[[0, 25]] / np.float32(255))
    assert window[0, 0].max() == 0 and window[1, 5].min() == 1
    halves = open_clips(save_clips(tmp_path / "f16.npy", (clips / 255).astype(np.float16)))[0]
    assert halves.window([1], [0], 4).dtype == np.float32 and halves.dtype == "float16"


def test_a_time_major_npy_is_read_through_the_file_not_a_copy(tmp_path):
    path = save_clips(tmp_path / "time.npy", np.zeros((3, 4, 4, 4), np.uint8), time_major=True)
    clips, _ = open_clips(path, time_major=True)
    with open(path, "r+b") as f:  # the last byte: clip 2, frame 3, pixel (3, 3)
        f.seek(-1, os.SEEK_END)
        f.write(b"\xff")
    assert clips.window([2], [3], 1)[0, 0, 3, 3, 0] == 1.0  # a memory map sees the change


@pytest.mark.parametrize("time_major", [False, True])
def test_training_batches_are_a_function_of_seed_and_step_and_never_held_out(tmp_path, time_major):
    clips, _ = open_clips(save_clips(tmp_path / "r.npy", ramps(), time_major), holdout=0.25)
    assert clips.time_major == time_major  # measured
    seen = set()
    for step in range(200):
        batch = clips.batch(7, step, 16, 4)
        assert batch.shape == (16, 4, 4, 4, 1) and batch.dtype == np.float32
        np.testing.assert_array_equal(batch, clips.batch(7, step, 16, 4))
        value = np.rint(batch[:, :, 0, 0, 0] * 255).astype(int)  # (16, 4): 10 * clip + frame
        clip, frame = value // 10, value % 10
        assert (clip == clip[:, :1]).all() and (np.diff(frame, axis=1) == 1).all()
        seen.update(zip(clip[:, 0], frame[:, 0]))
    assert seen == {(c, s) for c in range(15) for s in range(5)}  # clips 15..19 held out
    assert not np.array_equal(clips.batch(7, 0, 16, 4), clips.batch(7, 1, 16, 4))
    assert not np.array_equal(clips.batch(7, 0, 16, 4), clips.batch(8, 0, 16, 4))


def test_held_out_count_is_the_last_fraction_at_least_one_leaving_one():
    cases = ((10, 0.1), (100, 0.07), (10, 0.32), (10, 0.36), (3, 0.1), (10000, 0.05))
    assert [held_out_count(n, holdout) for n, holdout in cases] == [1, 7, 3, 4, 1, 500]
    for n, holdout in ((2, 0.9), (10, 0.0), (10, 1.0)):
        with pytest.raises(DataError, match="--holdout"):
            held_out_count(n, holdout)


@pytest.mark.parametrize("time_major", [False, True])
def test_held_out_clips_are_the_last_ones_from_frame_0(tmp_path, time_major):
    clips, _ = open_clips(save_clips(tmp_path / "r.npy", ramps(), time_major), holdout=0.2)
    every = np.concatenate(list(clips.held_out(4, 8, batch_size=3)))
    assert [len(b) for b in clips.held_out(4, 8, batch_size=3)] == [3, 1]
    assert every.shape == (4, 8, 4, 4, 1)
    np.testing.assert_array_equal(every[..., 0] * np.float32(255), ramps()[16:])
    np.testing.assert_array_equal(next(clips.held_out(1, 3)), every[:1, :3])
    for count, length in ((5, 8), (4, 9)):
        with pytest.raises(DataError, match="holds out 4 clips of 8 frames"):
            next(clips.held_out(count, length))


def test_a_file_too_small_to_score_names_the_least_holdout_that_is(tmp_path):
    for n in range(3, 300):
        for holdout in (0.01, 0.1):
            clips = Clips(f"{n}.npy", np.zeros((n, 2, 4, 4), np.uint8), False, holdout)
            if clips.held_out_count >= 2:
                clips.check_evaluable()
                continue
            with pytest.raises(DataError) as error:
                clips.check_evaluable()
            fix = float(re.fullmatch(rf"{n}\.npy: 1 of its {n} clips is held out, but evaluation "
                                     r"needs 2: use --holdout (\S+) or more", str(error.value))[1])
            assert held_out_count(n, fix) >= 2 > held_out_count(n, round(fix - 0.01, 2))
    with pytest.raises(DataError, match="2 clips is held out, but evaluation needs 2: use at "
                                        "least 3 clips"):
        Clips("2.npy", np.zeros((2, 2, 4, 4), np.uint8), False, 0.1).check_evaluable()


def test_the_fingerprint_follows_the_data_and_nothing_else(tmp_path):
    clips = waves(4, 5)
    fingerprint = open_clips(save_clips(tmp_path / "a.npy", clips))[0].verify()
    np.savez(tmp_path / "same.npz", clips)
    assert open_clips(save_clips(tmp_path / "b.npy", clips))[0].verify() == fingerprint
    assert open_clips(str(tmp_path / "same.npz"))[0].verify() == fingerprint
    changed = clips.copy()
    changed[3, 4, 7, 7] ^= 1
    assert open_clips(save_clips(tmp_path / "c.npy", changed))[0].verify() != fingerprint
    assert open_clips(save_clips(tmp_path / "d.npy", clips[..., None]))[0].verify() != fingerprint


class Bar:
    """A progress bar that records its total, each update and its closing in `seen`."""

    def __init__(self, total):
        self.seen = [total]

    def update(self, size):
        self.seen.append(size)

    def close(self):
        self.seen.append("closed")


def test_verify_is_one_chunked_pass_and_describe_records_it(tmp_path, monkeypatch):
    monkeypatch.setattr(clip_file, "CHUNK", 64)  # one 4x4 float32 frame
    data = np.full((2, 3, 4, 4), 0.5, np.float32)
    path = save_clips(tmp_path / "g.npy", data, time_major=True)
    clips, _ = open_clips(os.path.relpath(path), time_major=True)
    bars = []
    clips.verify(lambda total: bars.append(Bar(total)) or bars[-1])
    assert [bar.seen for bar in bars] == [[384] + [64] * 6 + ["closed"]]
    description = clips.describe()
    assert description == {"path": path, "shape": [2, 3, 4, 4, 1], "dtype": "float32",
                           "layout": "time_major", "fingerprint": description["fingerprint"]}
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"\x00")
    assert clips.verify() == description["fingerprint"]  # computed once per object
    assert open_clips(path, time_major=True)[0].verify() != description["fingerprint"]
    data[1, 2, 3, 3] = 2.0  # in the last of the 6 chunks
    with pytest.raises(DataError, match="found 2"):
        open_clips(save_clips(tmp_path / "f.npy", data))[0].verify()


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_the_mean_frame_is_the_training_clips_mean(tmp_path, monkeypatch, time_major, dtype):
    monkeypatch.setattr(clip_file, "CHUNK", 3 * 16)  # chunks of 3 frames straddle the clips
    clips = waves(20, 8, side=4)
    clips[18:] //= 2  # the held-out clips darker: their frames would change the mean
    stored = clips if dtype == np.uint8 else (clips / 255).astype(dtype)
    source, _ = open_clips(save_clips(tmp_path / "w.npy", stored, time_major))
    want = clips[:18].mean(axis=(0, 1)) / 255
    assert source.mean_frame().shape == (4, 4, 1) and source.mean_frame().dtype == np.float32
    np.testing.assert_allclose(source.mean_frame()[..., 0], want, rtol=1e-6)


def test_nothing_is_unpickled(tmp_path, monkeypatch):
    path = tmp_path / "objects.npy"
    _object(path)
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(DataError, match="Python objects"):
        open_clips(str(path))
