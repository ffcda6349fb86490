import os

import av
import numpy as np
import pytest
from PIL import Image

from systems.clip_file import open_clips
from systems.convert_videos import main


def moving_square(frames, side=32, colour=(255, 255, 255)):
    """uint8 `(frames, side, side, 3)`: an 8x8 square moving 2 pixels right a frame, on black."""
    video = np.zeros((frames, side, side, 3), np.uint8)
    for k in range(frames):
        video[k, 8:16, 2 * k : 2 * k + 8] = colour
    return video


def write_mp4(path, video):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        for frame in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return str(path)


def write_gif(path, video):
    first, *rest = (Image.fromarray(frame) for frame in video)
    first.save(path, save_all=True, append_images=rest, duration=100, loop=0)
    return str(path)


def run(capsys, *argv):
    """`(exit code, stdout, stderr lines)` of the converter."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if "convert_videos: " in line]


def test_mp4_and_gif_become_gray_clips_and_a_non_video_is_skipped(tmp_path, capsys):
    mp4 = write_mp4(tmp_path / "a.mp4", moving_square(12))
    gif = write_gif(tmp_path / "b.gif", moving_square(7))
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    out = tmp_path / "clips.npy"
    code, stdout, err = run(capsys, mp4, notes, gif, "--out", out, "--size", 16, 16,
                            "--length", 3)
    assert code == 0 and f"wrote {out}: 6 clips of 3 frames" in stdout
    assert len(err) == 1 and "warning" in err[0] and str(notes) in err[0]
    clips = np.load(out)
    assert clips.shape == (6, 3, 16, 16) and clips.dtype == np.uint8  # 4 of the mp4, 2 of the gif
    want = moving_square(12)[:, ::2, ::2, 0].reshape(4, 3, 16, 16)  # halved: 4x4 squares
    assert np.abs(clips[:4].astype(int) - want).mean() < 4  # mpeg4 is lossy
    np.testing.assert_array_equal(clips[4:], moving_square(6)[:, ::2, ::2, 0].reshape(2, 3, 16, 16))
    assert open_clips(str(out), seq_length=3).shape == (6, 3, 16, 16, 1)
    assert sorted(os.listdir(tmp_path)) == ["a.mp4", "b.gif", "clips.npy", "notes.mp4"]


def test_rgb_clips_overlap_by_the_stride(tmp_path, capsys):
    gif = write_gif(tmp_path / "red.gif", moving_square(8, colour=(255, 0, 0)))
    out = tmp_path / "clips.npy"
    code, _, _ = run(capsys, gif, "--out", out, "--size", 32, 32, "--length", 4, "--stride", 2,
                     "--rgb")
    clips = np.load(out)
    assert code == 0 and clips.shape == (3, 4, 32, 32, 3)  # starts 0, 2, 4
    np.testing.assert_array_equal(clips[1, :2], clips[0, 2:])
    np.testing.assert_array_equal(clips[2], moving_square(8, colour=(255, 0, 0))[4:])


def test_frames_are_averaged_down_not_sampled(tmp_path, capsys):
    stripes = np.zeros((2, 32, 32, 3), np.uint8)
    stripes[0, :, ::2] = stripes[1, :, 1::2] = 255  # 1-pixel stripes: 2x smaller, mid-gray
    out = tmp_path / "clips.npy"
    code, _, _ = run(capsys, write_gif(tmp_path / "stripes.gif", stripes), "--out", out,
                     "--size", 16, 16, "--length", 2)
    assert code == 0 and np.abs(np.load(out).astype(int) - 128).max() <= 2


def test_a_folder_is_its_videos_by_name(tmp_path, capsys):
    write_gif(tmp_path / "b.gif", moving_square(4, colour=(100, 100, 100)))
    write_gif(tmp_path / "a.gif", moving_square(4, colour=(200, 200, 200)))
    (tmp_path / "readme.txt").write_text("ignored: not a video's name")
    out = tmp_path / "out" / "clips.npy"
    out.parent.mkdir()
    code, _, err = run(capsys, tmp_path, "--out", out, "--size", 32, 32, "--length", 4)
    assert code == 0 and err == []
    assert [clip.max() for clip in np.load(out)] == [200, 100]


@pytest.mark.parametrize("frames", [0, 2])
def test_nothing_is_written_when_no_clip_results(tmp_path, capsys, frames):
    paths = [write_gif(tmp_path / "short.gif", moving_square(2))] if frames else []
    (tmp_path / "notes.txt").write_text("not a video")
    out = tmp_path / "clips.npy"
    code, _, err = run(capsys, *paths, tmp_path / "notes.txt", "--out", out, "--size", 16, 16,
                       "--length", 3)
    assert code == 2 and not out.exists()
    assert len(err) == len(paths) + 2 and "nothing written" in err[-1]
    assert all("warning: skipping" in line for line in err[:-1]) and "notes.txt" in err[-2]
    assert not paths or "short.gif: 2 frames, fewer than --length 3" in err[0]
    assert not any(name.startswith(".tmp-") for name in os.listdir(tmp_path))


@pytest.mark.parametrize("flags, words", [
    (["--size", "66", "64", "--length", "3"], "--size 66 64: frames of 66x64 (H x W), but each "
                                              "side must be a multiple of 4: use 64x64 or 68x64"),
    (["--size", "16", "16", "--length", "0"], "--length must be an integer of at least 1, got 0"),
    (["--size", "16", "16", "--length", "3", "--stride", "0"], "--stride must be"),
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
    assert code == 2 and stdout == "" and len(err) == 1 and words in err[0]
    assert os.listdir(tmp_path) == ["v.gif"]


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert "python -m systems.convert_videos videos/ --out clips.npy" in capsys.readouterr().out
