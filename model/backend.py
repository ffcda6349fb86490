"""What runs differently per Keras backend: the compiled training step, compiled rollouts and
queued dispatch. The one place that knows which backend runs the model."""

import contextlib

import keras

from model.runtime import small_cpu


def make_train_step(model, optimizer, chains=None):
    """Return `(step, sync)`: `step(clip) -> loss` trains `model` (with a
    `training_loss(clip)` method) on one clip `(B, T, H, W, C)`; `sync()` writes the latest
    weights and optimiser state back into the Keras objects (a no-op on TensorFlow, which
    updates them in place). `chains` is as in `chained_loss`; `None` picks `default_chains()`."""
    optimizer.build(model.trainable_variables)
    chains = default_chains() if chains is None else int(chains)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_step(model, optimizer, chains), lambda: None
    if backend == "jax":
        return _jax_step(model, optimizer, chains)
    raise RuntimeError(f"unsupported Keras backend {backend!r}; use tensorflow or jax")


def default_chains():
    """2 on a small CPU (`small_cpu`), else 1.

    A step of our small networks is a long chain of small dependent ops, each on one thread
    (`runtime.setup`), which leaves the second core mostly idle; two half-batch chains are
    independent until their gradients are summed, and TensorFlow runs them side by side
    (`bench/benchmark.py`: `compiled_step` vs `compiled_step_one_chain`)."""
    return 2 if small_cpu() else 1


def chained_loss(model, clip, chains):
    """`model.training_loss(clip)` as the sum over `chains` consecutive parts of the batch: the
    same loss and gradients, as the loss sums over the batch (dropout draws per part)."""
    batch = clip.shape[0]
    if chains == 1 or batch is None or batch < 2:
        return model.training_loss(clip)
    parts = keras.ops.split(clip, [batch * k // chains for k in range(1, chains)], axis=0)
    return sum(model.training_loss(part) for part in parts)


def _tensorflow_step(model, optimizer, chains):
    import tensorflow as tf

    @tf.function
    def step(clip):
        with tf.GradientTape() as tape:
            loss = chained_loss(model, clip, chains)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return step


def _jax_step(model, optimizer, chains):
    import jax

    def loss_fn(trainable, non_trainable, clip):
        mapping = [*zip(model.trainable_variables, trainable),
                   *zip(model.non_trainable_variables, non_trainable)]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            loss = chained_loss(model, clip, chains)
        return loss, [scope.get_current_value(v) for v in model.non_trainable_variables]

    @jax.jit
    def pure_step(state, clip):
        trainable, non_trainable, opt_vars = state
        (loss, non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable, non_trainable, clip)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return loss, (trainable, non_trainable, opt_vars)

    groups = (model.trainable_variables, model.non_trainable_variables, optimizer.variables)
    state = [tuple([v.value for v in variables] for variables in groups)]

    def step(clip):
        loss, state[0] = pure_step(state[0], clip)
        return loss

    def sync():
        for variables, values in zip(groups, state[0]):
            for variable, value in zip(variables, values):
                variable.assign(value)

    return step, sync


@contextlib.contextmanager
def dispatching_ahead():
    """Within it, a TensorFlow step call returns before the step has run (asynchronous eager
    execution, for this thread), so that with `losses_of` the Python side of one step overlaps
    the step before it (`bench/benchmark.py`: `end_to_end` vs `end_to_end_unqueued`). Leaving
    waits for everything queued. An op that fails while queued fails every later one: let such
    an error end the run. JAX dispatches asynchronously anyway: a no-op there."""
    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf

    was_synchronous = tf.config.experimental.get_synchronous_execution()
    tf.config.experimental.set_synchronous_execution(False)
    try:
        yield
    finally:
        tf.config.experimental.set_synchronous_execution(was_synchronous)


def losses_of(step, clips, count):
    """Run `step` on the next `count` of `clips`; yield each loss as a float, in order. Step
    `t + 1` is called before step `t`'s loss is read, so one step stays queued."""
    pending = None
    for _ in range(count):
        loss = step(next(clips))
        if pending is not None:
            yield float(pending)
        pending = loss
    if pending is not None:
        yield float(pending)


def compiled(fn):
    """`fn` (a function of the models' weights and tensors, such as `model.rollout`) compiled
    where the backend allows it cheaply: a graph on TensorFlow (`bench/benchmark.py`'s
    `rollout_compiled` vs `rollout_eager`); on JAX `fn` itself, as the weights live outside a
    pure function."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True)
    return fn
