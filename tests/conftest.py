import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from model import runtime  # noqa: E402

runtime.setup()
