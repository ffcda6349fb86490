"""Process start-up for our scripts: a quiet TensorFlow and the thread settings we measured."""

import contextlib
import os
import sys


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


# Imported by TensorFlow at start-up only because they are installed (JAX by its lite converter,
# matplotlib by Keras's plotting helpers); our TensorFlow runs never use them. Hiding them while
# TensorFlow loads saves about 130 MB of resident memory (see `bench/benchmark.py`).
_UNUSED_BY_TENSORFLOW = ("jax", "matplotlib")


@contextlib.contextmanager
def _hidden(names):
    """Make `import name` fail, for those of `names` not imported yet, until the block ends."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def setup(intra_op_threads=1):
    """Import Keras, its backend and TensorFlow quietly, before any model is built.

    On TensorFlow, `intra_op_threads=1` runs each small op on one thread and lets
    independent ops run side by side (see `train_step.default_chains`); for these 8x8..32x32
    convolutions on a 2-core CPU it is faster than splitting ops (see `bench/benchmark.py`).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    unused = _UNUSED_BY_TENSORFLOW if os.environ["KERAS_BACKEND"] == "tensorflow" else ()
    with _stderr_silenced(), _hidden(unused):
        import keras

        if keras.backend.backend() == "tensorflow":  # a JAX run never loads TensorFlow
            import tensorflow as tf

            tf.get_logger().setLevel("ERROR")
            with contextlib.suppress(RuntimeError):  # already initialised: keep its setting
                tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
            tf.constant(0)  # start the runtime now, while its log lines go nowhere
        if keras.backend.backend() == "jax":
            import jax

            jax.numpy.zeros(())
    return keras


def set_random_seed(seed):
    """`keras.utils.set_random_seed(seed)`. On a backend other than TensorFlow, Keras would
    import TensorFlow (where installed) only to seed it: about 450 MB a JAX run never uses, so
    TensorFlow is hidden from it then (Keras remembers it as unavailable)."""
    import keras

    hidden = () if keras.backend.backend() == "tensorflow" else ("tensorflow",)
    with _hidden(hidden):
        keras.utils.set_random_seed(seed)
