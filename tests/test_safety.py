"""A user's files, two runs on one folder, swapped or damaged folders, flags that train nothing,
start-up errors and signals. Each case is made for real (foreign files in a real folder, a
second process that holds the lock, a damaged file, a real signal) and must end in one line and
the right exit code, with nothing of the user's lost. Most run the scripts' `main` in this
process, on a copy of a tiny finished run (`run_dir`: steps 1-4, checkpoints at 2 and 4)."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

import create_graphs
from model import checkpoint, config, runs, training, video
from model.cli import UsageError
from model.config import MODELS
from systems.bouncing_balls import Balls
from tests.helpers import ROOT, files, one_line, rerun

CONV = MODELS["conv"].defaults
SHIPPED = os.path.join(ROOT, "checkpoints", "pretrained")
FOREIGN = {  # a user's folder: no run of ours, though some names look like ours
    "notes.txt": b"mine",
    "videos/holiday.mp4": b"not ours",
    "events/events.out.tfevents.1700000000.laptop.4242.0.v2": b"another program's",
    "ckpt-notes/todo.txt": b"keep",
}
HOLD = """import sys, time
from model import checkpoint
with checkpoint.locked(sys.argv[1]):
    print("held", flush=True)
    time.sleep(300)
"""


def test_fresh_removes_only_what_runs_of_ours_wrote_and_starts_over(finished, tmp_path, capsys):
    """`--fresh` with another seed: no refusal, no resume, nothing of the old run left to be
    resumed or shown later (its step-4 checkpoint would be newer than the new run's), and
    nothing of the user's touched."""
    home = tmp_path / "home"
    for name, data in FOREIGN.items():
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_bytes(data)
    assert checkpoint.remove_run(str(home), {"videos": video.VIDEO_NAME}) == 0  # no run of ours
    assert files(home) == FOREIGN
    shutil.copytree(finished, home, dirs_exist_ok=True)  # now it holds one, a damaged one too
    shutil.copytree(home / "ckpt-0000002", home / "ckpt-0000001.damaged")
    first = files(home)
    assert rerun(home, "--fresh", "--seed", 1, "--max_step", 2) == 0
    out = capsys.readouterr().out
    assert "--fresh: removed 7 checkpoints, videos and event files" in out
    assert "resuming" not in out
    second = files(home)
    ours = {n for n in second if n not in FOREIGN}
    assert {n: second[n] for n in FOREIGN} == FOREIGN
    events = [n for n in ours if n.startswith("events/")]
    assert sorted(ours - set(events)) == [
        "ckpt-0000002/model.weights.h5", "ckpt-0000002/state.json", "ckpt-0000002/train_state.h5",
        "videos/latest.mp4", "videos/step_0000002.mp4"]
    assert len(events) == 1 and events[0] not in first  # the old run's events went
    loaded = runs.load(home / "ckpt-0000002", with_optimizer=True)
    assert loaded.config.seed == 1 and int(loaded.optimizer.iterations) == 2  # Adam started over


@pytest.fixture
def holder(run_dir):
    """Another process holding `run_dir`'s lock through `checkpoint.locked`."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_run_on_a_folder_in_use_exits_2_until_the_holder_dies(run_dir, holder, capsys):
    before = files(run_dir)
    for flags in ([], ["--fresh"]):
        assert rerun(run_dir, *flags) == 2
        line = one_line(capsys.readouterr().err)
        assert f"{run_dir} is in use by another run (process {holder.pid})" in line
        assert files(run_dir) == before
    holder.send_signal(signal.SIGKILL)  # the kernel releases its lock; its lock file stays
    holder.wait()
    assert (run_dir / checkpoint.LOCK).exists()
    assert rerun(run_dir) == 0 and "nothing to do" in capsys.readouterr().out
    assert not (run_dir / checkpoint.LOCK).exists()


def test_the_lock_holds_while_its_holder_lives_even_when_its_file_is_deleted(run_dir, holder,
                                                                          capsys):
    (run_dir / checkpoint.LOCK).unlink()
    assert rerun(run_dir, "--max_step", 6) == 2
    assert f"{run_dir} is in use by another run" in one_line(capsys.readouterr().err)
    assert checkpoint.list_checkpoints(run_dir)[-1].endswith("ckpt-0000004")


@pytest.mark.parametrize("kind, says", [
    ("empty", "--train_dir is empty: name a folder"),
    ("dangling_link", "is a link to nowhere"),
    ("under_a_file", "/file is a file, not a folder"),
    ("proc", "--train_dir '/proc/run' is not writable"),
    ("sys", "--train_dir '/sys/run' is not writable"),
])
def test_a_train_dir_that_cannot_be_made_is_refused_in_one_line(tmp_path, capsys, kind, says):
    (tmp_path / "file").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    train_dir = {"empty": "", "dangling_link": tmp_path / "link", "under_a_file":
                 tmp_path / "file" / "run", "proc": "/proc/run", "sys": "/sys/run"}[kind]
    before = files(tmp_path)
    assert rerun(train_dir) == 2
    assert says in one_line(capsys.readouterr().err)
    assert files(tmp_path) == before and sorted(os.listdir(tmp_path)) == ["file", "link"]
    with pytest.raises(UsageError):
        training.parse_flags(CONV, ["--train_dir", str(train_dir)])


def test_one_checkpoint_as_train_dir_is_refused_with_the_way_to_train_on(capsys):
    shipped = os.path.join(SHIPPED, "conv")
    before = files(shipped)
    assert rerun(shipped, "--max_step", 10) == 2
    line = one_line(capsys.readouterr().err)
    assert "is one checkpoint, not a run folder" in line and "ckpt-0200000" in line
    assert files(shipped) == before


def test_sigterm_inside_a_save_ends_in_one_line_and_the_run_resumes(run_dir, capsys, monkeypatch):
    def unhandled(signum, frame):
        raise AssertionError("SIGTERM reached the test's handler, not the script's")

    write_json = checkpoint.write_json

    def terminated_while_saving(path, data):
        os.kill(os.getpid(), signal.SIGTERM)
        write_json(path, data)

    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        monkeypatch.setattr(checkpoint, "write_json", terminated_while_saving)
        assert rerun(run_dir, "--max_step", 6) == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the script's handler is gone
    finally:
        signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].endswith(
        ": terminated; rerun the same command to resume from the last checkpoint")
    assert "Traceback" not in err
    assert sorted(os.listdir(run_dir)) == ["ckpt-0000002", "ckpt-0000004", "events", "videos"]
    monkeypatch.undo()
    assert rerun(run_dir) == 0  # the lock went with the run
    assert "resuming from step 4" in capsys.readouterr().out


def test_ctrl_c_in_create_graphs_from_another_folder(tmp_path, capsys, monkeypatch):
    """Its default folders are the repository's, wherever it runs; Ctrl-C ends it in one line."""
    def interrupted(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C: Python's handler raises KeyboardInterrupt
        raise AssertionError("no KeyboardInterrupt")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(create_graphs, "evaluate", interrupted)
    # Python's own Ctrl-C handler, as in a terminal: a job started in the background by a
    # script (CI's, say) inherits SIGINT ignored, and Python then leaves it ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = create_graphs.main(["--out", "g"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped create_graphs.main")
    finally:
        signal.signal(signal.SIGINT, previous)
    out, err = capsys.readouterr()
    assert code == 130 and out.startswith("weights: ConvLSTM ")  # found, then interrupted
    assert err.strip().splitlines()[-1] == "create_graphs.py: interrupted; nothing written"
    assert "Traceback" not in err and os.listdir(tmp_path) == []


def graphs(conv_lstm_dir, conv_dir, out):
    return create_graphs.main(["--conv_lstm_dir", str(conv_lstm_dir), "--conv_dir", str(conv_dir),
                               "--num_sequences", "2", "--horizon", "2", "--out", str(out)])


def test_create_graphs_refuses_swapped_folders(finished, tmp_path, capsys):
    assert graphs(finished, os.path.join(SHIPPED, "conv_lstm"), tmp_path / "g") == 2
    line = one_line(capsys.readouterr().err)
    assert f"{finished}/ckpt-0000004 holds the conv model, not the ConvLSTM model" in line
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fault", ["damaged", "pruned_while_read"])
def test_create_graphs_reads_a_folder_in_use_past_a_newest_checkpoint_that_does_not_load(
        run_dir, tmp_path, capsys, monkeypatch, fault):
    newest = run_dir / "ckpt-0000004"
    if fault == "damaged":
        state = json.loads((newest / "state.json").read_text())
        (newest / "state.json").write_text(json.dumps({**state, "step": "4"}))
    else:
        restore = checkpoint.restore

        def pruned_while_read(path, *args):
            if os.path.basename(path) == newest.name:
                shutil.rmtree(path)  # as the run's next save prunes it
            return restore(path, *args)

        monkeypatch.setattr(checkpoint, "restore", pruned_while_read)
    (run_dir / ".ckpt-a1b2c3").mkdir()  # the run that holds the folder, saving
    with checkpoint.locked(run_dir):
        before = sorted(os.listdir(run_dir))
        assert graphs(os.path.join(SHIPPED, "conv_lstm"), run_dir, tmp_path / "g") == 0
        after = sorted(os.listdir(run_dir))
    assert after == [n for n in before if fault == "damaged" or n != newest.name]  # renames none
    out, err = capsys.readouterr()
    [skipped] = [line for line in err.splitlines() if "skipping" in line]
    assert f"{newest}" in skipped and "--fresh" not in err and "Traceback" not in err
    assert f"conv {run_dir}/ckpt-0000002 (step 2)" in out


@pytest.mark.parametrize("change", [
    {"step": "4"}, {"config": {"batch_size": "2"}}, {"config": {"keep_prob": 7}},
    {"config": {"model": "gan"}}, {"config": {"width": 0}}, {"drop": "seed"},
])
def test_a_state_json_value_of_the_wrong_type_or_range_damages_the_checkpoint(run_dir, capsys,
                                                                               change):
    """A missing config key too: a seed-0 run must not resume under another seed's defaults."""
    path = run_dir / "ckpt-0000004" / "state.json"
    state = json.loads(path.read_text())
    state["config"].update(change.pop("config", {}))
    state["config"].pop(change.pop("drop", None), None)
    path.write_text(json.dumps({**state, **change}))
    assert rerun(run_dir, "--max_step", 2) == 0
    out = capsys.readouterr().out
    [warning] = [line for line in out.splitlines() if line.startswith("warning:")]
    assert f"{run_dir}/ckpt-0000004 does not load (state.json: " in warning
    assert "resuming from step 2" in out and (run_dir / "ckpt-0000004.damaged").is_dir()


def test_a_newer_versions_config_key_is_refused_and_nothing_set_aside(run_dir, capsys):
    path = run_dir / "ckpt-0000004" / "state.json"
    state = json.loads(path.read_text())
    state["config"]["colour"] = "red"
    path.write_text(json.dumps(state))
    before = sorted(os.listdir(run_dir))
    assert rerun(run_dir, "--max_step", 6) == 2
    line = one_line(capsys.readouterr().err)
    assert "saved by a newer version of this code (config key 'colour')" in line
    assert sorted(os.listdir(run_dir)) == before


@pytest.mark.parametrize("name", MODELS)
def test_a_clip_with_no_frame_to_score_is_refused(tmp_path, capsys, name):
    """The shortest clip the loss scores a frame of: the predictor's first scored frame, and
    one more."""
    defaults = MODELS[name].defaults
    first_scored = runs.build(defaults, Balls.frame_shape).first_scored()
    assert rerun(tmp_path / "run", "--seq_length", first_scored, model=name) == 2
    line = one_line(capsys.readouterr().err)
    assert f"--seq_length {first_scored} leaves no frame to learn from" in line
    assert not (tmp_path / "run").exists()
    flags = ["--train_dir", str(tmp_path / "run"), "--seq_length", str(first_scored + 1)]
    assert training.parse_flags(defaults, flags).seq_length == first_scored + 1


def test_a_batch_that_cannot_fit_in_memory_is_refused(tmp_path, capsys):
    assert rerun(tmp_path / "run", "--batch_size", 10_000_000) == 2
    line = one_line(capsys.readouterr().err)
    assert "--batch_size 10000000 would need about 7,988.2 GB of memory" in line
    assert not (tmp_path / "run").exists()


WITHOUT_JAX = """import runpy, sys
sys.modules["jax"] = None  # as if it were not installed
sys.path.insert(0, "")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("script, backend, says", [
    ("main_conv.py", "torch", "KERAS_BACKEND='torch' is not a backend this code runs on"),
    ("create_graphs.py", "jax", "KERAS_BACKEND='jax' but jax is not installed"),
])
def test_a_backend_we_cannot_run_on_is_one_line(tmp_path, script, backend, says):
    out_flag = "--train_dir" if script == "main_conv.py" else "--out"
    out = subprocess.run([sys.executable, "-c", WITHOUT_JAX, script, out_flag, tmp_path / "x"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "KERAS_BACKEND": backend})
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert says in line and "KERAS_BACKEND=jax (pip install -r requirements-dev.txt)" in line
    assert os.listdir(tmp_path) == []


def test_defaults_are_the_repositorys_from_any_folder_and_help_shows_them(tmp_path, capsys,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    defaults = training.parse_flags(CONV, [])
    assert defaults.train_dir == os.path.join(ROOT, "checkpoints", "train_store_conv")
    args = create_graphs.parse_flags(["--out", "figs/conv_lstm_vs_conv"])  # as given, from here
    assert args.out == "figs/conv_lstm_vs_conv"
    assert (args.conv_lstm_dir, args.pretrained_dir) == (
        os.path.join(ROOT, "checkpoints", "train_store_conv_lstm"), SHIPPED)
    helps = {}
    for name, parse in (("training", lambda: training.parse_flags(CONV, ["--help"])),
                        ("create_graphs", lambda: create_graphs.parse_flags(["--help"]))):
        with pytest.raises(SystemExit):
            parse()
        helps[name] = " ".join(capsys.readouterr().out.split())
    text = {f.name: f.metadata["help"] for f in dataclasses.fields(config.TrainConfig)}
    assert f"--train_dir TRAIN_DIR {text['train_dir']} (default: {ROOT}/checkpoints/" \
           "train_store_conv)" in helps["training"] and "(default: 16)" in helps["training"]
    assert "(default: 1200)" in helps["create_graphs"]
    assert f"(default: {ROOT}/results/conv_lstm_vs_conv;" in helps["create_graphs"]
