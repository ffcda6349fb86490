"""Train the ConvLSTM predictor: 5 true frames in, 4 predicted (scored), as in the 2016 original."""

import sys

from model.training import CONV_LSTM, main

if __name__ == "__main__":
    sys.exit(main(CONV_LSTM, __doc__))
