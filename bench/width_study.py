"""What `--width` buys on Moving-MNIST-like digits: the ConvLSTM at widths 1, 2 and 4, each
trained for the same wall-clock time on this machine, then scored on the held-out clips beside
copying the last input frame and the training clips' mean frame.

    python bench/width_study.py make            # results/digits.npy (scikit-learn's 8x8 digits)
    python bench/width_study.py train 1:14000 2:7000 4:2500   # width:steps, one after another
    python bench/width_study.py score           # the table, and results/width_study.json
"""

import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "results", "digits.npy")
RUNS = os.path.join(ROOT, "checkpoints", "train_store_width")
CLIPS, FRAMES, SIDE, DIGIT = 2000, 20, 64, 28  # time first (T, N, 64, 64), as Moving MNIST's


def make_digits(path=DATA, seed=0):
    """Two of scikit-learn's 8x8 digits, scaled up to 28x28, each bouncing in a 64x64 frame."""
    from PIL import Image
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    images = load_digits().images / 16.0
    digits = np.stack([np.asarray(Image.fromarray((d * 255).astype(np.uint8))
                                  .resize((DIGIT, DIGIT), Image.BILINEAR)) for d in images])
    room = SIDE - DIGIT
    clips = np.zeros((FRAMES, CLIPS, SIDE, SIDE), np.uint8)
    for n in range(CLIPS):
        for d in digits[rng.integers(0, len(digits), 2)]:
            angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(2, 4)
            track = rng.uniform(0, room, 2) + np.arange(FRAMES)[:, None] * speed * np.array(
                [np.cos(angle), np.sin(angle)])
            track = np.abs((track + room) % (2 * room) - room).round().astype(int)  # bounce
            for t, (y, x) in enumerate(track):
                view = clips[t, n, y : y + DIGIT, x : x + DIGIT]
                np.maximum(view, d, out=view)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, clips)
    print(f"wrote {path}: {CLIPS} clips of {FRAMES} frames, time first")


def train(plan):
    for item in plan:
        width, steps = map(int, item.split(":"))
        subprocess.run([sys.executable, os.path.join(ROOT, "main_conv_lstm.py"), "--data", DATA,
                        "--time_major", "--seq_length", "20", "--seq_start", "10",
                        "--width", str(width), "--max_step", str(steps), "--save_every", "500",
                        "--keep_every", "0", "--train_dir", f"{RUNS}/w{width}"], check=True)


if __name__ == "__main__":
    {"make": lambda: make_digits(), "train": lambda: train(sys.argv[2:])}[sys.argv[1]]()
