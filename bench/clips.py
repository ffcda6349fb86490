"""Measurements on generated clips, for the README: the squares example of "Your own videos" and
what `--width` buys on Moving-MNIST-like digits.

    python bench/clips.py squares                 # results/squares.npy
    python bench/clips.py digits                  # results/digits.npy (needs scikit-learn)
    python bench/clips.py width 1:20000 2:14000 4:6500   # train width:steps, one after another
    python bench/clips.py score 1 2 4             # each width's errors, speed and memory

Each width's steps are what 20 minutes of this machine, idle, gives it (`score` prints ms/step).
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from model import runtime  # noqa: E402

runtime.start()  # first: Keras and its backend, quietly

import numpy as np  # noqa: E402
from benchmark import bench_memory  # noqa: E402
from PIL import Image  # noqa: E402

from model import runs  # noqa: E402
from model.config import TrainConfig  # noqa: E402
from model.data import open_source  # noqa: E402
from model.evaluation import metrics  # noqa: E402

RESULTS = os.path.join(ROOT, "results")
RUNS = os.path.join(ROOT, "checkpoints", "train_store_width")
FRAMES, SIDE = 20, 64  # clips of 20 frames of 64x64, stored time first as Moving MNIST's
SCORED = (1, 5, 10)  # predicted frames the width table shows
FLAGS = ["--time_major", "--seq_length", "20", "--seq_start", "10"]


def squares(n=2000, size=16, seed=0):
    """A `size`-pixel square bouncing in each 64x64 clip, at 2-3 pixels a frame."""
    rng = np.random.default_rng(seed)
    room = SIDE - size
    start, speed = rng.integers(0, 2 * room, (n, 2)), rng.choice([-3, -2, 2, 3], (n, 2))
    corner = room - np.abs((start[:, None] + speed[:, None] * np.arange(FRAMES)[:, None])
                           % (2 * room) - room)  # (N, T, 2): bounce off the walls
    pixels = np.arange(SIDE)
    inside = (pixels >= corner[..., None]) & (pixels < corner[..., None] + size)
    return (inside[:, :, 0, :, None] & inside[:, :, 1, None, :]).astype(np.uint8) * 255


def digits(n=2000, digit=28, seed=0):
    """Two of scikit-learn's 8x8 digits, scaled up to 28x28, bouncing in each 64x64 clip."""
    from sklearn.datasets import load_digits  # only here: not among the requirements

    rng = np.random.default_rng(seed)
    images = [np.asarray(Image.fromarray(np.uint8(d * 255 / 16)).resize((digit, digit),
                                                                       Image.BILINEAR))
              for d in load_digits().images]
    room, clips = SIDE - digit, np.zeros((n, FRAMES, SIDE, SIDE), np.uint8)
    for clip in clips:
        for d in rng.integers(0, len(images), 2):
            angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(2, 4)
            track = rng.uniform(0, room, 2) + np.arange(FRAMES)[:, None] * speed * np.array(
                [np.cos(angle), np.sin(angle)])
            track = np.abs((track + room) % (2 * room) - room).round().astype(int)  # bounce
            for frame, (y, x) in zip(clip, track):
                np.maximum(frame[y : y + digit, x : x + digit], images[d],
                           out=frame[y : y + digit, x : x + digit])
    return clips


def save(name, clips):
    path = os.path.join(RESULTS, f"{name}.npy")
    os.makedirs(RESULTS, exist_ok=True)
    np.save(path, clips.swapaxes(0, 1))  # time first, as Moving MNIST's file
    print(f"wrote {path}: {len(clips)} clips of {FRAMES} frames, time first")


def train(plan):
    for item in plan:
        width, steps = item.split(":")
        subprocess.run([sys.executable, os.path.join(ROOT, "main_conv_lstm.py"), "--data",
                        os.path.join(RESULTS, "digits.npy"), *FLAGS, "--width", width,
                        "--max_step", steps, "--save_every", "500", "--keep_every", "0",
                        "--train_dir", os.path.join(RUNS, f"w{width}")], check=True)


def score(widths):
    """Each width's error at `SCORED` predicted frames on the held-out clips, beside both
    baselines; its ms per step and peak memory over 300 steps of a fresh run."""
    report = {}
    for width in widths:
        run = runs.load_run("conv_lstm", os.path.join(RUNS, f"w{width}"))
        config = TrainConfig(data=os.path.join(RESULTS, "digits.npy"), seq_length=20)
        source = open_source(config, run.data["layout"], say=lambda _: None)
        clips = next(source.held_out(source.held_out_count, FRAMES, seed=0))
        context, truth = run.model.context, clips[:, 10:]
        guesses = {"model": np.asarray(run.model.rollout(clips[:, :context], FRAMES - context)),
                   "copy_last": np.repeat(clips[:, context - 1 : context], FRAMES - context, 1),
                   "mean_frame": np.broadcast_to(source.mean_frame(), truth.shape)}
        errors = {k: np.asarray(metrics(v, truth, quality=False)["sse"]).mean(0)
                  for k, v in guesses.items()}
        printed = []
        memory = bench_memory("main_conv_lstm.py", 300, "--data", config.data, *FLAGS,
                              "--width", str(width), "--log_every", "100", output=printed)
        ms = float(printed[0].split(" ms/step")[-2].split()[-1])  # the last 100 steps' median
        report[width] = {"step": run.step, "ms_per_step": ms, "peak_rss_mb": memory,
                         **{k: {f: float(v[f - 1]) for f in SCORED} for k, v in errors.items()}}
        print(width, json.dumps(report[width]))
    with open(os.path.join(RESULTS, "width_study.json"), "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command in ("squares", "digits"):
        save(command, {"squares": squares, "digits": digits}[command]())
    elif command == "width":
        train(args)
    else:
        score([int(w) for w in args])
