"""The compiled training step: the one place that knows which Keras backend runs it."""

import contextlib

import keras
import numpy as np

from model import kernel_grads


def make_train_step(model, optimizer, apply=True, chains=None, batched_kernel_grads=None):
    """Return `(step, sync)`: `step(clip) -> loss` trains `model` (with a
    `training_loss(clip)` method) on one clip `(B, T, 32, 32, 3)`; `sync()` writes the latest
    weights and optimiser state back into the Keras objects (a no-op where the backend updates
    them in place). With `apply=False` the step computes the gradients but does not apply them
    (to time the optimiser apart).

    `chains` splits the batch into that many parts whose losses are computed side by side and
    summed: the same loss and gradients where `training_loss` sums over the batch, as ours does
    (dropout draws its masks per part). `None` picks `default_chains()`.

    `batched_kernel_grads` computes each convolution's kernel and bias gradients in one op per
    layer and chain over all the layer's calls in the step (`model.kernel_grads`): the same
    gradients, in fewer, larger ops. TensorFlow only; `None` means on for TensorFlow, off for
    JAX."""
    optimizer.build(model.trainable_variables)
    chains = default_chains() if chains is None else int(chains)
    if chains < 1:
        raise ValueError(f"chains must be at least 1, got {chains}")
    backend = keras.backend.backend()
    if batched_kernel_grads is None:
        batched_kernel_grads = backend == "tensorflow"
    if batched_kernel_grads and backend != "tensorflow":
        raise ValueError("batched_kernel_grads needs the TensorFlow backend")
    if backend == "tensorflow":
        step = _tensorflow_step(model, optimizer, apply, chains, batched_kernel_grads)
        return step, lambda: None
    if backend == "jax":
        return _jax_step(model, optimizer, apply, chains)
    raise RuntimeError(f"unsupported Keras backend {backend!r}; use tensorflow or jax")


def default_chains():
    """2 on TensorFlow without a GPU, else 1.

    A step of our small networks is a long chain of small dependent ops, each run on one
    thread (`runtime.setup`), so a single chain leaves the second core of a 2-core CPU mostly
    idle. Two half-batch chains are independent until their gradients are summed, and
    TensorFlow's inter-op threads run them side by side (`bench/benchmark.py` compares one chain
    in the same run; 2 beat 1 and 4). JAX's CPU runtime runs one op at a time, and a GPU has
    its own parallelism."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return 1 if tf.config.list_logical_devices("GPU") else 2


def chained_loss(model, clip, chains):
    """`model.training_loss(clip)` as the sum over `chains` consecutive parts of the batch."""
    batch = clip.shape[0]
    if chains == 1 or batch is None or batch < 2:
        return model.training_loss(clip)
    chains = min(chains, batch)
    cuts = [batch * k // chains for k in range(1, chains)]
    losses = []
    for chain, part in enumerate(keras.ops.split(clip, cuts, axis=0)):
        with kernel_grads.group(chain):  # each chain's kernel gradients apart (kernel_grads)
            losses.append(model.training_loss(part))
    return sum(losses)


def _tensorflow_step(model, optimizer, apply, chains, batched_kernel_grads):
    import tensorflow as tf

    @tf.function
    def step(clip):
        variables = model.trainable_variables
        recording = kernel_grads.recording() if batched_kernel_grads else contextlib.nullcontext()
        with recording as calls, tf.GradientTape() as tape:
            loss = chained_loss(model, clip, chains)
        grads = tape.gradient(loss, variables)
        if calls is not None:
            grads = calls.add_kernel_gradients(grads, variables)
        if not apply:
            return loss, grads  # returned, so the graph computes them
        optimizer.apply(grads, variables)
        return loss

    return step if apply else lambda clip: step(clip)[0]


def _jax_step(model, optimizer, apply, chains):
    import jax

    def loss_fn(trainable, non_trainable, clip):
        mapping = [*zip(model.trainable_variables, trainable),
                   *zip(model.non_trainable_variables, non_trainable)]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            loss = chained_loss(model, clip, chains)
        non_trainable = [scope.get_current_value(v) for v in model.non_trainable_variables]
        return loss, non_trainable

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    @jax.jit
    def pure_step(state, clip):
        trainable, non_trainable, opt_vars = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, clip)
        if not apply:
            return (loss, grads), state  # returned, so XLA computes them
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return loss, (trainable, non_trainable, opt_vars)

    def values(variables):
        return [v.value for v in variables]

    state = [
        (
            values(model.trainable_variables),
            values(model.non_trainable_variables),
            values(optimizer.variables),
        )
    ]

    def step(clip):
        loss, state[0] = pure_step(state[0], clip)
        return loss if apply else loss[0]

    def sync():
        groups = (model.trainable_variables, model.non_trainable_variables, optimizer.variables)
        for variables, new_values in zip(groups, state[0]):
            for variable, value in zip(variables, new_values):
                variable.assign(value)

    return step, sync


def to_tensor(array):
    """`array` as a backend tensor. On TensorFlow a C-contiguous array whose data starts on a
    64-byte boundary (as `bouncing_balls.generate`'s do) is taken over without a copy, through
    DLPack: do not change it afterwards. Others are copied (`keras.ops.convert_to_tensor`).

    Copying a training clip into a new TensorFlow tensor in the data thread slowed the training
    step beside it by 0.3-0.9 ms, far more than the copy itself (`bench/benchmark.py` compares).
    64 bytes is TensorFlow's tensor alignment: it aborts on a less aligned DLPack buffer."""
    if (keras.backend.backend() == "tensorflow" and isinstance(array, np.ndarray)
            and array.flags.c_contiguous and array.flags.writeable and array.size
            and array.ctypes.data % 64 == 0):
        import tensorflow as tf

        return tf.experimental.dlpack.from_dlpack(array.__dlpack__())
    return keras.ops.convert_to_tensor(array)


@contextlib.contextmanager
def dispatching_ahead():
    """Within it, a TensorFlow step call returns before the step has run (TensorFlow's
    asynchronous eager execution, for this thread), so the caller can queue the next step while
    this one runs; ops still run in the order they were called, and reading a result (`float`)
    waits for it. Leaving waits for everything queued. An op that fails while queued fails every
    later op of the thread (TensorFlow's asynchronous executor; its own recovery,
    `tf.experimental.async_clear_error`, crashed TensorFlow 2.21 when tried), so let such an error
    end the run, as `training.train` does. JAX dispatches asynchronously anyway: a no-op there.
    Use it with `losses_of`."""
    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf

    was_synchronous = tf.config.experimental.get_synchronous_execution()
    tf.config.experimental.set_synchronous_execution(False)
    try:
        yield
    finally:
        tf.config.experimental.set_synchronous_execution(was_synchronous)  # waits for the queue


def losses_of(step, clips, count):
    """Run `step` on the next `count` of `clips`; yield each step's loss as a float, in order.

    Step `t + 1` is called before step `t`'s loss is read. Inside `dispatching_ahead()` (or on
    JAX) that keeps one step queued behind the running one, so the Python side of a step (taking
    its clip, the call itself, the caller's bookkeeping) overlaps the step before it instead of
    leaving the cores idle between steps: 0.5-1 ms of an 8-17 ms step on a 2-core CPU
    (`bench/benchmark.py` compares). Once the generator is exhausted, every step has run."""
    pending = None
    for _ in range(count):
        loss = step(next(clips))
        if pending is not None:
            yield float(pending)
        pending = loss
    if pending is not None:
        yield float(pending)


def compiled(fn):
    """`fn` compiled by the backend: a `tf.function` on TensorFlow, `jax.jit` on JAX. For
    functions that only read the model's variables; on JAX their values are baked in when it is
    first traced, so use it only while the weights stay fixed (as the benchmark does)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    import jax

    return jax.jit(fn)


def compiled_rollout(model):
    """`model.rollout` compiled where the backend allows it cheaply (a graph on TensorFlow);
    on JAX the eager rollout is used, as its weights live outside a pure function."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(model.rollout, reduce_retracing=True)
    return model.rollout


class Adam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` with, on TensorFlow, each variable's update as one fused op.

    Keras builds Adam's update from about 27 small ops per variable, about 430 of the ~1,000
    ops of a conv training step; TensorFlow's `ResourceApplyAdam` kernel computes the same
    update (`m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`,
    `w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)`) in one. The step's scalars are
    computed once per step, not once per variable. The variables, and so the checkpoints, are
    Keras's; other backends and AMSGrad use Keras's own update."""

    def apply(self, grads, trainable_variables=None):
        self._step_scalars = None  # computed by this step's first update_step
        return super().apply(grads, trainable_variables)

    def update_step(self, gradient, variable, learning_rate):
        if keras.backend.backend() != "tensorflow" or self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf

        dtype = variable.dtype
        if getattr(self, "_step_scalars", None) is None:
            step = tf.cast(self.iterations + 1, dtype)
            beta_1, beta_2 = tf.constant(self.beta_1, dtype), tf.constant(self.beta_2, dtype)
            self._step_scalars = dict(
                beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
                lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
                epsilon=tf.constant(self.epsilon, dtype),
            )
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]), grad=tf.cast(gradient, dtype),
            **self._step_scalars,
        )


def _handle(variable):
    """The TensorFlow resource handle of a Keras or TensorFlow variable."""
    import tensorflow as tf

    return variable.handle if isinstance(variable, tf.Variable) else variable.value.handle
