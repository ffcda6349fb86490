import dataclasses

import keras
import numpy as np
import pytest

from model.networks import ConvLSTMPredictor, ConvPredictor, l2_loss
from model.train_step import make_train_step
from model.training import CONV, CONV_LSTM, batch_at, build

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
    kernel = np.asarray(model.cell.kernel)
    assert kernel.min() >= -0.01 and kernel.max() <= 0.1 and kernel.max() > 0.05


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


def test_input_dropout_statistics():
    from model.networks import InputDropout

    x = np.ones((64, 32, 32, 3), "float32")
    y = np.asarray(InputDropout(0.2, seed=1)(x, training=True))
    assert set(np.unique(y)) == {0.0, np.float32(1.25)}
    assert abs((y == 0).mean() - 0.2) < 0.01  # 196,608 values: 0.2 +- 0.001 (1 sd)
    np.testing.assert_array_equal(np.asarray(InputDropout(0.2)(x)), x)


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
    """Splitting the batch into side-by-side chains, and one kernel-gradient op per layer, are
    a schedule, not a change of maths: the same loss and the same weights after two Adam steps
    (no dropout, so no randomness)."""
    config = dataclasses.replace(config, batch_size=5, keep_prob=1.0)  # 5: an uneven split
    clips = [batch_at(config, i) for i in range(2)]
    results = []
    schedules = [(1, False), (1, True), (2, True), (3, False)]  # (chains, batched_kernel_grads)
    for chains, batched in schedules:
        model, optimizer = build(config)
        randomise(model)
        step, sync = make_train_step(model, optimizer, chains=chains,
                                     batched_kernel_grads=batched)
        losses = [float(step(clip)) for clip in clips]
        sync()
        results.append((losses, model.get_weights()))
    (losses, weights), others = results[0], results[1:]
    assert losses[1] != losses[0]  # the first step changed the weights
    for other_losses, other_weights in others:
        np.testing.assert_allclose(other_losses, losses, rtol=1e-5)
        for a, b in zip(weights, other_weights):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_fused_adam_updates_like_kerass_adam():
    """Our Adam runs one fused TensorFlow op per variable and gives Keras's Adam's weights and
    optimiser state (the checkpoints hold the same variables)."""
    import tensorflow as tf

    config = dataclasses.replace(CONV, batch_size=3, keep_prob=1.0)
    clips = [batch_at(config, i) for i in range(3)]
    results = []
    for fused in (False, True):
        model, optimizer = build(config)
        if not fused:
            optimizer = keras.optimizers.Adam(config.lr)
            optimizer.build(model.trainable_variables)
        step, _ = make_train_step(model, optimizer)
        losses = [float(step(clip)) for clip in clips]
        results.append((losses, model.get_weights(), [np.array(v) for v in optimizer.variables]))
        ops = {op.type for op in step.get_concrete_function(tf.constant(clips[0])).graph
               .get_operations()}
        assert ("ResourceApplyAdam" in ops) == fused
    another_step, _ = make_train_step(model, optimizer, chains=1)  # a second trace, same Adam
    assert np.isfinite(float(another_step(clips[0])))
    (losses, weights, state), (fused_losses, fused_weights, fused_state) = results
    assert fused_losses[2] != fused_losses[0]
    np.testing.assert_allclose(fused_losses, losses, rtol=1e-5)
    for a, b in zip(weights, fused_weights):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    assert len(state) == len(fused_state)
    for a, b in zip(state, fused_state):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())


def test_chains_must_be_positive():
    model, optimizer = build(dataclasses.replace(CONV, batch_size=2))
    with pytest.raises(ValueError, match="chains must be at least 1"):
        make_train_step(model, optimizer, chains=0)


@pytest.mark.parametrize("name,filters", [("Conv2D", 4), ("Conv2DTranspose", 8)])
@pytest.mark.parametrize("activation", ["elu", None])
def test_pointwise_convs_match_keras_as_matrix_products(name, filters, activation):
    """Our 1x1 layers compute Keras's numbers and gradients, but as a MatMul (TensorFlow's
    graph holds no convolution), and file their weights under Keras's names."""
    import tensorflow as tf

    from model import networks

    ours = getattr(networks, name)(filters, 1, activation=activation, bias_initializer="ones")
    theirs = getattr(keras.layers, name)(filters, 1, activation=activation)
    x = tf.constant(np.random.default_rng(0).normal(size=(3, 8, 8, 5)).astype("float32"))
    ours(x), theirs(x)
    theirs.set_weights(ours.get_weights())
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(tf.sin(y))
        results.append([y, *tape.gradient(loss, [x, *layer.trainable_variables])])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    graph = tf.function(ours).get_concrete_function(x).graph
    types = {op.type for op in graph.get_operations()}
    assert "MatMul" in types and not any(t.startswith("Conv2D") for t in types)
    assert ours.__class__.__name__ == theirs.__class__.__name__  # the weights file's paths


def test_three_by_three_convs_stay_convolutions():
    import tensorflow as tf

    from model import networks

    layer = networks.Conv2DTranspose(8, 3, strides=2, padding="same")
    graph = tf.function(layer).get_concrete_function(tf.zeros((2, 8, 8, 4))).graph
    assert "Conv2DBackpropInput" in {op.type for op in graph.get_operations()}


def test_compiled_rollout_follows_the_weights():
    """The training videos use the compiled rollout: it must give the eager numbers, and read the
    weights when it runs (not when it was first traced)."""
    from model.train_step import compiled_rollout

    model, _ = build(dataclasses.replace(CONV_LSTM, batch_size=1))
    rollout = compiled_rollout(model)
    context = batch_at(dataclasses.replace(CONV_LSTM, batch_size=1), 0)[:, :5]
    for seed in (0, 1):  # weights changed after the first trace
        randomise(model, seed)
        compiled, eager = np.asarray(rollout(context, 6)), np.asarray(model.rollout(context, 6))
        # graph and eager float32 kernels differ in rounding, which these large random weights
        # amplify over the closed loop (~3e-4 of the output's scale); stale weights give O(1)
        assert np.abs(compiled - eager).max() < 1e-3 * np.abs(eager).max()
