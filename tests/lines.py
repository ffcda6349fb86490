"""Reading what a script printed."""

PROGRESS = ("evaluating", "study", "conv_lstm:", "conv:")  # progress bars' lines in a log


def error_lines(stderr):
    """`stderr`'s lines but the progress bars' (which a log gets now and then) and blank ones."""
    lines = [line.strip() for line in stderr.replace("\r", "\n").splitlines()]
    return [line for line in lines if line and not line.startswith(PROGRESS)]
