import json

import keras
import numpy as np
import pytest

from model.conv_lstm_cell import ConvLSTMCell, ConvRNN


def to_keras_conv_lstm(kernel, bias, channels, filters, forget_bias):
    """Our fused (i, j, f, o) weights as keras.layers.ConvLSTM2D's (i, f, c, o) weights."""

    def reorder(w):
        i, j, f, o = np.split(w, 4, axis=-1)
        return np.concatenate([i, f, j, o], axis=-1)

    bias = bias.copy()
    bias[2 * filters : 3 * filters] += forget_bias  # the f block, in our order
    return [reorder(kernel[:, :, :channels]), reorder(kernel[:, :, channels:]), reorder(bias)]


def random_cell_and_peer(rng, channels, filters, kernel_size, height, width):
    cell = ConvLSTMCell(filters, kernel_size, forget_bias=1.0)
    cell.build((None, height, width, channels))
    kernel = rng.normal(0, 0.3, cell.kernel.shape).astype("float32")
    bias = rng.normal(0, 0.3, cell.bias.shape).astype("float32")
    cell.set_weights([kernel, bias])
    peer = keras.layers.ConvLSTM2D(
        filters, kernel_size, padding="same", return_sequences=True, return_state=True,
        unit_forget_bias=False,
    )
    peer.build((None, None, height, width, channels))
    peer.set_weights(to_keras_conv_lstm(kernel, bias, channels, filters, 1.0))
    return cell, peer


def peer_difference(channels, filters, kernel_size, height, width):
    """The largest difference between our cell's outputs and final state over a random
    sequence and those of `ConvLSTM2D` given the same weights (on any backend)."""
    rng = np.random.default_rng(channels * 100 + filters)
    cell, peer = random_cell_and_peer(rng, channels, filters, kernel_size, height, width)
    x = rng.normal(0, 1, (2, 6, height, width, channels)).astype("float32")
    ours, state = keras.layers.RNN(cell, return_sequences=True, return_state=True)(x)
    theirs, h, c = (np.asarray(t) for t in peer(x))
    return max(np.abs(np.asarray(ours) - theirs).max(),
               np.abs(np.asarray(state) - np.concatenate([c, h], axis=-1)).max())


@pytest.mark.parametrize(
    "channels,filters,kernel_size,height,width",
    [(3, 4, 3, 8, 8), (1, 2, (3, 5), 6, 9), (5, 8, 1, 4, 4), (4, 3, 5, 10, 7)],
)
def test_matches_keras_conv_lstm2d(channels, filters, kernel_size, height, width):
    """Our cell is Keras's `ConvLSTM2D` with its gates reordered and the forget bias folded in
    (on JAX too: `test_runtime.py`)."""
    assert peer_difference(channels, filters, kernel_size, height, width) < 1e-5


def test_gradients_match_keras_conv_lstm2d():
    """Through a sequence, the gradients for the inputs and the initial state are
    ConvLSTM2D's, and those of our kernel and bias are its gradients mapped back."""
    import tensorflow as tf

    rng = np.random.default_rng(7)
    cell, peer = random_cell_and_peer(rng, 3, 4, 3, 6, 7)
    x = tf.constant(rng.normal(0, 1, (2, 5, 6, 7, 3)).astype("float32"))
    c0, h0 = (tf.constant(rng.normal(0, 1, (2, 6, 7, 4)).astype("float32")) for _ in "ch")
    layer = keras.layers.RNN(cell, return_sequences=True)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, c0, h0])
        ours = tf.reduce_sum(layer(x, initial_state=[tf.concat([c0, h0], -1)]) ** 2)
        theirs = tf.reduce_sum(peer(x, initial_state=[h0, c0])[0] ** 2)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    for a, b in zip(tape.gradient(ours, [x, c0, h0]), tape.gradient(theirs, [x, c0, h0])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    d_kernel, d_bias = tape.gradient(ours, [cell.kernel, cell.bias])
    mapped = to_keras_conv_lstm(np.asarray(d_kernel), np.asarray(d_bias), 3, 4, 0.0)
    for a, b in zip(mapped, tape.gradient(theirs, peer.trainable_weights)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_one_step_equations_by_hand():
    cell = ConvLSTMCell(1, 1, forget_bias=1.0)
    cell.build((None, 1, 1, 1))
    # kernel (1, 1, C_in + F = 2, 4F = 4): gate pre-activations i, j, f, o = [x, h] @ kernel
    kernel = np.array([[[[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]]]], "float32")
    bias = np.array([0.01, 0.02, 0.03, 0.04], "float32")
    cell.set_weights([kernel, bias])
    x, c0, h0 = 2.0, 0.5, -1.0
    i, j, f, o = x * kernel[0, 0, 0] + h0 * kernel[0, 0, 1] + bias
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c1 = c0 * sig(f + 1.0) + sig(i) * np.tanh(j)
    h1 = np.tanh(c1) * sig(o)
    state = np.array([c0, h0], "float32").reshape(1, 1, 1, 2)
    out, [new_state] = cell(np.full((1, 1, 1, 1), x, "float32"), [state])
    np.testing.assert_allclose(np.ravel(out), [h1], rtol=1e-6)
    np.testing.assert_allclose(np.ravel(new_state), [c1, h1], rtol=1e-6)


def test_weights_and_state_shapes():
    cell = ConvLSTMCell(4, (3, 5))
    out, state = keras.layers.RNN(cell, return_state=True)(np.zeros((2, 3, 8, 8, 3), "float32"))
    assert [w.shape for w in cell.weights] == [(3, 5, 7, 16), (16,)]
    assert tuple(out.shape) == (2, 8, 8, 4)
    assert tuple(state.shape) == (2, 8, 8, 8)
    assert tuple(cell.get_initial_state(5)[0].shape) == (5, 8, 8, 8)


def test_initial_state_of_an_unbuilt_cell_says_to_build_it():
    cell = ConvLSTMCell(4, 3)
    with pytest.raises(ValueError, match=r"build the cell first.*keras\.layers\.RNN"):
        cell.get_initial_state(2)
    cell.build((2, 8, 6, 3))
    assert tuple(cell.get_initial_state(2)[0].shape) == (2, 8, 6, 8)


def test_config_round_trip():
    cell = ConvLSTMCell(6, (3, 1), forget_bias=0.5, activation="relu", name="c",
                        kernel_initializer=keras.initializers.VarianceScaling(1.0, "fan_in",
                                                                              "uniform"))
    clone = ConvLSTMCell.from_config(json.loads(json.dumps(cell.get_config())))
    assert clone.get_config() == cell.get_config()
    assert clone.kernel_initializer.get_config()["mode"] == "fan_in"
    assert (clone.filters, clone.kernel_size, clone.forget_bias) == (6, (3, 1), 0.5)


def test_keras_file_round_trip(tmp_path):
    inputs = keras.Input((4, 8, 8, 3))
    cell = ConvLSTMCell(4, 3, forget_bias=0.5)
    outputs = ConvRNN(cell, return_sequences=True)(inputs)
    model = keras.Model(inputs, outputs)
    assert model.output_shape == (None, 4, 8, 8, 4)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.layers[-1].cell.forget_bias == 0.5
    x = np.random.default_rng(0).random((2, 4, 8, 8, 3), dtype=np.float32)
    np.testing.assert_array_equal(model(x), loaded(x))
