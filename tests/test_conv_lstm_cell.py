import json
import os
import subprocess
import sys
import importlib.util

import keras
import numpy as np
import pytest

from model.conv_lstm_cell import ConvLSTMCell, ConvRNN, auto_per_gate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def to_keras_conv_lstm(kernel, bias, channels, filters, forget_bias):
    """Our fused (i, j, f, o) weights as keras.layers.ConvLSTM2D's (i, f, c, o) weights."""

    def reorder(w):
        i, j, f, o = np.split(w, 4, axis=-1)
        return np.concatenate([i, f, j, o], axis=-1)

    bias = bias.copy()
    bias[2 * filters : 3 * filters] += forget_bias  # the f block, in our order
    return [reorder(kernel[:, :, :channels]), reorder(kernel[:, :, channels:]), reorder(bias)]


def random_cell_and_peer(rng, channels, filters, kernel_size, height, width, gate_convs="auto",
                         state_is_tuple=False):
    cell = ConvLSTMCell(filters, kernel_size, forget_bias=1.0, gate_convs=gate_convs,
                        state_is_tuple=state_is_tuple)
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


@pytest.mark.parametrize("gate_convs", ["fused", "per_gate"])
@pytest.mark.parametrize(
    "channels,filters,kernel_size,height,width",
    [(3, 4, 3, 8, 8), (1, 2, (3, 5), 6, 9), (5, 8, 1, 4, 4), (4, 3, 5, 10, 7)],
)
def test_matches_keras_conv_lstm2d(channels, filters, kernel_size, height, width, gate_convs):
    rng = np.random.default_rng(channels * 100 + filters)
    cell, peer = random_cell_and_peer(rng, channels, filters, kernel_size, height, width,
                                      gate_convs)
    x = rng.normal(0, 1, (2, 6, height, width, channels)).astype("float32")
    ours, state = keras.layers.RNN(cell, return_sequences=True, return_state=True)(x)
    theirs, h, c = peer(x)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(state, np.concatenate([c, h], axis=-1), atol=1e-5)


@pytest.mark.parametrize("channels,filters,kernel_size,height,width",
                         [(3, 4, 3, 8, 8), (2, 3, (3, 5), 6, 9)])
def test_gate_convs_same_gradients(channels, filters, kernel_size, height, width):
    """Both ways of computing the gates give the same gradients for the kernel, the bias and the
    inputs, through a sequence (the per-gate way has its own bias gradient on TensorFlow)."""
    import tensorflow as tf

    rng = np.random.default_rng(7)
    x = tf.constant(rng.normal(0, 1, (2, 5, height, width, channels)).astype("float32"))
    target = rng.normal(0, 1, (2, 5, height, width, filters)).astype("float32")
    grads = {}
    for gate_convs in ("fused", "per_gate"):
        cell, _ = random_cell_and_peer(np.random.default_rng(3), channels, filters, kernel_size,
                                       height, width, gate_convs)
        layer = keras.layers.RNN(cell, return_sequences=True)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum((layer(x) - target) ** 2)
        grads[gate_convs] = tape.gradient(loss, [cell.kernel, cell.bias, x])
    for fused, per_gate in zip(grads["fused"], grads["per_gate"]):
        np.testing.assert_allclose(per_gate, fused, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("gate_convs", ["fused", "per_gate"])
def test_tuple_state_computes_the_same(gate_convs):
    """`state_is_tuple=True`: the same outputs, the concatenated state's two halves as its two
    states, and the same gradients for the kernel, the bias, the inputs and the initial state."""
    import tensorflow as tf

    rng = np.random.default_rng(11)
    x = tf.constant(rng.normal(0, 1, (2, 5, 6, 7, 3)).astype("float32"))
    c0, h0 = (tf.constant(rng.normal(0, 1, (2, 6, 7, 4)).astype("float32")) for _ in "ch")
    results = {}
    for state_is_tuple in (False, True):
        cell, peer = random_cell_and_peer(np.random.default_rng(5), 3, 4, 3, 6, 7, gate_convs,
                                          state_is_tuple)
        layer = keras.layers.RNN(cell, return_sequences=True, return_state=True)
        with tf.GradientTape() as tape:
            tape.watch([x, c0, h0])
            initial = [c0, h0] if state_is_tuple else [tf.concat([c0, h0], axis=-1)]
            outputs, *states = layer(x, initial_state=initial)
            loss = tf.reduce_sum(outputs ** 2) + sum(tf.reduce_sum(s ** 3) for s in states)
        grads = tape.gradient(loss, [cell.kernel, cell.bias, x, c0, h0])
        results[state_is_tuple] = outputs, states, grads
    (out, [state], grads), (out_t, states_t, grads_t) = results[False], results[True]
    assert len(states_t) == 2 and tuple(states_t[0].shape) == (2, 6, 7, 4)
    np.testing.assert_allclose(out_t, out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.concatenate(states_t, axis=-1), state, rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(grads_t, grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    theirs, h, c = peer(x, initial_state=[h0, c0])  # and keras.layers.ConvLSTM2D's ([h, c])
    np.testing.assert_allclose(out_t, theirs, atol=1e-5)
    np.testing.assert_allclose(states_t[0], c, atol=1e-5)
    np.testing.assert_allclose(states_t[1], h, atol=1e-5)


def test_tuple_state_shapes_and_functional_use():
    cell = ConvLSTMCell(4, 3, state_is_tuple=True)
    inputs = keras.Input((5, 8, 6, 3))
    outputs = ConvRNN(cell, return_state=True)(inputs)
    model = keras.Model(inputs, outputs)
    assert model.output_shape == [(None, 8, 6, 4)] * 3  # h, and the state [c, h]
    assert [tuple(s.shape) for s in cell.get_initial_state(2)] == [(2, 8, 6, 4)] * 2
    out, c, h = model(np.random.default_rng(0).random((2, 5, 8, 6, 3), dtype=np.float32))
    np.testing.assert_array_equal(out, h)


@pytest.mark.parametrize("height,width", [(7, 6), (16, 17)])  # both ways to the kernel's
@pytest.mark.parametrize("kernel_size", [(3, 3), (2, 3), (1, 1), (4, 5)])
def test_conv_gradients_match_autodiff(kernel_size, height, width):
    """`_conv_gradients` (the cell's convolution gradients on JAX) gives TensorFlow's own
    gradients of a SAME convolution, for odd and even kernel sizes, small and large images."""
    import tensorflow as tf

    from model.conv_lstm_cell import PER_TAP_KERNEL_GRADIENT_FROM, _conv_gradients

    assert 7 * 6 < PER_TAP_KERNEL_GRADIENT_FROM <= 16 * 17
    rng = np.random.default_rng(sum(kernel_size))
    x = tf.constant(rng.normal(0, 1, (3, height, width, 4)).astype("float32"))
    kernel = tf.constant(rng.normal(0, 1, (*kernel_size, 4, 5)).astype("float32"))
    grad = tf.constant(rng.normal(0, 1, (3, height, width, 5)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        y = keras.ops.conv(x, kernel, padding="same")
    expected = tape.gradient(y, [x, kernel], output_gradients=grad)
    for ours, theirs in zip(_conv_gradients(x, kernel, grad), expected):
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


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


def test_auto_gate_convs_by_size():
    cells = {}
    for filters, size in [(4, 8), (16, 16), (8, 32), (32, 16), (16, 32), (64, 16)]:
        cells[filters, size] = ConvLSTMCell(filters, 3)
        cells[filters, size].build((None, size, size, 3))
    per_gate = {key for key, cell in cells.items() if cell._per_gate}
    assert per_gate == {(16, 32), (64, 16)}  # on TensorFlow from 16,384 state values up
    jax_per_gate = {key for key in cells if auto_per_gate(key[1], key[1], key[0], "jax")}
    assert jax_per_gate == {(32, 16), (16, 32), (64, 16)}  # JAX: from H W F^2 = 131,072 up
    with pytest.raises(ValueError, match="gate_convs"):
        ConvLSTMCell(4, 3, gate_convs="split")


def test_config_round_trip():
    cell = ConvLSTMCell(6, (3, 1), forget_bias=0.5, activation="relu", name="c",
                        gate_convs="per_gate", state_is_tuple=True)
    clone = ConvLSTMCell.from_config(json.loads(json.dumps(cell.get_config())))
    assert clone.get_config() == cell.get_config()
    assert clone.gate_convs == "per_gate" and clone.state_is_tuple is True
    assert ConvLSTMCell(6, 3).state_is_tuple is False  # the original's concatenated state
    assert (clone.filters, clone.kernel_size, clone.forget_bias) == (6, (3, 1), 0.5)


@pytest.mark.parametrize("state_is_tuple", [False, True])
def test_keras_file_round_trip(tmp_path, state_is_tuple):
    inputs = keras.Input((4, 8, 8, 3))
    cell = ConvLSTMCell(4, 3, state_is_tuple=state_is_tuple)
    outputs = ConvRNN(cell, return_sequences=True)(inputs)
    model = keras.Model(inputs, outputs)
    assert model.output_shape == (None, 4, 8, 8, 4)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.layers[-1].cell.state_is_tuple is state_is_tuple
    x = np.random.default_rng(0).random((2, 4, 8, 8, 3), dtype=np.float32)
    np.testing.assert_array_equal(model(x), loaded(x))


JAX_SCRIPT = r"""
import numpy as np, keras
assert keras.backend.backend() == "jax"
import sys; sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
from test_conv_lstm_cell import random_cell_and_peer
from model.conv_lstm_cell import ConvLSTMCell
from model.networks import ConvLSTMPredictor
from model.train_step import make_train_step
from systems.bouncing_balls import generate
rng = np.random.default_rng(0)
cell, peer = random_cell_and_peer(rng, 3, 4, 3, 8, 8)
x = rng.normal(0, 1, (2, 5, 8, 8, 3)).astype("float32")
ours, state = keras.layers.RNN(cell, return_sequences=True, return_state=True)(x)
theirs, h, c = peer(x)
print("cell", float(np.max(np.abs(np.asarray(ours) - np.asarray(theirs)))))
tuple_cell = ConvLSTMCell(4, 3, state_is_tuple=True)
tuple_cell.build((None, 8, 8, 3))
tuple_cell.set_weights(cell.get_weights())
tuple_results = keras.layers.RNN(tuple_cell, return_sequences=True, return_state=True)(x)
print("tuple_state", max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                         for a, b in zip(tuple_results, (theirs, c, h))))
import jax
from model.conv_lstm_cell import _jax_cpu_conv
same = lambda a, b: keras.ops.conv(a, b, padding="same")
errors = []
for height, width in ((7, 6), (16, 17)):  # both ways to the kernel's gradient
    x2 = rng.normal(0, 1, (2, height, width, 4)).astype("float32")
    k2 = rng.normal(0, 1, (2, 3, 4, 5)).astype("float32")
    g2 = rng.normal(0, 1, (2, height, width, 5)).astype("float32")
    ours2 = jax.vjp(_jax_cpu_conv(), x2, k2)[1](g2)
    theirs2 = jax.vjp(same, x2, k2)[1](g2)
    errors += [float(np.max(np.abs(a - b))) for a, b in zip(ours2, theirs2)]
print("conv_grads", max(errors))
import model.conv_lstm_cell as cell_module
traced = []
def rnn_grads(gate_convs):  # kernel, bias and input gradients through keras.layers.RNN's scan
    layer = keras.layers.RNN(ConvLSTMCell(4, (3, 2), gate_convs=gate_convs), return_sequences=True)
    layer(x)
    def loss(weights, inputs):
        return keras.ops.sum(layer.stateless_call(weights, [], inputs)[0] ** 2)
    weights = [v.value for v in layer.trainable_variables]
    traced.append("custom_vjp" in str(jax.make_jaxpr(loss)(weights, x)))
    return jax.grad(loss, argnums=(0, 1))(weights, x)
for gate_convs in ("fused", "per_gate"):
    keras.utils.set_random_seed(1)
    ours3 = jax.tree_util.tree_leaves(rnn_grads(gate_convs))
    keras.utils.set_random_seed(1)
    with cell_module.xla_gradients_on_jax_cpu():  # JAX's own convolution gradients
        theirs3 = jax.tree_util.tree_leaves(rnn_grads(gate_convs))
    print("rnn_grads_" + gate_convs, max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(ours3, theirs3)))
print("own_gradients_traced", *traced)  # ours, JAX's; per gate: ours, JAX's
keras.utils.set_random_seed(0)
model = ConvLSTMPredictor()
model.build((4, 10, 32, 32, 3))
step, sync = make_train_step(model, keras.optimizers.Adam(1e-3))
clip = generate(4, 10, rng=1)
losses = [float(step(clip)) for _ in range(100)]
sync()
print("loss", losses[0], losses[-1], tuple(model(clip).shape))
seed_state = np.asarray(model.dropout.seed_generator.state.value)
print("dropout_draws", int(seed_state[-1]))  # the stateless step must hand its state back
cells = [ConvLSTMCell(filters, 3) for filters in (4, 16, 8, 32, 16)]
for cell_, size in zip(cells, (8, 16, 32, 16, 32)):
    cell_.build((None, size, size, 4))
print("auto_per_gate", *[cell_._per_gate for cell_ in cells])  # JAX: from H W F^2 = 131,072 up
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_cell_and_network_on_jax():
    script = JAX_SCRIPT.format(root=ROOT, tests=os.path.join(ROOT, "tests"))
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert float(lines["cell"]) < 1e-5
    assert float(lines["tuple_state"]) < 1e-5  # output and [c, h] as ConvLSTM2D's
    assert float(lines["conv_grads"]) < 1e-4  # our convolution gradients are JAX's own
    assert float(lines["rnn_grads_fused"]) < 1e-5  # and so are the cell's, through the RNN
    assert float(lines["rnn_grads_per_gate"]) < 1e-5
    assert lines["own_gradients_traced"] == "True False True False"  # two different ways
    first, last, shape = lines["loss"].split(" ", 2)
    assert float(last) < 0.8 * float(first)
    assert shape == "(4, 4, 32, 32, 3)"
    assert int(lines["dropout_draws"]) == 100  # a fresh dropout mask at every step
    assert lines["auto_per_gate"] == "False False False True True"
