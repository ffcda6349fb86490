import dataclasses

import keras
import numpy as np
import pytest

from model.networks import ConvLSTMPredictor, ConvPredictor, l2_loss
from model.train_step import make_train_step
from model.data import batch_at
from model.training import CONV, CONV_LSTM, build

# encoder 224 + 584 + 584 + 36, decoder 40 + 584 + 584 + 219, cell 3*3*8*16 + 16
PARAMS = {"conv": 1428 + 1427, "conv_lstm": 1428 + 1427 + 1168}


def randomise(model, seed=0):
    """Weights large enough that a change in any input frame reaches the output."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.4, w.shape).astype("float32") for w in model.get_weights()])


@pytest.mark.parametrize("config", [CONV_LSTM, CONV], ids=["conv_lstm", "conv"])
def test_shapes_and_parameter_counts(config):
    model, _ = build(dataclasses.replace(config, batch_size=2))
    assert model.count_params() == PARAMS[config.model]
    clip = batch_at(dataclasses.replace(config, batch_size=2), 0)
    assert model(clip).shape == (2, 4, 32, 32, 3)
    assert model.first_scored() == {"conv_lstm": 6, "conv": 1}[config.model]
    assert tuple(model.rollout(clip[:, :3], 7).shape) == (2, 7, 32, 32, 3)


def test_layer_table():
    model, _ = build(dataclasses.replace(CONV_LSTM, batch_size=1))
    x = np.zeros((1, 32, 32, 3), "float32")
    sizes = []
    for layer in model.encoder.layers:
        x = layer(x)
        sizes.append(tuple(x.shape[1:]))
    assert sizes == [(16, 16, 8), (16, 16, 8), (8, 8, 8), (8, 8, 4)]
    for layer in model.decoder.layers:
        x = layer(x)
        sizes.append(tuple(x.shape[1:]))
    assert sizes[4:] == [(8, 8, 8), (16, 16, 8), (16, 16, 8), (32, 32, 3)]
    activations = [layer.activation.__name__ for layer in model.decoder.layers]
    assert activations == ["elu", "elu", "elu", "linear"]
    assert model.cell.kernel.shape == (3, 3, 8, 16)
    # the 2016 figure's start values: TensorFlow 0.x's default, uniform in +-sqrt(3 / 72)
    kernel, bound = np.asarray(model.cell.kernel), np.sqrt(3 / (3 * 3 * 8))
    assert -bound <= kernel.min() < -0.9 * bound and 0.9 * bound < kernel.max() <= bound
    np.testing.assert_array_equal(np.asarray(model.cell.bias), 0.0)
    first_conv = np.asarray(model.encoder.layers[0].kernel)  # truncated normal, stddev 0.01
    assert np.abs(first_conv).max() <= 0.02 and 0.008 < first_conv.std() < 0.012


@pytest.mark.parametrize("cls", [ConvLSTMPredictor, ConvPredictor])
def test_closed_loop_never_sees_future_frames(cls):
    keras.utils.set_random_seed(1)
    model = cls(context=3)
    clip = batch_at(dataclasses.replace(CONV_LSTM, batch_size=2), 0)[:, :8]
    model.build(clip.shape)
    randomise(model)
    base = np.asarray(model(clip))
    future = clip.copy()
    future[:, 3:] = np.random.default_rng(0).random(future[:, 3:].shape)
    np.testing.assert_array_equal(np.asarray(model(future)), base)
    past = clip.copy()
    past[:, 2] = 0.0
    assert np.abs(np.asarray(model(past)) - base).max() > 1e-6


def test_conv_lstm_remembers_early_context():
    keras.utils.set_random_seed(2)
    model = ConvLSTMPredictor(context=5)
    clip = batch_at(CONV_LSTM, 0)[:2]
    model.build(clip.shape)
    randomise(model)
    early = clip.copy()
    early[:, 0] = 0.0
    assert np.abs(np.asarray(model(early)) - np.asarray(model(clip))).max() > 1e-6


def test_dropout_only_in_training():
    model, _ = build(dataclasses.replace(CONV, batch_size=2))
    randomise(model)
    clip = batch_at(dataclasses.replace(CONV, batch_size=2), 0)
    np.testing.assert_array_equal(np.asarray(model(clip)), np.asarray(model(clip)))
    assert np.abs(np.asarray(model(clip, training=True)) - np.asarray(model(clip))).max() > 1e-6


@pytest.mark.parametrize("config", [CONV_LSTM, CONV], ids=["conv_lstm", "conv"])
def test_training_loss_is_l2_of_the_scored_frames(config):
    config = dataclasses.replace(config, batch_size=2)
    model, _ = build(config)
    randomise(model)
    clip = batch_at(config, 0)
    expected = float(l2_loss(model(clip), clip[:, model.first_scored() :]))
    assert expected > 1.0
    np.testing.assert_allclose(float(model.training_loss(clip, training=False)), expected,
                               rtol=1e-5)


def test_dropout_rate_and_adam_as_the_original():
    model, optimizer = build(dataclasses.replace(CONV, batch_size=2, keep_prob=0.8))
    assert model.dropout.rate == pytest.approx(0.2)
    assert optimizer.epsilon == 1e-8 and optimizer.beta_1 == 0.9 and optimizer.beta_2 == 0.999
    assert float(optimizer.learning_rate) == pytest.approx(1e-3)


def test_loss_is_half_sum_of_squares():
    a = np.arange(6, dtype="float32").reshape(1, 2, 3)
    assert float(l2_loss(a, np.zeros_like(a))) == 0.5 * float(np.sum(a**2))


@pytest.mark.parametrize("config,steps", [(CONV_LSTM, 200), (CONV, 300)], ids=["conv_lstm", "conv"])
def test_training_lowers_the_loss(config, steps):
    config = dataclasses.replace(config, batch_size=8)
    model, optimizer = build(config)
    step, _ = make_train_step(model, optimizer)
    losses = [float(step(batch_at(config, i))) for i in range(steps)]
    assert np.mean(losses[-20:]) < 0.7 * np.mean(losses[:20])


@pytest.mark.parametrize("config", [CONV_LSTM, CONV], ids=["conv_lstm", "conv"])
def test_chained_step_trains_like_one_chain(config):
    """Splitting the batch into side-by-side chains is a schedule, not a change of maths: the
    same loss and the same weights after two Adam steps (no dropout, so no randomness)."""
    config = dataclasses.replace(config, batch_size=5, keep_prob=1.0)  # 5: an uneven split
    clips = [batch_at(config, i) for i in range(2)]
    results = []
    for chains in (1, 2, 3):
        model, optimizer = build(config)
        randomise(model)
        step, sync = make_train_step(model, optimizer, chains=chains)
        losses = [float(step(clip)) for clip in clips]
        sync()
        results.append((losses, model.get_weights()))
    (losses, weights), others = results[0], results[1:]
    assert losses[1] != losses[0]  # the first step changed the weights
    for other_losses, other_weights in others:
        np.testing.assert_allclose(other_losses, losses, rtol=1e-5)
        for a, b in zip(weights, other_weights):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_compiled_rollout_follows_the_weights():
    """The training videos use the compiled rollout: it must give the eager numbers, and read the
    weights when it runs (not when it was first traced)."""
    from model.train_step import compiled

    model, _ = build(dataclasses.replace(CONV_LSTM, batch_size=1))
    rollout = compiled(model.rollout)
    context = batch_at(dataclasses.replace(CONV_LSTM, batch_size=1), 0)[:, :5]
    for seed in (0, 1):  # weights changed after the first trace
        randomise(model, seed)
        compiled, eager = np.asarray(rollout(context, 6)), np.asarray(model.rollout(context, 6))
        # graph and eager float32 kernels differ in rounding, which these large random weights
        # amplify over the closed loop (~3e-4 of the output's scale); stale weights give O(1)
        assert np.abs(compiled - eager).max() < 1e-3 * np.abs(eager).max()
