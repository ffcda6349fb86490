"""Test-only: reading back the CSV that `reproduction_study.py` writes."""

import csv

import numpy as np

from model.evaluation import MODELS


def read_csv(path):
    """`(table, original)` as `reproduction_study.run_study` and `read_original` give them, from
    a CSV that `write_csv` wrote (to the 6 significant digits it keeps)."""
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
