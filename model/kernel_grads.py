"""One kernel-gradient op per layer instead of one per call: a TensorFlow training-step speed-up.

A convolution called N times in a training step (once per frame, per chain) gets N
kernel-gradient convolutions in the backward pass. Each is a small op whose fixed cost, on a
CPU, exceeds its arithmetic. Only their sum is needed, and that sum is one kernel-gradient
convolution over the N calls' inputs and output gradients stacked along the batch axis. Layers
that compute through `apply` get that one op per layer while a training step is recorded:

    with kernel_grads.recording() as calls, tf.GradientTape() as tape:
        loss = ...
    grads = calls.add_kernel_gradients(tape.gradient(loss, variables), variables)

Inside `recording()`, `apply(kernel, inputs, fn)` computes `fn(inputs, kernel)` with the kernel
held constant and, in the backward pass, keeps the call's inputs and output gradient;
`add_kernel_gradients` adds each kernel's gradient, computed from all its calls at once. It is
the same gradient, summed in a different order. Elsewhere (on other backends, outside
`recording()`, inside loops TensorFlow traces as `while` loops such as `keras.layers.RNN`'s, for
kernels that are not trainable variables) `apply(kernel, inputs, fn)` is `fn(inputs, kernel)`.

Calls made inside different `group()`s get separate kernel-gradient ops: our training step puts
each of its chains (side-by-side parts of the batch) in its own group, so that a chain's kernel
gradients can start as soon as its own backward pass ends, while the other chain's goes on.

`bench/benchmark.py` times the training step both ways in the same run.
"""

import contextlib

import keras

_recorder = None  # the active `Calls`, set while a training step is traced


def apply(kernel, inputs, fn):
    """`fn(inputs, kernel)`, whose kernel gradient is batched with the other calls of the same
    `fn` while a `recording()` is active. `kernel` is the layer's kernel variable; `fn` must be
    linear in the kernel (a convolution or matrix product) and the same for all its calls."""
    recorder = _recorder
    if recorder is None or not recorder.accepts(kernel):
        return fn(inputs, kernel)
    return recorder.call(kernel, inputs, fn)


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
    with. TensorFlow only; does not nest."""
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
    """The recorded calls of `apply`: per kernel, input shape and group, `fn` and the
    `(inputs, output_gradient)` pairs that the backward pass fills in."""

    def __init__(self):
        import tensorflow as tf

        self._tf = tf
        self._graph = tf.compat.v1.get_default_graph()
        self.group = None
        self.calls = {}  # (id(kernel), input shape, group) -> (kernel, fn, [(inputs, output_grad)])

    def accepts(self, kernel):
        """Trainable variables used in the graph being recorded (not in a loop body's graph,
        whose tensors the step's graph cannot use)."""
        return (
            isinstance(kernel, keras.Variable)
            and kernel.trainable
            and self._tf.compat.v1.get_default_graph() is self._graph
        )

    def call(self, kernel, inputs, fn):
        tf = self._tf
        read = tf.convert_to_tensor(kernel)  # a read the tape watches
        outputs = fn(inputs, tf.stop_gradient(read))
        key = (id(kernel), tuple(inputs.shape[1:]), self.group)
        pairs = self.calls.setdefault(key, (kernel, fn, []))[2]

        @tf.custom_gradient
        def keep(outputs, read):
            # `read` ties the call to the kernel, so the tape asks for this gradient even where
            # `inputs` carries none (the first layer on true frames).
            def grad(output_gradient):
                pairs.append((inputs, output_gradient))
                return output_gradient, None

            return tf.identity(outputs), grad

        return keep(outputs, read)

    def add_kernel_gradients(self, grads, variables):
        """`grads` of `variables` with each recorded kernel's gradient added: one gradient op
        per kernel and group over all its calls. Call it after the tape's gradient."""
        tf = self._tf
        extra = {}
        for kernel, fn, pairs in self.calls.values():
            if not pairs:  # no call's output reached the loss
                continue
            inputs = tf.concat([x for x, _ in pairs], axis=0)
            output_gradients = tf.concat([g for _, g in pairs], axis=0)
            read = tf.convert_to_tensor(kernel)
            with tf.GradientTape() as tape:
                tape.watch(read)
                outputs = fn(inputs, read)  # unused in a tf.function, which prunes it
            grad = tape.gradient(outputs, read, output_gradients=output_gradients)
            extra[id(kernel)] = grad if id(kernel) not in extra else extra[id(kernel)] + grad
        completed = []
        for variable, grad in zip(variables, grads):
            more = extra.get(id(variable))
            if more is not None:
                grad = more if grad is None else grad + more
            completed.append(grad)
        return completed
