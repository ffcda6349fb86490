"""The predictors: a conv encoder, an optional ConvLSTM core, a deconv decoder.

Frames are floats in [0, 1]: the bouncing balls' `(32, 32, 3)`, or a user's `(H, W, C)`, H and
W multiples of 4 (two stride-2 layers each way), C output channels. Both predictors step one
frame at a time and feed their own predictions back after `context` true frames. The layer
table:

    encoder  conv 3x3 /2 -> 8   conv 3x3 /1 -> 8   conv 3x3 /2 -> 8   conv 1x1 -> 4     (8x8x4)
    core     ConvLSTM 3x3, 4 filters at 8x8 (ConvLSTM model only)
    decoder  deconv 1x1 -> 8   deconv 3x3 /2 -> 8   deconv 3x3 /1 -> 8   deconv 3x3 /2 -> 3 (C)

ELU after every layer but the last; every weight starts truncated-normal (stddev 0.01),
every bias at 0.01. That is the original's table, `width` 1; a `width` of W multiplies every
layer's channels but the frame's by W (8W, the code and the ConvLSTM 4W), for footage richer
than two balls.
"""

import keras
from keras import layers, ops

from model.conv_lstm_cell import ConvLSTMCell

CODE_CHANNELS = 4  # channels of the 8x8 code between encoder and decoder


def _conv_kwargs():
    return dict(
        padding="same",
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01),
        bias_initializer=keras.initializers.Constant(0.01),
    )


def encoder(width=1):
    """`(B, H, W, C) -> (B, H / 4, W / 4, 4 width)`: four convs, ELU after each."""
    spec = [(3, 2, 8 * width), (3, 1, 8 * width), (3, 2, 8 * width),
            (1, 1, CODE_CHANNELS * width)]  # kernel, stride, filters
    return keras.Sequential(
        [layers.Conv2D(f, k, strides=s, activation="elu", **_conv_kwargs()) for k, s, f in spec],
        name="encoder",
    )


def decoder(channels=3, width=1):
    """`(B, H / 4, W / 4, 4 width) -> (B, H, W, channels)`: four transposed convs, ELU after all
    but the last."""
    spec = [(1, 1, 8 * width, "elu"), (3, 2, 8 * width, "elu"), (3, 1, 8 * width, "elu"),
            (3, 2, channels, None)]
    return keras.Sequential(
        [layers.Conv2DTranspose(f, k, strides=s, activation=a, **_conv_kwargs())
         for k, s, f, a in spec],
        name="decoder",
    )


class Predictor(keras.Model):
    """Shared closed-loop rollout; subclasses define `core` and `initial_state`.

    Args:
        context: True frames fed in before the model feeds itself (`seq_start`).
        keep_prob: Keep probability of the dropout on true input frames.
        channels: Channels of a frame (3 for the bouncing balls).
        width: Every layer's channels times this (1: the original's table).
    """

    scored_offset = 0  # closed-loop predictions made but not scored by the loss

    def __init__(self, context, keep_prob=0.8, channels=3, width=1, **kwargs):
        super().__init__(**kwargs)
        self.context, self.keep_prob, self.width = context, keep_prob, width
        self.encoder = encoder(width)
        self.decoder = decoder(channels, width)
        self.dropout = layers.Dropout(1.0 - keep_prob)

    def call(self, clip, training=False):
        """`(B, T, H, W, C) -> (B, T - first_scored(), H, W, C)`: the frames the loss
        scores. The first `context` frames of `clip` go in (with dropout when training)."""
        frames = self.dropout(clip[:, : self.context], training=training)
        predictions = self.rollout(frames, clip.shape[1] - self.context)
        return predictions[:, self.scored_offset :]

    def training_loss(self, clip, training=True):
        """The original's loss on a clip `(B, T, H, W, C)`."""
        return l2_loss(self(clip, training=training), clip[:, self.first_scored() :])

    def first_scored(self):
        """Index of the first frame of a clip that `call`'s output predicts."""
        return self.context + self.scored_offset

    def rollout(self, frames, horizon):
        """Context `(B, K, H, W, C)` in, predictions of frames `K .. K + horizon - 1` out,
        `(B, horizon, H, W, C)`. The K context frames go through the encoder as one batch."""
        batch, context = ops.shape(frames)[0], frames.shape[1]
        codes = self.encoder(ops.reshape(frames, (-1, *frames.shape[2:])))
        codes = ops.reshape(codes, (batch, context, *codes.shape[1:]))  # (B, K, 8, 8, 4)
        state = self.initial_state(batch)
        for t in range(context):
            code, state = self.core(codes[:, t], state)
        predictions = [self.decoder(code)]
        for _ in range(horizon - 1):
            code, state = self.core(self.encoder(predictions[-1]), state)
            predictions.append(self.decoder(code))
        return ops.stack(predictions, axis=1)


class ConvLSTMPredictor(Predictor):
    """Encoder, a 3x3 ConvLSTM cell with 4 filters at 8x8, decoder ("5 frames in, 4 out").

    The cell's kernel starts as the 2016 code's did: TensorFlow 0.x's default, uniform in
    +-sqrt(3 / fan_in), its bias at 0."""

    scored_offset = 1  # the prediction of frame `context` is fed back but not scored

    def __init__(self, context=5, keep_prob=0.8, channels=3, width=1, **kwargs):
        super().__init__(context, keep_prob, channels, width, **kwargs)
        self.cell = ConvLSTMCell(
            CODE_CHANNELS * width,
            3,
            kernel_initializer=keras.initializers.VarianceScaling(1.0, "fan_in", "uniform"),
            name="conv_lstm_cell",
        )

    def build(self, clip_shape):
        self.encoder.build((None, *clip_shape[2:]))
        self.cell.build(self.encoder.compute_output_shape((None, *clip_shape[2:])))
        self.decoder.build((None, *self.cell.spatial_shape, self.cell.filters))

    def initial_state(self, batch_size):
        return self.cell.get_initial_state(batch_size)

    def core(self, code, state):
        """`(B, 8, 8, 4)` code and state in, the cell's output and new state out."""
        return self.cell(code, state)


class ConvPredictor(Predictor):
    """Encoder straight into decoder, no memory ("1 frame in, 4 out")."""

    def __init__(self, context=1, keep_prob=0.8, channels=3, width=1, **kwargs):
        super().__init__(context, keep_prob, channels, width, **kwargs)

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
