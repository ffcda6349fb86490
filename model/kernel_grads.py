"""One kernel-gradient op per layer instead of one per call: a TensorFlow training-step speed-up.

A convolution called N times in a training step (once per frame, per chain) gets N
kernel-gradient convolutions in the backward pass. Each is a small op whose fixed cost, on a
CPU, exceeds its arithmetic. Only their sum is needed, and that sum is one kernel-gradient
convolution over the N calls' inputs and output gradients stacked along the batch axis. Layers
that compute through `apply` get that one op per layer while a training step is recorded:

    with kernel_grads.recording() as calls, tf.GradientTape() as tape:
        loss = ...
    grads = calls.add_kernel_gradients(tape.gradient(loss, variables), variables)

Inside `recording()`, `apply(kernel, inputs, fn, bias)` computes `fn(inputs, kernel) + bias`
with the kernel and bias held constant and, in the backward pass, keeps the call's inputs and
output gradient; `add_kernel_gradients` adds each kernel's gradient (and each bias's, the sum of
the output gradients), computed from all its calls at once. They are the same gradients, summed
in a different order. Elsewhere (on other backends, outside `recording()`, inside loops
TensorFlow traces as `while` loops such as `keras.layers.RNN`'s, for kernels that are not
trainable variables) `apply` is just `fn(inputs, kernel) + bias`.

Calls made inside different `group()`s get separate kernel-gradient ops: our training step puts
each of its chains (side-by-side parts of the batch) in its own group, so that a chain's kernel
gradients can start as soon as its own backward pass ends, while the other chain's goes on.

`bench/benchmark.py` times the training step both ways in the same run.
"""

import contextlib

import keras

_recorder = None  # the active `Calls`, set while a training step is traced


def apply(kernel, inputs, fn, bias=None):
    """`fn(inputs, kernel)`, plus `bias` along the last axis where given, whose kernel and bias
    gradients are batched with the other calls of the same `fn` while a `recording()` is active.
    `kernel` and `bias` are the layer's variables; `fn` must be linear in the kernel (a
    convolution or matrix product) and the same for all its calls."""
    recorder = _recorder
    if recorder is None or not recorder.accepts(kernel, bias):
        outputs = fn(inputs, kernel)
        return outputs if bias is None else outputs + bias
    return recorder.call(kernel, inputs, fn, bias)


@contextlib.contextmanager
def group(name):
    """Calls of `apply` inside it get their own kernel-gradient ops (see the module docstring);
    nothing happens outside a `recording()`."""
    recorder = _recorder
    if recorder is None:
        yield
        return
    outer, recorder.group = recorder.group, name
    try:
        yield
    finally:
        recorder.group = outer


@contextlib.contextmanager
def recording():
    """Record the calls of `apply` made inside it; yields the `Calls` to complete the gradients
    with. TensorFlow only; does not nest; one tape gradient per recording (each backward pass
    adds its output gradients to the record)."""
    global _recorder
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("kernel_grads.recording() needs the TensorFlow backend")
    if _recorder is not None:
        raise RuntimeError("kernel_grads.recording() is already active")
    _recorder = Calls()
    try:
        yield _recorder
    finally:
        _recorder = None


class Calls:
    """The recorded calls of `apply`: per kernel, input shape and group, the bias, `fn` and the
    `(inputs, output_gradient)` pairs that the backward pass fills in."""

    def __init__(self):
        import tensorflow as tf

        self._tf = tf
        self._graph = tf.compat.v1.get_default_graph()
        self.group = None
        # (id(kernel), input shape, group) -> (kernel, bias, fn, [(inputs, output_gradient)])
        self.calls = {}

    def accepts(self, kernel, bias=None):
        """Trainable variables used in the graph being recorded (not in a loop body's graph,
        whose tensors the step's graph cannot use)."""
        return (
            all(isinstance(v, keras.Variable) and v.trainable
                for v in (kernel, bias) if v is not None)
            and self._tf.compat.v1.get_default_graph() is self._graph
        )

    def call(self, kernel, inputs, fn, bias=None):
        tf = self._tf
        reads = [tf.convert_to_tensor(v) for v in (kernel, bias) if v is not None]  # watched
        outputs = fn(inputs, tf.stop_gradient(reads[0]))
        if bias is not None:
            outputs = outputs + tf.stop_gradient(reads[1])
        key = (id(kernel), tuple(inputs.shape[1:]), self.group)
        pairs = self.calls.setdefault(key, (kernel, bias, fn, []))[3]

        @tf.custom_gradient
        def keep(outputs, *reads):
            # The reads tie the call to the variables, so the tape asks for this gradient even
            # where `inputs` carries none (the first layer on true frames).
            def grad(output_gradient):
                pairs.append((inputs, output_gradient))
                return (output_gradient, *[None] * len(reads))

            return tf.identity(outputs), grad

        return keep(outputs, *reads)

    def add_kernel_gradients(self, grads, variables):
        """`grads` of `variables` with each recorded kernel's gradient added: one gradient op
        per kernel and group over all its calls. Call it after the tape's gradient."""
        tf = self._tf
        extra = {}

        def add(variable, grad):
            extra[id(variable)] = grad + extra[id(variable)] if id(variable) in extra else grad

        for kernel, bias, fn, pairs in self.calls.values():
            if not pairs:  # no call's output reached the loss
                continue
            inputs = tf.concat([x for x, _ in pairs], axis=0)
            output_gradients = tf.concat([g for _, g in pairs], axis=0)
            read = tf.convert_to_tensor(kernel)
            with tf.GradientTape() as tape:
                tape.watch(read)
                outputs = fn(inputs, read)  # unused in a tf.function, which prunes it
            add(kernel, tape.gradient(outputs, read, output_gradients=output_gradients))
            if bias is not None:  # summed over all but the channels (last) axis
                axes = list(range(len(output_gradients.shape) - 1))
                add(bias, tf.reduce_sum(output_gradients, axis=axes))
        completed = []
        for variable, grad in zip(variables, grads):
            more = extra.get(id(variable))
            if more is not None:
                grad = more if grad is None else grad + more
            completed.append(grad)
        return completed
