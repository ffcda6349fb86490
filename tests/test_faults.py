"""What a crash, a damaged file or a full disk leaves behind, and the next run's answer to it.

Most tests start from one tiny finished run (`finished`: steps 1-4, checkpoints at 2 and 4),
copied (`run_dir`), then damaged, and call the scripts' `main` in this process."""

import errno
import os
import shutil
import subprocess

import pytest

from model import checkpoint, runs, training
from model.config import MODELS
from tests.helpers import error_lines, files, logged_steps, one_line, probe, rerun, steps_in

CONV = MODELS["conv"].defaults


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("name", ["model.weights.h5", "train_state.h5", "state.json"])
def test_damaged_newest_checkpoint_is_set_aside_and_the_previous_one_used(run_dir, capsys, name):
    damaged = run_dir / "ckpt-0000004" / name
    truncate(damaged, keep=0 if name == "train_state.h5" else 0.5)
    damaged_bytes = damaged.read_bytes()
    assert rerun(run_dir, "--max_step", 2) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "ckpt-0000004 does not load" in warnings[0], out
    assert "resuming from step 2" in out
    assert (run_dir / "ckpt-0000004.damaged" / name).read_bytes() == damaged_bytes  # kept
    assert steps_in(run_dir) == [2]


def test_resume_before_a_damaged_checkpoint_keeps_the_good_one_and_logs_each_step_once(run_dir):
    (run_dir / "ckpt-0000004" / "train_state.h5").write_bytes(b"")
    assert rerun(run_dir, "--max_step", 3, "--save_every", 1) == 0  # trains step 3 again
    # `checkpoint.save` keeps the newest KEEP = 2 checkpoints: were the damaged step 4 still
    # among them, the step-3 save would have deleted the good step 2
    assert steps_in(run_dir) == [2, 3]
    # TensorBoard drops what the first run logged from step 3 on: steps 3 and 4 are orphans
    assert logged_steps(run_dir) == [1, 2, 3]
    assert len(os.listdir(run_dir / "events")) == 2


def test_no_checkpoint_loads(run_dir, capsys):
    for step in (2, 4):
        truncate(run_dir / f"ckpt-{step:07d}" / "state.json")
    assert rerun(run_dir) == 2
    line = one_line(capsys.readouterr().err)
    assert f"no checkpoint in {str(run_dir)!r} loads" in line and "--fresh" in line
    assert sorted(p.name for p in run_dir.glob("ckpt-*")) == ["ckpt-0000002", "ckpt-0000004"]


def test_leftover_temporaries_are_removed(run_dir):
    (run_dir / ".ckpt-k1ll3d").mkdir()
    (run_dir / ".ckpt-k1ll3d" / "model.weights.h5").write_bytes(b"half")
    (run_dir / ".tmp-abc.json").write_text("{")
    (run_dir / "videos" / ".tmp-xyz.mp4").write_bytes(b"half")
    assert rerun(run_dir) == 0
    assert sorted(os.listdir(run_dir)) == ["ckpt-0000002", "ckpt-0000004", "events", "videos"]
    assert not [n for n in os.listdir(run_dir / "videos") if n.startswith(".")]


def test_missing_video_is_written_on_resume(run_dir):
    (run_dir / "videos" / "step_0000004.mp4").unlink()
    assert rerun(run_dir) == 0  # already at --max_step: nothing to train, the video all the same
    assert probe(str(run_dir / "videos" / "step_0000004.mp4"))[:3] == ("h264", "yuv420p", 50)


@pytest.mark.parametrize("flag, value", [("batch_size", 4), ("num_balls", 3), ("seq_length", 6),
                                         ("lr", 0.01), ("seed", 1), ("friction", None)])
def test_resume_refuses_flags_that_change_the_run(run_dir, capsys, flag, value):
    before = files(run_dir)
    assert rerun(run_dir, f"--{flag}", *([] if value is None else [value])) == 2
    line = one_line(capsys.readouterr().err)
    saved = getattr(CONV, flag) if flag != "batch_size" else 2
    assert f"--{flag} {value or True} (saved: {saved})" in line and "--fresh" in line
    assert files(run_dir) == before


def test_resume_refuses_the_other_model(run_dir, capsys):
    before = files(run_dir)
    assert rerun(run_dir, model="conv_lstm") == 2
    line = one_line(capsys.readouterr().err)
    assert f"--train_dir {str(run_dir)!r} holds a 'conv' run, not 'conv_lstm'" in line
    assert files(run_dir) == before


def test_a_finished_run_does_nothing_and_accepts_the_resumable_flags(run_dir, capsys):
    before = files(run_dir)
    assert rerun(run_dir, "--save_every", 3, "--log_every", 3, "--keep_every", 3) == 0
    assert "already trained to step 4 (--max_step 4); nothing to do" in capsys.readouterr().out
    assert files(run_dir) == before  # no checkpoint, video or event file more
    with pytest.raises(SystemExit):
        training.parse_flags(CONV, ["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "only --max_step, --save_every, --log_every, --keep_every may change" in help_text
    assert "2 a bad flag" in help_text and "--fresh" in help_text


@pytest.mark.parametrize("where", ["checkpoint", "video"])
def test_write_failure_is_one_line_and_keeps_the_last_checkpoint(run_dir, capfd, monkeypatch,
                                                                  where):
    """A simulated full disk (a real one: `test_full_disk`) at a checkpoint (the last one
    missing, as if killed before it landed) or a video (the missing one, written on resume)."""
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[-1]))

    if where == "checkpoint":
        shutil.rmtree(run_dir / "ckpt-0000004")
        monkeypatch.setattr(checkpoint, "write_json", no_space)
        path = run_dir / "ckpt-0000004"
    else:
        (run_dir / "videos" / "step_0000004.mp4").unlink()
        monkeypatch.setattr(shutil, "copyfile", no_space)
        path = run_dir / "videos" / "latest.mp4"
    assert rerun(run_dir) == 1
    err = capfd.readouterr().err
    [error] = [line for line in err.splitlines() if "error" in line.lower()]
    assert error.endswith(f": error: cannot write {path}: No space left on device"), err
    assert "Traceback" not in err
    assert not [n for n in os.listdir(run_dir) if n.startswith(".")]
    last = runs.load(checkpoint.list_checkpoints(run_dir)[-1], with_optimizer=True)
    assert last.step >= 2


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (root only; elsewhere `test_write_failure...` simulates one)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_full_disk(finished, tiny_disk, capfd):
    """A disk with 40 kB left (less than a checkpoint): HDF5 crashed (exit 139) once it filled
    up in mid-write; now the run stops before writing, with one line. (In this process: were
    HDF5 to crash again, the test would end with it.)"""
    run_dir = shutil.copytree(finished, tiny_disk / "run")
    shutil.rmtree(run_dir / "ckpt-0000004")
    usage = shutil.disk_usage(tiny_disk)
    (tiny_disk / "filler").write_bytes(b"\0" * (usage.free - 40_000))
    assert rerun(run_dir) == 1
    err = capfd.readouterr().err
    [line] = error_lines(err)
    assert line.endswith(f": error: cannot write {run_dir}/ckpt-0000004: No space left on device")
    assert "Traceback" not in err and "HDF5" not in err
    assert not [n for n in os.listdir(run_dir) if n.startswith(".")]
    assert runs.load(run_dir / "ckpt-0000002", with_optimizer=True).step == 2


def test_writability_check_leaves_nothing_behind(tmp_path):
    training.parse_flags(CONV, ["--train_dir", str(tmp_path / "new" / "run")])
    assert os.listdir(tmp_path) == []
