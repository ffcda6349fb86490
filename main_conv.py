"""Train the conv baseline: 1 true frame in, 4 predicted, as in the 2016 original."""

import sys

from model import runtime

runtime.start()  # first: Keras and its backend, quietly

from model.config import MODELS  # noqa: E402
from model.training import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(MODELS["conv"].defaults, __doc__))
