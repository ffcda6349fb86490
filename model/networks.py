"""The bouncing-ball predictors: a conv encoder, an optional ConvLSTM core, a deconv decoder.

Frames are `(32, 32, 3)` floats in [0, 1]. Both predictors step one frame at a
time and feed their own predictions back after `context` true frames.
"""

import keras
from keras import layers, ops

from model import kernel_grads
from model.conv_lstm_cell import ConvLSTMCell

CODE_CHANNELS = 4  # channels of the 8x8 code between encoder and decoder


def _conv_kwargs():
    return dict(
        padding="same",
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
        bias_initializer=keras.initializers.Constant(0.01),
    )


def _pointwise(layer, inputs):
    """Whether `layer` is a 1x1, stride-1, channels-last convolution of `inputs` with static
    spatial sizes: one that a matrix product computes."""
    return (
        layer.kernel_size == (1, 1)
        and layer.strides == (1, 1)
        and layer.dilation_rate == (1, 1)
        and layer.data_format == "channels_last"
        and getattr(layer, "groups", 1) == 1
        and None not in inputs.shape[1:]
    )


def _pointwise_call(layer, inputs, matrix):
    """`layer`'s output where its kernel is the `(C_in, C_out)` `matrix`: one 2-D matrix product
    over the channels, bias and activation applied before the reshape back (where TensorFlow can
    fuse them into the product)."""
    outputs = ops.matmul(ops.reshape(inputs, (-1, inputs.shape[-1])), matrix)
    if layer.use_bias:
        outputs = outputs + layer.bias
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return ops.reshape(outputs, (-1, *inputs.shape[1:-1], matrix.shape[-1]))


def _through_kernel_grads(layer, inputs, fn):
    """`layer`'s output: `fn(inputs, kernel)`, bias, activation, with the kernel and bias
    gradients left to `kernel_grads` (which our TensorFlow training step batches over calls)."""
    channels_last = layer.data_format == "channels_last"
    bias = layer.bias if layer.use_bias and channels_last else None
    outputs = kernel_grads.apply(layer.kernel, inputs, fn, bias=bias)
    if layer.use_bias and not channels_last:  # (C, 1, 1) broadcasts over (B, C, H, W)
        outputs = outputs + ops.reshape(layer.bias, (-1, *[1] * (len(outputs.shape) - 2)))
    if layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs


# The two classes below keep Keras's class names on purpose: Keras files weights under the
# snake-cased class name, so checkpoints written with Keras's own layers still load.


@keras.saving.register_keras_serializable(package="conv_lstm")
class Conv2D(layers.Conv2D):
    """`keras.layers.Conv2D`, with a 1x1 stride-1 convolution computed as a matrix product over
    the channels: the same sums, and on TensorFlow's CPU kernels a fraction of the fixed cost of
    a small convolution (measured: about 1 ms of a 9-10 ms conv training step). Other
    convolutions go through `kernel_grads.apply`, so our TensorFlow training step computes their
    kernel and bias gradients in one op each over all calls."""

    def call(self, inputs):
        if _pointwise(self, inputs):
            return _pointwise_call(self, inputs, ops.reshape(self.kernel, self.kernel.shape[2:]))
        return _through_kernel_grads(self, inputs, super().convolution_op)


@keras.saving.register_keras_serializable(package="conv_lstm")
class Conv2DTranspose(layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose`, with a 1x1 stride-1 one computed as a matrix product and
    the others through `kernel_grads.apply`, as `Conv2D` above (its kernel is
    `(1, 1, filters, C_in)`, hence the transpose)."""

    def call(self, inputs):
        if _pointwise(self, inputs) and self.output_padding is None:
            matrix = ops.transpose(ops.reshape(self.kernel, self.kernel.shape[2:]))
            return _pointwise_call(self, inputs, matrix)
        return _through_kernel_grads(self, inputs, self._transpose)

    def _transpose(self, inputs, kernel):
        """Keras's transposed convolution, before its bias and activation."""
        return ops.conv_transpose(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=self.padding,
            output_padding=self.output_padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )


def encoder():
    """`(B, 32, 32, 3) -> (B, 8, 8, 4)`: four convs, ELU after each."""
    spec = [(3, 2, 8), (3, 1, 8), (3, 2, 8), (1, 1, CODE_CHANNELS)]
    return keras.Sequential(
        [Conv2D(f, k, strides=s, activation="elu", **_conv_kwargs()) for k, s, f in spec],
        name="encoder",
    )


def decoder():
    """`(B, 8, 8, C) -> (B, 32, 32, 3)`: four transposed convs, ELU after all but the last."""
    spec = [(1, 1, 8, "elu"), (3, 2, 8, "elu"), (3, 1, 8, "elu"), (3, 2, 3, None)]
    return keras.Sequential(
        [Conv2DTranspose(f, k, strides=s, activation=a, **_conv_kwargs()) for k, s, f, a in spec],
        name="decoder",
    )


class InputDropout(layers.Layer):
    """Inverted dropout, as `keras.layers.Dropout`: in training, zero each value with
    probability `rate` and scale the rest by `1 / (1 - rate)`. Written as a multiply by the
    0/1 mask, which TensorFlow runs faster on the 245,760 input values of a ConvLSTM step
    than Keras's select (see `bench/benchmark.py`)."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0.0:
            return inputs
        noise = keras.random.uniform(ops.shape(inputs), seed=self.seed_generator)
        keep = ops.cast(noise >= self.rate, inputs.dtype)
        return inputs * keep * (1.0 / (1.0 - self.rate))


class Predictor(keras.Model):
    """Shared closed-loop rollout; subclasses define `core` and `initial_state`.

    Args:
        context: True frames fed in before the model feeds itself (`seq_start`).
        keep_prob: Keep probability of the dropout on true input frames.
    """

    scored_offset = 0  # closed-loop predictions made but not scored by the loss

    def __init__(self, context, keep_prob=0.8, **kwargs):
        super().__init__(**kwargs)
        self.context = context
        self.keep_prob = keep_prob
        self.encoder = encoder()
        self.decoder = decoder()
        self.dropout = InputDropout(1.0 - keep_prob) if keep_prob < 1.0 else None

    def call(self, clip, training=False):
        """`(B, T, 32, 32, 3) -> (B, T - first_scored, 32, 32, 3)`: the frames the loss scores."""
        return ops.stack(self._scored(clip, training), axis=1)

    def training_loss(self, clip, training=True):
        """The original's loss on a clip `(B, T, 32, 32, 3)`: `l2_loss(self(clip), clip[:, first:])`,
        summed frame by frame (the same number; its gradient skips a stack and a broadcast)."""
        targets = ops.unstack(clip[:, self.first_scored() :], axis=1)
        return sum(l2_loss(p, t) for p, t in zip(self._scored(clip, training), targets))

    def _scored(self, clip, training):
        frames = clip[:, : self.context]
        if self.dropout is not None:
            frames = self.dropout(frames, training=training)
        horizon = clip.shape[1] - self.context
        return self._predict(frames, horizon)[self.scored_offset :]

    def first_scored(self):
        """Index of the first frame of a clip that `call`'s output predicts."""
        return self.context + self.scored_offset

    def rollout(self, frames, horizon):
        """Context `(B, K, 32, 32, 3)` in, predictions of frames `K .. K + horizon - 1` out.

        The K context frames go through the encoder as one batch; the predictions the
        network would make from the first K - 1 of them are never used, so they are not decoded.
        """
        return ops.stack(self._predict(frames, horizon), axis=1)

    def _predict(self, frames, horizon):
        """`rollout` as a list of `horizon` frames `(B, 32, 32, 3)`. Lists and `unstack` rather
        than slices: the gradient of a slice is a padded copy, which costs more here."""
        batch, context = ops.shape(frames)[0], frames.shape[1]
        codes = self.encoder(ops.reshape(frames, (-1, *frames.shape[2:])))
        codes = ops.unstack(ops.reshape(codes, (batch, context, *codes.shape[1:])), axis=1)
        state = self.initial_state(batch)
        for code in codes[:-1]:
            state = self.core(code, state)[1]
        code, state = self.core(codes[-1], state)
        predictions = [self.decoder(code)]
        for _ in range(horizon - 1):
            code, state = self.core(self.encoder(predictions[-1]), state)
            predictions.append(self.decoder(code))
        return predictions


class ConvLSTMPredictor(Predictor):
    """Encoder, a 3x3 ConvLSTM cell with 4 filters at 8x8, decoder ("5 frames in, 4 out")."""

    scored_offset = 1  # the prediction of frame `context` is fed back but not scored

    def __init__(self, context=5, keep_prob=0.8, **kwargs):
        super().__init__(context, keep_prob, **kwargs)
        self.cell = ConvLSTMCell(
            CODE_CHANNELS,
            3,
            kernel_initializer=keras.initializers.RandomUniform(-0.01, 0.1),
            name="conv_lstm_cell",
        )

    def build(self, clip_shape):
        self.encoder.build((None, *clip_shape[2:]))
        self.cell.build(self.encoder.compute_output_shape((None, *clip_shape[2:])))
        self.decoder.build((None, *self.cell.spatial_shape, CODE_CHANNELS))

    def initial_state(self, batch_size):
        return self.cell.get_initial_state(batch_size)

    def core(self, code, state):
        """`(B, 8, 8, 4)` code and state in, the cell's output and new state out."""
        return self.cell(code, state)


class ConvPredictor(Predictor):
    """Encoder straight into decoder, no memory ("1 frame in, 4 out")."""

    def __init__(self, context=1, keep_prob=0.8, **kwargs):
        super().__init__(context, keep_prob, **kwargs)

    def build(self, clip_shape):
        self.encoder.build((None, *clip_shape[2:]))
        self.decoder.build(self.encoder.compute_output_shape((None, *clip_shape[2:])))

    def initial_state(self, batch_size):
        return ()

    def core(self, code, state):
        return code, state


def l2_loss(predictions, targets):
    """The original's loss: 0.5 * sum of squares over the whole batch."""
    return 0.5 * ops.sum(ops.square(predictions - targets))
