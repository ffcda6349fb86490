"""Train the conv baseline: 1 true frame in, 4 predicted, as in the 2016 original."""

import sys

from model.training import CONV, main

if __name__ == "__main__":
    sys.exit(main(CONV, __doc__))
