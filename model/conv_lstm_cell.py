"""A convolutional LSTM cell with a concatenated state, on the Keras 3 RNN cell API."""

import contextlib
import functools

import keras
from keras import ops

from model import kernel_grads


def auto_per_gate(height, width, filters, backend=None):
    """Whether `gate_convs="auto"` computes the gates per gate: the crossovers measured on a
    2-core CPU (see `ConvLSTMCell`). On TensorFlow the per-gate way wins once the activations the
    fused way concatenates and splits are large, from 16,384 state values per example
    (`H * W * filters`) up. On JAX (measured on its CPU backend, where each of the per-gate
    way's eight convolutions computes its kernel gradient in small pieces, see `_conv`), only
    once each gate's convolution is large as well: from `H * W * filters**2 >= 131,072` up."""
    backend = backend or keras.backend.backend()
    if backend == "jax":
        return height * width * filters * filters >= 131072
    return height * width * filters >= 16384


@keras.saving.register_keras_serializable(package="conv_lstm")
class ConvLSTMCell(keras.layers.Layer):
    """Convolutional LSTM cell (Shi et al., 2015) with one fused convolution.

    One SAME, stride-1 convolution over `concat([inputs, h])` gives the four
    gate pre-activations, split along channels in the order `i, j, f, o`:

        i, j, f, o = split(conv([x_t, h_tm1], kernel) + bias, 4)
        c_t = c_tm1 * sigmoid(f + forget_bias) + sigmoid(i) * act(j)
        h_t = act(c_t) * sigmoid(o)

    The state is a single tensor `concat([c, h])` on the channel axis, as in
    TensorFlow's old `BasicLSTMCell` with `state_is_tuple=False`; with
    `state_is_tuple=True` it is the two tensors `[c, h]` instead (the same
    numbers, without copying the state apart and together at every step: a
    training step 3.5-4.7 % faster at 32 filters on 32x32 on TensorFlow, 2.7 %
    on JAX; see the README's cell table).
    The output is `h_t`. `forget_bias` is added at every step; it is not an
    initialiser.

    The same numbers can be computed two ways: one convolution over the
    concatenation (`"fused"`), or, by linearity, eight convolutions with the
    kernel's input and recurrent parts for each gate, summed (`"per_gate"`).
    Fused is faster for small cells, per gate for large ones, where
    concatenating and splitting big activations dominates. Training steps
    over 16 x 10 frames on a 2-core CPU, fused vs per gate (`python
    bench/benchmark.py --parts gates --cells 16x16,8x32,32x16,16x32,32x32`),
    TensorFlow: 16 filters on 16x16 33.7 vs 42.0 ms, 8 on 32x32 53.5 vs
    72.7 ms, 32 on 16x16 83.1 vs 86.9 ms, 16 on 32x32 132.2 vs 125.5 ms,
    32 on 32x32 407 vs 357 ms; JAX: 16 on 16x16 79.1 vs 123.0 ms, 8 on
    32x32 133.4 vs 266.1 ms, 32 on 16x16 232.5 vs 153.5 ms, 16 on 32x32
    385 vs 328 ms, 32 on 32x32 1,221 vs 740 ms.
    On TensorFlow the per-gate way adds each gate's bias with a fusable
    `BiasAdd` and folds `forget_bias` into it. `"auto"` picks per gate where
    `auto_per_gate` says so. The weights are the same either way.

    Args:
        filters: Number of output channels `F` of `h` and `c`.
        kernel_size: An int or a pair `(kh, kw)`.
        forget_bias: Added to the forget gate before its sigmoid.
        activation: Activation for `j` and `c` (default `"tanh"`).
        kernel_initializer: Initialiser for the kernel of shape
            `(kh, kw, C_in + F, 4F)`.
        bias_initializer: Initialiser for the bias of shape `(4F,)`.
        gate_convs: `"auto"`, `"fused"` or `"per_gate"`: how the gates are
            computed (the result is the same).
        state_is_tuple: `False` (default, the original's): the state is one
            tensor `concat([c, h])`; `True`: two tensors `[c, h]`.
        **kwargs: Passed to `keras.layers.Layer`.

    Call arguments:
        inputs: `(batch, H, W, C_in)`, channels last.
        states: A list holding one tensor `(batch, H, W, 2F)`, `concat([c, h])`;
            with `state_is_tuple`, two tensors `(batch, H, W, F)`, `[c, h]`.
        training: Unused; accepted for the RNN cell API.

    Returns:
        `(h_t, [concat([c_t, h_t])])`, or `(h_t, [c_t, h_t])` with `state_is_tuple`.

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
        gate_convs="auto",
        state_is_tuple=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if gate_convs not in ("auto", "fused", "per_gate"):
            raise ValueError(f"gate_convs must be 'auto', 'fused' or 'per_gate', got {gate_convs!r}")
        self.gate_convs = gate_convs
        self.state_is_tuple = bool(state_is_tuple)
        if isinstance(kernel_size, int):
            kernel_size = (kernel_size, kernel_size)
        self.filters = int(filters)
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.forget_bias = float(forget_bias)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        # keras.layers.RNN wants flat sizes here; the true (H, W, 2F) or (H, W, F)
        # shapes come from get_initial_state, as in keras.layers.ConvLSTM2D's cell.
        self.state_size = [-1, -1] if self.state_is_tuple else -1

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
        self._per_gate = self.gate_convs == "per_gate" or (
            self.gate_convs == "auto"
            and None not in (height, width)
            and auto_per_gate(height, width, self.filters)
        )

    def call(self, inputs, states, training=None):
        if self.state_is_tuple:
            c_tm1, h_tm1 = states
        else:
            state = states[0] if isinstance(states, (list, tuple)) else states
            c_tm1, h_tm1 = ops.split(state, 2, axis=-1)
        if self._per_gate:
            i, j, f, o = self._gates_per_gate(inputs, h_tm1)  # forget_bias included
        else:
            x_h = ops.concatenate([inputs, h_tm1], axis=-1)
            z = kernel_grads.apply(self.kernel, x_h, _conv, bias=self.bias)
            i, j, f, o = ops.split(z, 4, axis=-1)
            f = f + self.forget_bias
        c = c_tm1 * ops.sigmoid(f) + ops.sigmoid(i) * self.activation(j)
        h = self.activation(c) * ops.sigmoid(o)
        return h, [c, h] if self.state_is_tuple else [ops.concatenate([c, h], axis=-1)]

    def _gates_per_gate(self, inputs, h_tm1):
        """`conv([x, h], K) = conv(x, K_x) + conv(h, K_h)`, one gate's output channels at a time:
        no activation is concatenated or split, only the small kernel. (`split` rather than
        slicing: a slice's gradient is a zero-padded copy of the whole kernel at every step.)
        `forget_bias` is added to the forget gate's bias vector, not to its activation."""
        kernel_x, kernel_h = ops.split(self.kernel, [inputs.shape[-1]], axis=2)
        kernels_x = ops.split(kernel_x, 4, axis=-1)
        kernels_h = ops.split(kernel_h, 4, axis=-1)
        bias_i, bias_j, bias_f, bias_o = ops.split(self.bias, 4)
        biases = (bias_i, bias_j, bias_f + self.forget_bias, bias_o)
        return [
            _biased_sum(_conv(inputs, kx), b, _conv(h_tm1, kh))
            for kx, kh, b in zip(kernels_x, kernels_h, biases)
        ]

    def get_initial_state(self, batch_size=None):
        if self.state_is_tuple:
            zeros = ops.zeros((batch_size, *self.spatial_shape, self.filters), self.compute_dtype)
            return [zeros, zeros]  # c, h
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
            "gate_convs": self.gate_convs,
            "state_is_tuple": self.state_is_tuple,
        }


# Whether `_conv` uses `_conv_gradients` on JAX's CPU backend; read when a step is traced
# (`xla_gradients_on_jax_cpu` turns it off for a comparison).
OWN_GRADIENTS_ON_JAX_CPU = True


@contextlib.contextmanager
def xla_gradients_on_jax_cpu():
    """Within it, `_conv` keeps XLA's own convolution gradients on JAX's CPU backend: a step
    traced inside computes them, so the benchmark and the tests can compare them with ours."""
    global OWN_GRADIENTS_ON_JAX_CPU
    saved, OWN_GRADIENTS_ON_JAX_CPU = OWN_GRADIENTS_ON_JAX_CPU, False
    try:
        yield
    finally:
        OWN_GRADIENTS_ON_JAX_CPU = saved


def _conv(inputs, kernel):
    """The cell's SAME, stride-1 convolution. On JAX's CPU backend with the gradients of
    `_conv_gradients`: inside a `lax.scan` (`keras.layers.RNN`'s loop on JAX) XLA's CPU backend
    computes a convolution's own kernel gradient 9-32 times slower than outside one (its
    layouts are fixed there, and this one's are not those of its fast convolutions); the
    matrix products and the transposed convolution there are not slowed down
    (`bench/benchmark.py --parts cells`). Other devices keep XLA's own gradients (not measured
    there)."""
    if OWN_GRADIENTS_ON_JAX_CPU and _jax_on_cpu():
        return _jax_cpu_conv()(inputs, ops.convert_to_tensor(kernel))  # a variable's value
    return _same_conv(inputs, kernel)


def _same_conv(inputs, kernel):
    return ops.conv(inputs, kernel, padding="same")


def _jax_on_cpu():
    """Whether Keras runs on JAX, and JAX on its CPU backend."""
    if keras.backend.backend() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


# From this many pixels per image up, `_conv_gradients` computes the kernel's gradient as one
# matrix product per kernel tap; below it, as one convolution of the transposed input and output
# gradient. JAX on a 2-core CPU, cell training steps in `keras.layers.RNN`: 4 filters on 8x8
# 5.2 vs 4.2 ms, 16 on 16x16 82 vs 89 ms, 32 on 32x32 784 vs 1,023 ms (per tap vs convolution).
PER_TAP_KERNEL_GRADIENT_FROM = 256


def _conv_gradients(inputs, kernel, grad):
    """The gradients of `_same_conv(inputs, kernel)` (stride 1) with respect to
    `inputs` and `kernel`, given the gradient `grad` of its output. The input's: a convolution
    of `grad` with the kernel flipped in space and transposed. The kernel's: for each kernel tap
    `(a, b)`, a matrix product of the zero-padded input's window at that tap with `grad`; or,
    for small images, one convolution with the roles swapped (the channels of the input as its
    batch, the batch as its channels, `grad` as its kernel), written with explicit transposes.
    The same sums as any convolution gradient, in another order."""
    kh, kw = kernel.shape[:2]
    top, left = (kh - 1) // 2, (kw - 1) // 2  # SAME: the odd pixel of padding goes after
    height, width = inputs.shape[1:3]
    padded_grad = ops.pad(grad, [(0, 0), (kh - 1 - top, top), (kw - 1 - left, left), (0, 0)])
    flipped = ops.transpose(ops.flip(kernel, axis=(0, 1)), (0, 1, 3, 2))
    d_inputs = ops.conv(padded_grad, flipped, padding="valid")
    padded = ops.pad(inputs, [(0, 0), (top, kh - 1 - top), (left, kw - 1 - left), (0, 0)])
    if height * width < PER_TAP_KERNEL_GRADIENT_FROM:
        swapped = ops.conv(ops.transpose(padded, (3, 1, 2, 0)), ops.transpose(grad, (1, 2, 0, 3)),
                           padding="valid")  # (C_in, kh, kw, C_out)
        return d_inputs, ops.transpose(swapped, (1, 2, 0, 3))
    d_kernel = ops.stack([
        ops.stack([
            ops.einsum("bhwc,bhwf->cf", padded[:, a : a + height, b : b + width], grad)
            for b in range(kw)
        ])
        for a in range(kh)
    ])
    return d_inputs, d_kernel


@functools.cache
def _jax_cpu_conv():
    """`_same_conv` with `_conv_gradients` as its gradients, for JAX."""
    import jax

    def forward(inputs, kernel):
        return _same_conv(inputs, kernel), (inputs, kernel)

    def backward(saved, grad):
        return _conv_gradients(*saved, grad)

    conv_with_gradients = jax.custom_vjp(_same_conv)
    conv_with_gradients.defvjp(forward, backward)
    return conv_with_gradients


def _biased_sum(x, bias, y):
    """`x + bias + y`, `bias` along the last axis. On TensorFlow as a `BiasAdd` that its graph
    optimiser fuses, with the add, into the convolution `x` comes from (a Keras `+ bias` is not
    fused), with the bias gradient as a plain sum (TensorFlow would otherwise fuse that into the
    kernel gradient, which costs more on a CPU). The same numbers either way."""
    if keras.backend.backend() == "tensorflow":
        return _tensorflow_biased_sum()(x, bias, y)
    return x + bias + y


@functools.cache
def _tensorflow_biased_sum():
    import tensorflow as tf

    @tf.custom_gradient
    def biased_sum(x, bias, y):
        def grad(dz):
            return dz, tf.reduce_sum(dz, axis=list(range(len(dz.shape) - 1))), dz

        return tf.nn.bias_add(x, bias) + y, grad

    return biased_sum


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
        if self.return_state and self.cell.state_is_tuple:
            return output, *[(batch, height, width, self.cell.filters)] * 2
        if self.return_state:
            return output, (batch, height, width, 2 * self.cell.filters)
        return output
