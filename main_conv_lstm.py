"""Train the ConvLSTM predictor: 5 true frames in, 4 predicted (scored), as in the 2016 original."""

import sys

from model import runtime

runtime.start()  # first: Keras and its backend, quietly

from model.config import MODELS  # noqa: E402
from model.training import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(MODELS["conv_lstm"].defaults, __doc__))
