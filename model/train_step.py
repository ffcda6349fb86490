"""The compiled training step: the one place that knows which Keras backend runs it."""

import keras


def make_train_step(model, optimizer, apply=True):
    """Return `(step, sync)`: `step(clip) -> loss` trains `model` (with a
    `training_loss(clip)` method) on one clip `(B, T, 32, 32, 3)`; `sync()` writes the latest
    weights and optimiser state back into the Keras objects (a no-op where the backend updates
    them in place). With `apply=False` the step computes the gradients but does not apply them
    (to time the optimiser apart)."""
    optimizer.build(model.trainable_variables)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_step(model, optimizer, apply), lambda: None
    if backend == "jax":
        return _jax_step(model, optimizer, apply)
    raise RuntimeError(f"unsupported Keras backend {backend!r}; use tensorflow or jax")


def _tensorflow_step(model, optimizer, apply):
    import tensorflow as tf

    @tf.function
    def step(clip):
        with tf.GradientTape() as tape:
            loss = model.training_loss(clip)
        grads = tape.gradient(loss, model.trainable_variables)
        if not apply:
            return loss, grads  # returned, so the graph computes them
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return step if apply else lambda clip: step(clip)[0]


def _jax_step(model, optimizer, apply):
    import jax

    def loss_fn(trainable, non_trainable, clip):
        mapping = [*zip(model.trainable_variables, trainable),
                   *zip(model.non_trainable_variables, non_trainable)]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            loss = model.training_loss(clip)
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
