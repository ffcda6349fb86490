import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from model import kernel_grads
from model.conv_lstm_cell import ConvLSTMCell
from model.train_step import chained_loss, make_train_step
from model.training import CONV, CONV_LSTM, batch_at, build
from test_networks import randomise

# Calls per chain of each 3x3 layer: the context frames are encoded as one batch, every
# prediction is decoded, every prediction but the last is encoded again; the cell steps through
# the context frames, then through the predictions but the last.
CALLS = {
    "conv": {"encoder": 1 + 3, "decoder": 4},
    "conv_lstm": {"encoder": 1 + 4, "decoder": 5, "conv_lstm_cell": 5 + 4},
}


def gradients(model, clip, chains, batched):
    """The gradients of the chained loss, with or without one kernel-gradient op per kernel,
    and the recorded calls."""
    variables = model.trainable_variables
    seen = []

    @tf.function
    def grads(clip):
        if not batched:
            with tf.GradientTape() as tape:
                loss = chained_loss(model, clip, chains)
            return tape.gradient(loss, variables)
        with kernel_grads.recording() as calls, tf.GradientTape() as tape:
            loss = chained_loss(model, clip, chains)
        seen.append(calls)
        return calls.add_kernel_gradients(tape.gradient(loss, variables), variables)

    return [g.numpy() for g in grads(clip)], seen


@pytest.mark.parametrize("config", [CONV_LSTM, CONV], ids=["conv_lstm", "conv"])
def test_one_kernel_gradient_per_layer_is_the_sum_over_calls(config):
    config = dataclasses.replace(config, batch_size=4, keep_prob=1.0)
    model, _ = build(config)
    randomise(model)
    clip = tf.constant(batch_at(config, 0))
    per_call, _ = gradients(model, clip, chains=2, batched=False)
    batched, (calls,) = gradients(model, clip, chains=2, batched=True)
    for variable, a, b in zip(model.trainable_variables, per_call, batched):
        assert np.abs(a).max() > 0, variable.path
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * np.abs(a).max(), err_msg=variable.path)
    # one group of calls per chain and kernel (1x1 layers are matrix products: not recorded)
    recorded = {(kernel.path, group): len(pairs)
                for (_, _, group), (kernel, _, _, pairs) in calls.calls.items()}
    expected = {
        (v.path, chain): CALLS[config.model][v.path.split("/")[1]]
        for v in model.trainable_variables
        if v.path.endswith("kernel") and v.shape[:2] == (3, 3)
        for chain in (0, 1)
    }
    assert recorded == expected


def test_loops_keep_their_own_gradients():
    """A cell inside `keras.layers.RNN` runs in a TensorFlow while loop, whose tensors the step
    cannot gather: its kernel gradient is left to the loop, and is still right."""

    class Recurrent(keras.Model):
        def __init__(self):
            super().__init__()
            cell = ConvLSTMCell(4, 3, gate_convs="fused")
            self.layer = keras.layers.RNN(cell, return_sequences=True)

        def training_loss(self, x):
            return keras.ops.sum(keras.ops.square(self.layer(x)))

    x = tf.constant(np.random.default_rng(0).random((2, 3, 8, 8, 2), dtype=np.float32))
    model = Recurrent()
    model.training_loss(x)  # builds the weights
    per_call, _ = gradients(model, x, chains=1, batched=False)
    batched, (calls,) = gradients(model, x, chains=1, batched=True)
    # (Keras's RNN calls the cell once outside the loop for the output's shape, unused.)
    assert [pairs for *_, pairs in calls.calls.values()] in ([], [[]])
    for a, b in zip(per_call, batched):
        np.testing.assert_allclose(b, a, rtol=1e-6)


def test_training_step_batches_kernel_gradients_by_default(monkeypatch):
    recordings = []
    real = kernel_grads.recording

    def spy():
        recordings.append(1)
        return real()

    monkeypatch.setattr(kernel_grads, "recording", spy)
    config = dataclasses.replace(CONV, batch_size=2)
    model, optimizer = build(config)
    step, _ = make_train_step(model, optimizer)
    step(batch_at(config, 0))
    assert recordings == [1]
    model, optimizer = build(config)
    step, _ = make_train_step(model, optimizer, batched_kernel_grads=False)
    step(batch_at(config, 0))
    assert recordings == [1]


def test_groups_nest_and_do_nothing_outside_a_recording():
    with kernel_grads.group("a"):  # no recording: nothing to do
        pass
    with kernel_grads.recording() as calls:
        with kernel_grads.group("a"):
            with kernel_grads.group("b"):
                assert calls.group == "b"
            assert calls.group == "a"
        assert calls.group is None


def test_recording_does_not_nest():
    with kernel_grads.recording():
        with pytest.raises(RuntimeError, match="already active"):
            with kernel_grads.recording():
                pass
    assert kernel_grads._recorder is None
