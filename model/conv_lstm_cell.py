"""A convolutional LSTM cell with a concatenated state, on the Keras 3 RNN cell API."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="conv_lstm")
class ConvLSTMCell(keras.layers.Layer):
    """Convolutional LSTM cell (Shi et al., 2015), as the 2016 original wrote it.

    One SAME, stride-1 convolution over `concat([inputs, h])` gives the four
    gate pre-activations, split along channels in the order `i, j, f, o`:

        i, j, f, o = split(conv([x_t, h_tm1], kernel) + bias, 4)
        c_t = c_tm1 * sigmoid(f + forget_bias) + sigmoid(i) * act(j)
        h_t = act(c_t) * sigmoid(o)

    The state is one tensor, `concat([c, h])` on the channel axis (TensorFlow
    1's `state_is_tuple=False`). The output is `h_t`. `forget_bias` is added at
    every step; it is not an initialiser.

    Args:
        filters: Number of channels `F` of `h` and `c`.
        kernel_size: An int or a pair `(kh, kw)`.
        forget_bias: Added to the forget gate before its sigmoid.
        activation: Activation for `j` and `c` (default `"tanh"`).
        kernel_initializer: Initialiser of the kernel `(kh, kw, C_in + F, 4F)`.
        bias_initializer: Initialiser of the bias `(4F,)`.
        **kwargs: Passed to `keras.layers.Layer`.

    Call arguments:
        inputs: `(batch, H, W, C_in)`, channels last.
        states: A list holding one tensor `(batch, H, W, 2F)`, `concat([c, h])`.
        training: Unused; accepted for the RNN cell API.

    Returns:
        `(h_t, [concat([c_t, h_t])])`.

    Example:

    >>> cell = ConvLSTMCell(filters=4, kernel_size=3)
    >>> layer = keras.layers.RNN(cell, return_sequences=True)
    >>> layer(np.zeros((2, 5, 8, 8, 3), "float32")).shape
    (2, 5, 8, 8, 4)

    In a functional model, wrap the cell in `ConvRNN` (below): Keras's own
    `RNN` can only infer symbolic shapes for flat, vector-valued cells.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        forget_bias=1.0,
        activation="tanh",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(kernel_size, int):
            kernel_size = (kernel_size, kernel_size)
        self.filters = int(filters)
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.forget_bias = float(forget_bias)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        # keras.layers.RNN wants a flat size here; the true (H, W, 2F) shape comes from
        # get_initial_state, as in keras.layers.ConvLSTM2D's cell.
        self.state_size = -1

    def build(self, inputs_shape):
        *_, height, width, channels = inputs_shape
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, channels + self.filters, 4 * self.filters),
            initializer=self.kernel_initializer,
        )
        self.bias = self.add_weight(
            name="bias", shape=(4 * self.filters,), initializer=self.bias_initializer
        )
        self.spatial_shape = (height, width)

    def call(self, inputs, states, training=None):
        state = states[0] if isinstance(states, (list, tuple)) else states
        c_tm1, h_tm1 = ops.split(state, 2, axis=-1)
        x_h = ops.concatenate([inputs, h_tm1], axis=-1)
        z = ops.conv(x_h, self.kernel, padding="same") + self.bias
        i, j, f, o = ops.split(z, 4, axis=-1)
        c = c_tm1 * ops.sigmoid(f + self.forget_bias) + ops.sigmoid(i) * self.activation(j)
        h = self.activation(c) * ops.sigmoid(o)
        return h, [ops.concatenate([c, h], axis=-1)]

    def get_initial_state(self, batch_size=None):
        if not self.built:
            raise ValueError(
                "ConvLSTMCell.get_initial_state needs the frame size: build the cell first, "
                "`cell.build((batch, H, W, C))`, or call it inside `keras.layers.RNN`"
            )
        shape = (batch_size, *self.spatial_shape, 2 * self.filters)
        return [ops.zeros(shape, dtype=self.compute_dtype)]

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "forget_bias": self.forget_bias,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


@keras.saving.register_keras_serializable(package="conv_lstm")
class ConvRNN(keras.layers.RNN):
    """`keras.layers.RNN` that infers shapes for a `ConvLSTMCell`.

    Behaves exactly like `keras.layers.RNN`; it only adds the symbolic shape
    inference that the functional API needs for `(batch, time, H, W, C)`
    sequences (SAME padding keeps `H, W`).

    Example:

    >>> inputs = keras.Input((5, 8, 8, 3))
    >>> outputs = ConvRNN(ConvLSTMCell(4, 3), return_sequences=True)(inputs)
    >>> keras.Model(inputs, outputs).output_shape
    (None, 5, 8, 8, 4)
    """

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        batch, time, height, width = sequences_shape[:4]
        output = (batch, height, width, self.cell.filters)
        if self.return_sequences:
            output = (batch, time, height, width, self.cell.filters)
        if self.return_state:
            return output, (batch, height, width, 2 * self.cell.filters)
        return output
