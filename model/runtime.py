"""Process start-up for our scripts: a supported Keras backend, a quiet TensorFlow, and the
thread setting we measured."""

import contextlib
import importlib.util
import os
import sys

BACKENDS = ("tensorflow", "jax")  # the Keras backends `backend` runs on
_started = []  # not empty once `setup` has run


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
# peak memory is lower (`bench/benchmark.py`'s memory figure).
_UNUSED_BY_TENSORFLOW = ("jax", "matplotlib")


def small_cpu():
    """Whether this is the machine our thread settings were measured on: TensorFlow on a CPU of
    at most 2 cores, no GPU."""
    import keras

    if keras.backend.backend() != "tensorflow" or (os.cpu_count() or 1) > 2:
        return False
    import tensorflow as tf

    return not tf.config.list_physical_devices("GPU")


def setup():
    """Import Keras and its backend quietly, once, first thing in every script. Raises
    `Unavailable`.

    On TensorFlow on a small CPU (`small_cpu`), each op runs on one thread and independent ops
    run side by side (`backend.default_chains`): for these small convolutions that is faster
    than splitting each op over both cores."""
    if _started:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    check_backend()
    unused = _UNUSED_BY_TENSORFLOW if os.environ["KERAS_BACKEND"] == "tensorflow" else ()
    with _stderr_silenced(), _hidden(unused):
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            if small_cpu():
                with contextlib.suppress(RuntimeError):  # already initialised: keep its setting
                    tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.get_logger().setLevel("ERROR")
            # Grappler's rewrites of a graph slow an evaluation's unrolled rollouts and SSIM
            # and gain a training step nothing (`bench/benchmark.py`).
            tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
            tf.constant(0)  # start the runtime now, while its log lines go nowhere
    _started.append(True)


def set_random_seed(seed):
    """`keras.utils.set_random_seed(seed)`. On other backends Keras would also load and seed
    TensorFlow where it is installed (its memory and start-up lines): hidden then."""
    import keras

    with _hidden(() if keras.backend.backend() == "tensorflow" else ("tensorflow",)):
        keras.utils.set_random_seed(seed)


def start():
    """`setup()` for an entry script, first thing: where the backend is unavailable, one line
    on stderr and exit code 2."""
    try:
        setup()
    except Unavailable as error:
        print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr)
        sys.exit(2)
