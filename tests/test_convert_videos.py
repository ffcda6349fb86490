import os

import av
import numpy as np
import pytest
from PIL import Image

import convert_videos
from convert_videos import main
from systems.clip_file import held_out_count, open_clips
from systems.errors import DataError
from systems.video_file import is_video, read_frames


def moving_square(frames, side=32, colour=(255, 255, 255)):
    """uint8 `(frames, side, side, 3)`: an 8x8 square moving 2 pixels right a frame, on black."""
    video = np.zeros((frames, side, side, 3), np.uint8)
    for k in range(frames):
        video[k, 8:16, 2 * k : 2 * k + 8] = colour
    return video


def counter(frames, first=0, side=32):
    """uint8 `(frames, side, side, 3)`: frame k shows `first + k` in binary, one bar a bit, so no
    two frames of `counter`s with disjoint ranges are equal (up to 256)."""
    bits = (np.arange(first, first + frames)[:, None] >> np.arange(8)) & 1  # (frames, 8)
    bars = np.repeat(bits * 255, side // 8, axis=1).astype(np.uint8)  # (frames, side)
    return np.broadcast_to(bars[:, None, :, None], (frames, side, side, 3))


def textured(frames, side=64):
    """uint8 `(frames, side, side, 3)`: a noise texture scrolling 2 pixels a frame, for videos of
    many kilobytes a few seconds long."""
    texture = np.random.default_rng(1).integers(0, 256, (side, side + 2 * frames), np.uint8)
    return np.stack([texture[:, 2 * k : 2 * k + side, None].repeat(3, -1) for k in range(frames)])


def write_video(path, video, codec="libx264", format=None):
    same_bytes = {"fflags": "+bitexact", "movflags": "+faststart"}  # an mp4's index first, too
    with av.open(str(path), "w", format=format, container_options=same_bytes) as container:
        options = {"crf": "20"} if codec == "libx264" else {}
        stream = container.add_stream(codec, rate=10, options=options)
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        stream.thread_count = 1  # with threads, x264 now and then encodes differently
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return str(path)


def write_gif(path, video):
    first, *rest = (Image.fromarray(frame) for frame in video)
    first.save(path, save_all=True, append_images=rest, duration=100, loop=0)
    return str(path)


def damage(path, seed):
    """Overwrite one random byte of each KB of `path` but its first four and its last."""
    data = bytearray(open(path, "rb").read())
    rng = np.random.default_rng(seed)
    for start in range(4096, len(data) - 1024, 1024):
        data[start + rng.integers(1024)] = rng.integers(256)
    open(path, "wb").write(data)
    return path


def run(capsys, *argv):
    """`(exit code, stdout lines, the converter's stderr lines)`."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = err.replace("\r", "\n").splitlines()
    return code, out.splitlines(), [line for line in lines if line.startswith(convert_videos.PROG)]


def test_videos_become_gray_clips_and_a_non_video_is_named_and_skipped(tmp_path, capsys):
    mp4 = write_video(tmp_path / "a.mp4", moving_square(12), codec="mpeg4")
    gif = write_gif(tmp_path / "b.gif", moving_square(7))
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    out = tmp_path / "clips.npy"
    code, stdout, err = run(capsys, mp4, notes, gif, "--out", out, "--size", 16, 16,
                            "--length", 3)
    assert code == 0 and stdout[-1] == f"wrote {out}: 5 clips of 3 frames (1 held out, from {gif})"
    assert err == [f"convert_videos.py: warning: skipping {notes}: cannot be read as a video"]
    clips = np.load(out)
    assert clips.shape == (5, 3, 16, 16) and clips.dtype == np.uint8  # 4 of the mp4, 1 of the gif
    want = moving_square(12)[:, ::2, ::2, 0].reshape(4, 3, 16, 16)  # halved: 4x4 squares
    assert np.abs(clips[:4].astype(int) - want).mean() < 4  # mpeg4 is lossy
    np.testing.assert_array_equal(clips[4], moving_square(3)[:, ::2, ::2, 0])
    assert open_clips(str(out), seq_length=3)[0].shape == (5, 3, 16, 16, 1)  # (clips, note)
    assert sorted(os.listdir(tmp_path)) == ["a.mp4", "b.gif", "clips.npy", "notes.mp4"]


def test_rgb_clips_overlap_by_the_stride(tmp_path, capsys):
    red = moving_square(8, colour=(255, 0, 0))
    paths = write_gif(tmp_path / "a.gif", red), write_gif(tmp_path / "b.gif", red[:4])
    out = tmp_path / "clips.npy"
    code, _, _ = run(capsys, *paths, "--out", out, "--size", 32, 32, "--length", 4,
                     "--stride", 2, "--rgb")
    clips = np.load(out)
    assert code == 0 and clips.shape == (4, 4, 32, 32, 3)  # starts 0, 2, 4 of a; b's one
    np.testing.assert_array_equal(clips[1, :2], clips[0, 2:])
    np.testing.assert_array_equal(clips[2], red[4:])


def test_frames_are_averaged_down_not_sampled(tmp_path, capsys):
    stripes = np.zeros((2, 32, 32, 3), np.uint8)
    stripes[0, :, ::2] = stripes[1, :, 1::2] = 255  # 1-pixel stripes: 2x smaller, mid-gray
    paths = [write_gif(tmp_path / f"{name}.gif", stripes) for name in "ab"]
    out = tmp_path / "clips.npy"
    code, _, _ = run(capsys, *paths, "--out", out, "--size", 16, 16, "--length", 2)
    assert code == 0 and np.abs(np.load(out).astype(int) - 128).max() <= 2


def test_folders_are_searched_deep_and_any_extension_is_a_video(tmp_path, capsys):
    top, deep = tmp_path / "top", tmp_path / "top" / "sub" / "deeper"
    deep.mkdir(parents=True)
    write_gif(top / "a.gif", counter(4, 0))
    write_video(deep / "b.m4v", counter(8, 20), format="mp4")
    write_video(top / "sub" / "c.weird", counter(4, 40), codec="libvpx", format="webm")
    (top / "notes.txt").write_text("a line of text\n" * 100)  # FFmpeg would draw it as ANSI art
    Image.fromarray(counter(1)[0]).save(top / "still.png")
    out = tmp_path / "clips.npy"
    code, stdout, err = run(capsys, top, "--out", out, "--size", 32, 32, "--length", 4)
    assert code == 0 and stdout[-1].endswith(f"3 clips of 4 frames (1 held out, from {deep}/b.m4v)")
    assert [line.split(": ")[2] for line in err] == [f"skipping {top}/{name}" for name in
                                                    ("notes.txt", "still.png")]
    bits = np.load(out)[:, :, 16, 2::4] > 128  # (N, T, 8): each frame's number, in bits
    numbers = (bits * 2 ** np.arange(8)).sum(-1)  # b's second clip dropped: 1 held out of 3
    np.testing.assert_array_equal(numbers, [range(0, 4), range(40, 44), range(20, 24)])


@pytest.mark.parametrize("ext, seed", [("mkv", 2), ("mp4", 0)])
def test_a_damaged_video_is_named_and_skipped(tmp_path, capsys, ext, seed):
    damaged = damage(write_video(tmp_path / f"a.{ext}", textured(40)), seed)
    paths = [write_gif(tmp_path / f"{name}.gif", counter(4, first)) for name, first in
             [("b", 0), ("c", 10)]]
    out = tmp_path / "clips.npy"
    code, stdout, err = run(capsys, damaged, *paths, "--out", out, "--size", 32, 32,
                            "--length", 4)
    assert code == 0 and stdout[-1].startswith(f"wrote {out}: 2 clips of 4 frames")
    assert len(err) == 1 and err[0].startswith(f"convert_videos.py: warning: skipping {damaged}:"
                                               " damaged (")
    np.testing.assert_array_equal(np.load(out), np.stack([counter(4, 0), counter(4, 10)])[..., 0])


def test_held_out_clips_share_no_frame_with_training_clips(tmp_path, capsys):
    paths = [write_gif(tmp_path / f"{name}.gif", counter(frames, first)) for name, frames, first
             in [("a", 30, 0), ("b", 10, 50), ("c", 12, 100)]]
    out = tmp_path / "out" / "clips.npy"
    code, stdout, _ = run(capsys, tmp_path, f"{tmp_path}/./c.gif", "--out", out, "--size", 16,
                          16, "--length", 4, "--stride", 1)  # c named twice, read once
    clips = np.load(out)  # a: 27 clips, b: 7, c: 9; the last 4 held out, from c alone
    assert code == 0 and len(clips) == 27 + 7 + 4 and held_out_count(len(clips), 0.1) == 4
    assert stdout[0] == f"holding out 4 of the 9 clips of {tmp_path}/./c.gif (--holdout 0.1); " \
                        "the other 5 dropped"
    training = {frame.tobytes() for frame in clips[:-4].reshape(-1, 16, 16)}
    held_out = {frame.tobytes() for frame in clips[-4:].reshape(-1, 16, 16)}
    assert len(held_out) == 7 and not held_out & training


def test_one_video_is_refused_as_its_clips_cannot_be_held_out(tmp_path, capsys):
    out = tmp_path / "clips.npy"
    code, stdout, err = run(capsys, write_gif(tmp_path / "a.gif", counter(40)), "--out", out,
                            "--size", 16, 16, "--length", 4)
    assert code == 2 and not out.exists() and not stdout
    assert err == ["convert_videos.py: error: held-out clips need videos of their own, and 1 "
                   "video cannot give --holdout 0.1 of the clips so: pass more videos, or split "
                   "a long one into several files"]


def test_the_out_folder_is_made_before_decoding_and_an_unusable_one_refused(tmp_path, capsys,
                                                                           monkeypatch):
    out, made = tmp_path / "new" / "deeper" / "clips.npy", []

    def read(*args, **kwargs):
        made.append(out.parent.is_dir())  # at each video's decoding
        return read_frames(*args, **kwargs)

    monkeypatch.setattr(convert_videos, "read_frames", read)
    paths = [write_gif(tmp_path / f"{name}.gif", counter(4)) for name in "ab"]
    assert run(capsys, *paths, "--out", out, "--size", 16, 16, "--length", 4)[0] == 0
    assert made == [True, True] and out.exists()
    (tmp_path / "file").write_text("in the way")
    code, _, err = run(capsys, *paths, "--out", tmp_path / "file" / "clips.npy", "--size", 16,
                       16, "--length", 4)
    assert code == 2 and len(err) == 1 and "is a file, not a folder" in err[0]
    assert made == [True, True]  # nothing more decoded


def test_a_killed_conversions_temporary_file_is_removed(tmp_path, capsys):
    for name in (".tmp-k1ll3d.npy", ".tmp-other.json", "mine.npy"):
        (tmp_path / name).write_text("left")
    paths = [write_gif(tmp_path / f"{name}.gif", counter(4)) for name in "ab"]
    code, _, _ = run(capsys, *paths, "--out", tmp_path / "clips.npy", "--size", 16, 16,
                     "--length", 4)
    assert code == 0 and sorted(os.listdir(tmp_path)) == [".tmp-other.json", "a.gif", "b.gif",
                                                          "clips.npy", "mine.npy"]


def test_read_frames_decodes_only_the_frames_asked_for(tmp_path):
    video = write_video(tmp_path / "a.mkv", counter(40))
    whole = read_frames(video, (16, 16), rgb=True)
    data = open(video, "rb").read()
    open(video, "wb").write(data[: len(data) * 2 // 3])  # cut short: a broken ending
    with pytest.raises(DataError, match=f"^{video}: damaged"):
        read_frames(video, (16, 16), rgb=True)
    first = read_frames(video, (16, 16), rgb=True, count=5)
    assert whole.shape == (40, 16, 16, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, whole[:5])


def test_a_video_is_what_ffmpeg_reads_as_one_but_text_and_stills(tmp_path):
    write_video(tmp_path / "clip.MTS", counter(2), format="matroska")
    (tmp_path / "notes.txt").write_text("a line of text\n" * 100)
    Image.fromarray(counter(1)[0]).save(tmp_path / "still.png")
    assert [is_video(str(tmp_path / name)) for name in
            ("clip.MTS", "notes.txt", "still.png", "missing.mp4", "")] == [True] + [False] * 4


@pytest.mark.parametrize("frames", [0, 2])
def test_nothing_is_written_when_no_clip_results(tmp_path, capsys, frames):
    paths = [write_gif(tmp_path / "short.gif", moving_square(2))] if frames else []
    (tmp_path / "notes.txt").write_text("not a video")
    out = tmp_path / "clips.npy"
    code, _, err = run(capsys, *paths, tmp_path / "notes.txt", "--out", out, "--size", 16, 16,
                       "--length", 3)
    assert code == 2 and not out.exists()
    assert len(err) == len(paths) + 2 and "nothing written" in err[-1]
    skipped = [line.split(": ")[2] for line in err[:-1]]  # by path
    assert skipped == [f"skipping {tmp_path}/notes.txt"] + [f"skipping {p}" for p in paths]
    assert not paths or err[1].endswith("short.gif: 2 frames, fewer than --length 3")
    assert not any(name.startswith(".tmp-") for name in os.listdir(tmp_path))


@pytest.mark.parametrize("flags, words", [
    (["--size", "66", "64", "--length", "3"], "--size 66 64: frames of 66x64 (H x W), but each "
                                              "side must be a multiple of 4: use 64x64 or 68x64"),
    (["--size", "16", "16", "--length", "0"], "--length must be an integer of at least 1, got 0"),
    (["--size", "16", "16", "--length", "3", "--stride", "0"], "--stride must be"),
    (["--size", "16", "16", "--length", "3", "--holdout", "1"], "--holdout must be in (0, 1)"),
    (["--size", "16", "--length", "3"], "--size: expected 2 arguments"),
    (["--size", "16", "16"], "required: --length"),
    (["--size", "16", "16", "--length", "3", "--out", "clips.txt"], "must name a .npy file"),
    (["missing.mp4", "--size", "16", "16", "--length", "3"], "missing.mp4: no such file"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, capsys, monkeypatch, flags, words):
    monkeypatch.chdir(tmp_path)
    write_gif(tmp_path / "v.gif", moving_square(4))
    argv = ["v.gif", "--out", "clips.npy", *flags] if "--out" not in flags else ["v.gif", *flags]
    code, stdout, err = run(capsys, *argv)
    assert code == 2 and stdout == [] and len(err) == 1 and words in err[0]
    assert os.listdir(tmp_path) == ["v.gif"]


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert "python convert_videos.py videos/ --out clips.npy" in capsys.readouterr().out
