import errno
import functools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import types

import numpy as np
import pytest
from PIL import Image

import create_graphs
from create_graphs import GIF_BAND, GIF_GAP, GIF_SEQUENCES, GIF_SIDE
from model import evaluation, runs
from model.config import MODELS
from systems.bouncing_balls import Balls
from tests.helpers import ROOT, error_lines

CONTEXT = 5  # the ConvLSTM's true frames
GIF_SCALE = GIF_SIDE // 32
SHIPPED = os.path.join(ROOT, "checkpoints", "pretrained")
SIDE = 32 * GIF_SCALE + GIF_GAP  # one panel of the GIF with its margins


@pytest.fixture(scope="module")
def shipped():
    return {n: runs.load(os.path.join(SHIPPED, n)).model for n in MODELS}


def graphs(tiny_runs, out, *extra):
    return create_graphs.main([
        "--conv_lstm_dir", tiny_runs["conv_lstm"], "--conv_dir", tiny_runs["conv"],
        "--num_sequences", "7", "--batch_size", "3", "--horizon", "4", "--out", str(out), *extra,
    ])


def test_writes_csv_figures_and_gif(tiny_runs, tmp_path):
    assert graphs(tiny_runs, tmp_path / "g") == 0
    lines = (tmp_path / "g.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[:7] == ["step", "conv_lstm", "conv", "conv_lstm_2016", "conv_2016",
                          "copy_last", "mean_frame"]
    assert {"conv_lstm_ci95", "conv_2016_ci95", "conv_psnr", "conv_lstm_ssim",
            "conv_ssim_ci95"} <= set(header)
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2", "3"]
    for name in ("g.png", "g_psnr_ssim.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    with Image.open(tmp_path / "rollouts.gif") as gif:
        assert (gif.format, gif.n_frames) == ("GIF", 4)
        assert gif.size == (3 * SIDE, GIF_SEQUENCES * SIDE + 2 * GIF_BAND)
    assert sorted(os.listdir(tmp_path)) == [
        "g.csv", "g.json", "g.png", "g_psnr_ssim.png", "rollouts.gif"]


def _sse(prediction, truth):
    return np.sum((np.asarray(prediction) - truth) ** 2, axis=(-3, -2, -1))


def test_alignments_and_baselines_are_what_they_say(shipped):
    n, horizon, seed = 6, 3, 11
    results = create_graphs.evaluate(shipped, Balls(), n, horizon, seed, n)
    clips = next(Balls().held_out(n, CONTEXT + 1 + horizon, seed))
    lstm, conv = shipped["conv_lstm"], shipped["conv"]
    want = {  # step 0 of each series: the model's input, the frame it is compared with
        "conv_lstm": _sse(lstm.rollout(clips[:, :CONTEXT], 1)[:, 0], clips[:, CONTEXT]),
        "conv": _sse(conv.rollout(clips[:, CONTEXT - 1 : CONTEXT], 1)[:, 0], clips[:, CONTEXT]),
        "conv_lstm_2016": _sse(lstm.rollout(clips[:, :CONTEXT], 2)[:, 1], clips[:, CONTEXT + 1]),
        "conv_2016": _sse(conv.rollout(clips[:, :1], 1)[:, 0], clips[:, 1]),
        "copy_last": _sse(clips[:, CONTEXT - 1], clips[:, CONTEXT]),
        "mean_frame": _sse(Balls().mean_frame(), clips[:, CONTEXT]),
    }
    for series, errors in want.items():
        np.testing.assert_allclose(results[series]["sse"][:, 0], errors, rtol=1e-4, err_msg=series)
    np.testing.assert_allclose(results["conv_lstm_2016"]["sse"][:, :-1],
                               results["conv_lstm"]["sse"][:, 1:], rtol=1e-4)


def test_gif_shows_truth_and_both_rollouts(shipped):
    horizon, seed = 3, 4
    examples = create_graphs.rollout_examples(shipped, Balls(), horizon, seed)
    clips = next(Balls().held_out(GIF_SEQUENCES, CONTEXT + 1 + horizon, seed))
    np.testing.assert_array_equal(examples[:, 0], clips[:, CONTEXT : CONTEXT + horizon])
    lstm = shipped["conv_lstm"].rollout(clips[:, :CONTEXT], horizon)
    np.testing.assert_allclose(examples[:, 1], lstm, atol=1e-5)
    conv = shipped["conv"].rollout(clips[:, CONTEXT - 1 : CONTEXT], horizon)
    np.testing.assert_allclose(examples[:, 2], conv, atol=1e-5)
    frames = create_graphs.gif_frames(examples, CONTEXT)
    assert frames.shape == (horizon, GIF_SEQUENCES * SIDE + 2 * GIF_BAND, 3 * SIDE, 3)
    top, left = GIF_BAND + SIDE + GIF_GAP // 2, 2 * SIDE + GIF_GAP // 2  # row 1, conv column
    width = 32 * GIF_SCALE
    panel = frames[2, top : top + width : GIF_SCALE, left : left + width : GIF_SCALE]
    want = (np.clip(examples[1, 2, 2], 0, 1) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(panel, want)


def test_same_seed_same_csv(tiny_runs, tmp_path):
    for name, seed in (("a", "2016"), ("b", "2016"), ("c", "5")):
        assert graphs(tiny_runs, tmp_path / name / "g", "--seed", seed) == 0
    a, b, c = ((tmp_path / name / "g.csv").read_text() for name in "abc")
    assert a == b and a != c


@pytest.mark.parametrize("mixed", [True, False])
def test_mixed_weights_warned_before_evaluating_and_titled(tiny_runs, tmp_path, capsys,
                                                            monkeypatch, mixed):
    evaluate, save, seen = create_graphs.evaluate, create_graphs._save, {"titles": []}

    def spy_evaluate(*args, **kwargs):
        seen["stderr"] = capsys.readouterr().err
        return evaluate(*args, **kwargs)

    def spy_save(fig, path, title, caption):
        seen["titles"].append(title)
        save(fig, path, title, caption)

    monkeypatch.setattr(create_graphs, "evaluate", spy_evaluate)
    monkeypatch.setattr(create_graphs, "_save", spy_save)
    conv_dir = str(tmp_path / "no_run") if mixed else tiny_runs["conv"]
    assert create_graphs.main(["--conv_lstm_dir", tiny_runs["conv_lstm"], "--conv_dir", conv_dir,
                               "--pretrained_dir", SHIPPED, "--num_sequences", "2",
                               "--horizon", "2", "--out", str(tmp_path / "g")]) == 0
    warnings = [line for line in seen["stderr"].splitlines() if "warning" in line]
    assert len(seen["titles"]) == 2
    if mixed:
        assert len(warnings) == 1 and "step 5)" in warnings[0] and "step 200,000" in warnings[0]
        for title in seen["titles"]:
            assert "MIXED WEIGHTS" in title and "step 5)" in title and "conv shipped" in title
    else:
        assert warnings == [] and not any("MIXED" in t for t in seen["titles"])
        assert all("ConvLSTM " + tiny_runs["conv_lstm"] in t for t in seen["titles"])


def _never(*args):
    raise AssertionError("evaluated although --out cannot be written")


@pytest.fixture
def read_only_folder():
    """A folder only root may write in, that nobody can reach (pytest's `tmp_path` is in a
    folder private to this user)."""
    base = tempfile.mkdtemp()
    os.chmod(base, 0o755)
    os.mkdir(os.path.join(base, "ro"), 0o555)
    yield os.path.join(base, "ro")
    shutil.rmtree(base)


def as_nobody(function):
    """`function()` (an exit code) in a forked child that drops root's rights to nobody's, so
    that permission bits apply to it; its exit code."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 70
        try:
            nobody = pwd.getpwnam("nobody")
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            code = function()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@pytest.mark.parametrize("where", ["under_a_file", "proc", "read_only"])
def test_unwritable_out_exits_2_before_evaluating(tmp_path, capfd, monkeypatch, request, where):
    """Root runs the read-only case as nobody: root may write in any folder."""
    (tmp_path / "file").write_text("")
    out = {"under_a_file": tmp_path / "file" / "g", "proc": "/proc/no_such_dir/g"}.get(where)
    if where == "read_only":
        out = os.path.join(request.getfixturevalue("read_only_folder"), "g")
    monkeypatch.setattr(runs, "load_run", _never)
    monkeypatch.setattr(create_graphs, "evaluate", _never)
    main = functools.partial(create_graphs.main, ["--out", str(out)])
    assert (as_nobody(main) if where == "read_only" and os.geteuid() == 0 else main()) == 2
    err = capfd.readouterr().err.strip().splitlines()
    causes = {"under_a_file": ["is a file, not a folder"], "read_only": ["Permission denied"],
              "proc": ["No such file or directory", "Permission denied", "not permitted"]}[where]
    assert len(err) == 1 and str(out) in err[0] and any(c in err[0] for c in causes), err


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A 256 KiB tmpfs (where this machine lets us mount one): too small for the outputs."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tiny filesystem here")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_full_disk_exits_1_and_writes_nothing(tiny_runs, tiny_filesystem, capsys):
    assert graphs(tiny_runs, tiny_filesystem / "g") == 1
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "No space left on device" in err[0] and str(tiny_filesystem) in err[0]
    assert os.listdir(tiny_filesystem) == []


def test_failed_write_leaves_old_outputs(tiny_runs, tmp_path, capsys, monkeypatch):
    def full_disk(path, frames):
        with open(path, "wb") as f:
            f.write(b"GIF89a")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(create_graphs, "write_gif", full_disk)  # the last output written
    (tmp_path / "g.csv").write_text("old")
    assert graphs(tiny_runs, tmp_path / "g") == 1
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "rollouts.gif" in err[0] and "No space left" in err[0]
    assert os.listdir(tmp_path) == ["g.csv"] and (tmp_path / "g.csv").read_text() == "old"


def test_missing_weights_name_the_training_command(tmp_path):
    out = subprocess.run(
        [sys.executable, "create_graphs.py", "--conv_lstm_dir", str(tmp_path / "none"),
         "--conv_dir", str(tmp_path / "none"), "--pretrained_dir", str(tmp_path / "none"),
         "--out", str(tmp_path / "g")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2
    assert "python main_conv_lstm.py" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_ssim_is_wang_et_al_with_an_11x11_gaussian_window():
    from keras import ops

    rng = np.random.default_rng(0)
    truth = rng.random((2, 3, 11, 11, 3)).astype("float32")  # (B, N, H, W, C): one window each
    noisy = np.clip(truth + rng.normal(0, 0.2, truth.shape), 0, 1).astype("float32")
    got = np.asarray(evaluation.metrics(ops.convert_to_tensor(noisy), truth)["ssim"])
    assert got.shape == (2, 3)
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()  # the Gaussian window, sigma 1.5
    c1, c2 = 0.01**2, 0.03**2
    for b, n in np.ndindex(2, 3):
        per_channel = []
        for c in range(3):
            x, y = noisy[b, n, :, :, c], truth[b, n, :, :, c]
            mx, my = (w * x).sum(), (w * y).sum()
            vx, vy = (w * x * x).sum() - mx**2, (w * y * y).sum() - my**2
            cov = (w * x * y).sum() - mx * my
            per_channel.append((2 * mx * my + c1) * (2 * cov + c2)
                               / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
        np.testing.assert_allclose(got[b, n], np.mean(per_channel), rtol=1e-4)
    same = evaluation.metrics(ops.convert_to_tensor(truth), truth)["ssim"]
    np.testing.assert_allclose(np.asarray(same), 1.0, rtol=1e-5)


def test_gif_marks_mixed_weights_in_red():
    def run(path, step):
        return types.SimpleNamespace(path=path, step=step)

    loaded = {"conv_lstm": run("/runs/lstm/ckpt-0000002", 2),
              "conv": run(os.path.join(SHIPPED, "conv"), 200_000)}
    _, mark = create_graphs.describe_weights(loaded, SHIPPED)
    assert mark == "MIXED WEIGHTS: ConvLSTM step 2, conv step 200,000 (shipped)"
    same = {n: run(r.path, 2) for n, r in loaded.items()}
    assert create_graphs.describe_weights(same, "/runs")[1] == ""
    examples = np.zeros((GIF_SEQUENCES, 3, 2, 32, 32, 3))
    plain = create_graphs.gif_frames(examples, CONTEXT)
    marked = create_graphs.gif_frames(examples, CONTEXT, mark)
    assert marked.shape[1] == plain.shape[1] + GIF_BAND
    np.testing.assert_array_equal(marked[:, : plain.shape[1]], plain)
    red = (marked[..., 0] > 200) & (marked[..., 1] < 80) & (marked[..., 2] < 80)
    assert red[:, plain.shape[1]:].any() and not red[:, : plain.shape[1]].any()


@pytest.mark.parametrize("flags, message", [
    (["--seed", "-1"], "--seed must be in 0..4294967295"),
    (["--seed", "4294967296"], "--seed must be in 0..4294967295"),
    (["--num_sequences", "1"], "--num_sequences must be an integer of at least 2"),
    (["--horizon", "3000"], "--horizon must be at most 200"),
    (["--conv_step", "-5"], "--conv_step must be an integer of at least 0"),
    (["--time_major"], "--time_major applies to --data only"),
])
def test_bad_flags_exit_2_before_loading(tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.setattr(runs, "load_run", _never)
    assert create_graphs.main([*flags, "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("existing", [True, False])
def test_out_naming_a_folder_writes_default_names_inside(tiny_runs, tmp_path, existing):
    folder = tmp_path / "run1"
    if existing:
        folder.mkdir()
    assert graphs(tiny_runs, str(folder) + ("" if existing else os.sep)) == 0
    assert sorted(os.listdir(folder)) == [
        "conv_lstm_vs_conv.csv", "conv_lstm_vs_conv.json", "conv_lstm_vs_conv.png",
        "conv_lstm_vs_conv_psnr_ssim.png", "rollouts.gif"]
    assert sorted(os.listdir(tmp_path)) == ["run1"]


def test_one_checkpoint_with_another_step_is_refused(capsys, tmp_path):
    one = os.path.join(SHIPPED, "conv")
    assert create_graphs.main(["--conv_dir", one, "--conv_step", "1000",
                               "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is one checkpoint, of step 200000, not 1000" in err[0], err


def test_no_run_says_how_to_use_the_shipped_weights(tmp_path, capsys):
    assert create_graphs.main(["--conv_lstm_dir", str(tmp_path / "none"), "--pretrained_dir",
                               str(tmp_path / "none"), "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--conv_lstm_dir checkpoints/pretrained/conv_lstm" in err[0], err


def test_progress_reaches_a_log(tiny_runs, tmp_path, capsys):
    assert graphs(tiny_runs, tmp_path / "g") == 0
    err = capsys.readouterr().err  # not a terminal here, as in a log file
    assert "evaluating" in err and "7/7" in err


def test_long_unicode_title_is_wrapped_inside_the_figure_without_warnings(tmp_path):
    import warnings

    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.4), dpi=120)  # as create_graphs makes them
    title = "weights: ConvLSTM " + "/runs/ünïcødé/数据/" * 12 + "ckpt-0000005 (step 5)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        create_graphs._save(fig, str(tmp_path / "f.png"), title, "caption")
    assert not [w for w in caught if "Glyph" in str(w.message)]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    with warnings.catch_warnings():  # measuring draws the title again
        warnings.simplefilter("ignore")
        box = fig._suptitle.get_window_extent(FigureCanvasAgg(fig).get_renderer())
    assert 0 <= box.x0 and box.x1 <= fig.bbox.width


def test_the_other_models_weights_file_is_named_in_one_complete_line(tmp_path, capsys):
    swapped = tmp_path / "ckpt"
    shutil.copytree(os.path.join(SHIPPED, "conv_lstm"), swapped)
    shutil.copy(os.path.join(SHIPPED, "conv", "model.weights.h5"), swapped)
    assert create_graphs.main(["--conv_lstm_dir", str(swapped), "--out", str(tmp_path / "g")]) == 2
    [line] = error_lines(capsys.readouterr().err)
    assert line.endswith(f"{swapped} does not load (its model.weights.h5 holds the conv model's "
                         "weights, not the conv_lstm model's its state.json names)"), line
