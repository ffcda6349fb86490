"""What the README promises about the model and the training protocol, each pinned by a test
that fails when the promise breaks: the start values and activations of every layer, the
cell's default forget bias, both scripts' defaults, dropout inside the compiled training step,
and what checkpoints keep and sync. (The first losses of a seed-0 run are pinned in
`test_training.py`, from the runs it makes anyway.)"""

import contextlib
import dataclasses
import os
import runpy
import sys

import keras
import numpy as np
import pytest

from model import checkpoint, runs, training
from model.backend import make_train_step
from model.config import MODELS
from model.data import batches, open_source
from systems.bouncing_balls import Balls
from tests.helpers import ROOT, balls_batch, model_and_optimizer

CONV_LSTM, CONV = MODELS["conv_lstm"].defaults, MODELS["conv"].defaults


def run_script(script, *flags):
    """`python <script> <flags>` in this process; its exit code."""
    argv = sys.argv
    sys.argv = [script, *map(str, flags)]
    try:
        runpy.run_path(os.path.join(ROOT, script), run_name="__main__")
    except SystemExit as exit:
        return exit.code
    finally:
        sys.argv = argv
    raise AssertionError(f"{script} did not exit")


@pytest.mark.parametrize("name", MODELS)
def test_scripts_default_to_the_original_protocol(name, tmp_path, monkeypatch):
    """The flags' defaults, as the script hands them to training, what they build, and the
    clips of a step."""
    seen = []
    monkeypatch.setattr(training, "train", lambda config, log=print: seen.append(config) or 0)
    assert run_script(MODELS[name].script, "--train_dir", tmp_path / "run") == 0
    config = seen[0]
    seq_length, seq_start = {"conv_lstm": (10, 5), "conv": (5, 1)}[name]
    assert dataclasses.asdict(config) == dataclasses.asdict(MODELS[name].defaults) | {
        "model": name, "train_dir": str(tmp_path / "run"), "seq_length": seq_length,
        "seq_start": seq_start, "max_step": 200_000, "keep_prob": 0.8, "lr": 0.001,
        "batch_size": 16, "num_balls": 2, "friction": False, "seed": 0, "save_every": 1000,
        "log_every": 100, "width": 1, "data": None}
    assert MODELS[name].defaults.train_dir == f"checkpoints/train_store_{name}"
    model, optimizer = model_and_optimizer(config)
    assert model.context == seq_start and model.dropout.rate == pytest.approx(0.2)
    assert float(optimizer.learning_rate) == pytest.approx(1e-3) and optimizer.epsilon == 1e-8
    assert (optimizer.beta_1, optimizer.beta_2) == (0.9, 0.999)
    with contextlib.closing(batches(open_source(config), config, 0)) as clips:
        assert next(clips).shape == (16, seq_length, 32, 32, 3)


def conv_layers(model):
    return [*model.encoder.layers, *model.decoder.layers]


def test_start_values_of_every_layer():
    """Every conv and transposed conv: kernel truncated normal with stddev 0.01 (cut at two
    stddevs, so its own stddev is 0.88 of that), bias 0.01. The cell: kernel uniform in
    +-sqrt(3 / 72), bias 0."""
    model = runs.build(CONV_LSTM, Balls.frame_shape)
    kernels = []
    for layer in conv_layers(model):
        kernel = np.asarray(layer.kernel)
        np.testing.assert_array_equal(np.asarray(layer.bias), np.float32(0.01), err_msg=layer.name)
        assert np.abs(kernel).max() <= 0.02 and abs(kernel.mean()) < 0.003, layer.name
        assert 0.005 < kernel.std() < 0.013, layer.name
        kernels.append(kernel.ravel())
    assert 0.0085 < np.concatenate(kernels).std() < 0.0091  # 2,707 values: 0.0088 +- 0.0001
    kernel, bound = np.asarray(model.cell.kernel), np.sqrt(3 / 72)
    assert -bound <= kernel.min() < -0.9 * bound and 0.9 * bound < kernel.max() <= bound
    assert abs(kernel.mean()) < 0.02
    np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3), rtol=0.05)
    np.testing.assert_array_equal(np.asarray(model.cell.bias), 0.0)


def test_elu_after_every_layer_but_the_last():
    model = runs.build(CONV_LSTM, Balls.frame_shape)
    assert [layer.activation for layer in conv_layers(model)] == (
        [keras.activations.elu] * 7 + [keras.activations.linear])
    assert model.cell.activation is keras.activations.tanh


def test_cell_adds_a_forget_bias_of_1_by_default():
    """The predictor's cell, its weights zeroed: every gate's pre-activation is 0, so
    `c' = c * sigmoid(0 + forget_bias) + sigmoid(0) * tanh(0)`."""
    model = runs.build(CONV_LSTM, Balls.frame_shape)
    assert model.cell.forget_bias == 1.0
    model.cell.kernel.assign(np.zeros(model.cell.kernel.shape))
    code = np.zeros((1, 8, 8, 4), "float32")
    state = np.concatenate([np.full((1, 8, 8, 4), 2.0), np.zeros((1, 8, 8, 4))], -1)
    h, [new_state] = model.cell(code, [state.astype("float32")])
    c = 2.0 / (1.0 + np.exp(-1.0))
    np.testing.assert_allclose(np.asarray(new_state)[..., :4], c, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(h), np.tanh(c) * 0.5, rtol=1e-6)


def test_dropout_inside_the_compiled_training_step():
    """The step's loss (computed before its update) is the loss of dropped-out input frames:
    not the clean loss with keep_prob 0.8, exactly it with 1.0. Weights drawn large enough
    that the input reaches the output."""
    losses = {}
    for keep_prob in (0.8, 1.0):
        config = dataclasses.replace(CONV, batch_size=4, keep_prob=keep_prob)
        model, optimizer = model_and_optimizer(config)
        rng = np.random.default_rng(0)
        model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32")
                           for w in model.get_weights()])
        clip = balls_batch(config)
        clean = float(model.training_loss(clip, training=False))
        step, _ = make_train_step(model, optimizer)
        losses[keep_prob] = float(step(clip)) / clean
    assert abs(losses[0.8] - 1) > 1e-3
    assert losses[1.0] == pytest.approx(1, rel=1e-5)


@pytest.fixture(scope="module")
def small_model():
    return model_and_optimizer(dataclasses.replace(CONV, batch_size=2))


def save(train_dir, step, small_model, keep_every=0):
    return checkpoint.save(str(train_dir), step, *small_model,
                           {"config": {"keep_every": keep_every}})


@pytest.mark.parametrize("keep_every", [0, 4])
def test_the_newest_two_checkpoints_and_milestones_are_kept(tmp_path, small_model, keep_every):
    steps = []
    for step in range(2, 14, 2):
        save(tmp_path, step, small_model, keep_every)
        kept = [checkpoint.step_of(p) for p in checkpoint.list_checkpoints(tmp_path)]
        milestones = [s for s in range(2, step + 1, 2) if keep_every and s % keep_every == 0]
        steps.append(kept)
        assert kept == sorted({*milestones, *range(max(2, step - 2), step + 1, 2)}), steps


def test_a_saved_checkpoint_is_synced_before_it_is_renamed_into_place(tmp_path, small_model,
                                                                       monkeypatch):
    """Each file's data and the folder's entries reach the disk before the rename, and the
    rename itself (the run folder's entry) after it: a power cut leaves the whole checkpoint
    or none of it."""
    events = []
    fsync, replace = os.fsync, os.replace

    def spy_fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        fsync(fd)

    def spy_replace(source, target):
        events.append(("replace", os.stat(source).st_ino))
        replace(source, target)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    path = save(tmp_path, 7, small_model)
    monkeypatch.undo()
    inode = {name: os.stat(os.path.join(path, name)).st_ino for name in os.listdir(path)}
    assert sorted(inode) == ["model.weights.h5", "state.json", "train_state.h5"]
    rename = events.index(("replace", os.stat(path).st_ino))
    synced_before = {ino for kind, ino in events[:rename] if kind == "fsync"}
    assert set(inode.values()) | {os.stat(path).st_ino} <= synced_before, events
    assert ("fsync", os.stat(tmp_path).st_ino) in events[rename + 1 :], events


def test_a_milestone_stays_one_whatever_a_later_run_says(tmp_path, small_model):
    """Saved as a milestone, kept for good: a run resumed with another `--keep_every`, or 0,
    never deletes one (the flag is recorded with each checkpoint, as training records its
    config, not derived from today's)."""
    for steps, keep_every in ((range(1, 5), 2), (range(5, 8), 3), (range(8, 9), 0)):
        for step in steps:
            save(tmp_path, step, small_model, keep_every)
    assert [checkpoint.step_of(p) for p in checkpoint.list_checkpoints(tmp_path)] == [
        2, 4, 6, 7, 8]
