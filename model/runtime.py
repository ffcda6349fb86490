"""Process start-up for our scripts: a supported Keras backend, a quiet TensorFlow, and the
thread setting we measured."""

import contextlib
import importlib.util
import os
import sys

BACKENDS = ("tensorflow", "jax")  # the Keras backends `train_step` runs on


class Unavailable(Exception):
    """KERAS_BACKEND names a backend we do not run on, or one not installed: one line."""


def check_backend():
    """Raise `Unavailable` unless KERAS_BACKEND (default tensorflow) is one of `BACKENDS` and
    installed; imports nothing."""
    backend = os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    how = ("KERAS_BACKEND=tensorflow (the default; pip install -r requirements.txt) or "
           "KERAS_BACKEND=jax (pip install -r requirements-dev.txt)")
    if backend not in BACKENDS:
        raise Unavailable(f"KERAS_BACKEND={backend!r} is not a backend this code runs on; "
                          f"use {how}")
    if importlib.util.find_spec(backend) is None:
        raise Unavailable(f"KERAS_BACKEND={backend!r} but {backend} is not installed; use {how}")


@contextlib.contextmanager
def _stderr_silenced():
    """Send file descriptor 2 to /dev/null: TensorFlow's C++ start-up lines bypass Python."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def _hidden(names):
    """Make `import name` fail, for those of `names` not imported yet, until the block ends."""
    hidden = [name for name in names if name not in sys.modules]
    sys.modules.update(dict.fromkeys(hidden))
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


# TensorFlow imports these at start-up only because they are installed (JAX by its lite
# converter, matplotlib by Keras's plotting helpers): hidden while it loads, a training run's
# peak memory is about 130 MB lower (`bench/benchmark.py`'s memory figure).
_UNUSED_BY_TENSORFLOW = ("jax", "matplotlib")


def setup():
    """Import Keras and its backend quietly, before any model is built (once: later calls
    return at once). Raises `Unavailable`.

    On TensorFlow on a CPU of at most 2 cores, each op runs on one thread and independent ops
    run side by side (`train_step.default_chains`): for these 8x8..32x32 convolutions that is
    faster than splitting each op over both cores."""
    if "keras" in sys.modules:
        return sys.modules["keras"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    check_backend()
    unused = _UNUSED_BY_TENSORFLOW if os.environ["KERAS_BACKEND"] == "tensorflow" else ()
    with _stderr_silenced(), _hidden(unused):
        import keras

        from model.train_step import small_cpu

        if small_cpu():
            import tensorflow as tf

            with contextlib.suppress(RuntimeError):  # already initialised: keep its setting
                tf.config.threading.set_intra_op_parallelism_threads(1)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.get_logger().setLevel("ERROR")
            # Grappler's rewrites of a graph slow an evaluation's unrolled rollouts and SSIM
            # (create_graphs.py took twice as long) and gain a training step nothing.
            tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
            tf.constant(0)  # start the runtime now, while its log lines go nowhere
    return keras


def set_random_seed(seed):
    """`keras.utils.set_random_seed(seed)`. On other backends Keras would also load and seed
    TensorFlow where it is installed (about 450 MB, and its start-up lines): hidden then."""
    import keras

    with _hidden(() if keras.backend.backend() == "tensorflow" else ("tensorflow",)):
        keras.utils.set_random_seed(seed)
