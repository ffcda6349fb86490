"""Test-only helpers: reading what the scripts printed and wrote."""

import csv

import numpy as np

PROGRESS = ("evaluating", "study", "conv_lstm:", "conv:")  # progress bars' lines in a log


def error_lines(stderr):
    """`stderr`'s lines but the progress bars' (which a log gets now and then) and blank ones."""
    lines = [line.strip() for line in stderr.replace("\r", "\n").splitlines()]
    return [line for line in lines if line and not line.startswith(PROGRESS)]


def probe(path):
    """`(codec, pixel format, frame count, width, height)` of the first video stream of `path`."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        ctx = stream.codec_context
        return ctx.name, ctx.pix_fmt, count, ctx.width, ctx.height


def read_study_csv(path):
    """`(table, original)` as `reproduction_study.run_study` and `read_original` give them, from
    a CSV that `write_csv` wrote (to the 6 significant digits it keeps)."""
    from model.evaluation import MODELS

    table, original = {}, {name: [] for name in MODELS}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["source"] == "original_2016_pixels":
                curves = original.values()
            else:
                key = (int(row["train_step"]), int(row["seed"]), row["variant"], row["alignment"])
                curves = table.setdefault(key, ([], []))
            for curve, name in zip(curves, MODELS):
                curve.append(float(row[name]))
    return ({key: tuple(np.array(c) for c in curves) for key, curves in table.items()},
            {name: np.array(curve) for name, curve in original.items()})
