"""A training run's rollout videos: ground truth and prediction side by side, H.264 in MP4."""

import os
import re
import shutil

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from model.files import atomic_path, writing

VIDEO_NAME = re.compile(r"^(step_\d{7,}|latest)\.mp4$")  # in a run's videos/
PANEL = 192  # pixels a side of each panel at most: 32 px frames 6 times (the original: 180)
GAP = 8  # pixels of white between the two panels
FONT = 16  # caption text size in pixels: readable at a glance
LINE = 22  # pixels per caption line
BAND = 2 * LINE  # pixels of white above the panels for the captions (even, for H.264)
FPS = 4


def path(train_dir, step):
    return os.path.join(train_dir, "videos", f"step_{step:07d}.mp4")


def write_run_video(config, step, truth, rollout):
    """Write `videos/step_NNNNNNN.mp4` and `videos/latest.mp4` of the run `config`: the clip
    `truth` `(1, T, H, W, C)` left, and right its first `config.seq_start` frames followed by
    `rollout(context, horizon)`'s predictions, each frame captioned. Raises `CannotWrite`."""
    start, frames = config.seq_start, truth.shape[1]
    predicted = np.asarray(rollout(truth[:, :start], frames - start))
    shown = np.concatenate([truth[:, :start], predicted], axis=1)[0]
    captions = [(f"truth, frame {t}", f"{'input' if t < start else 'prediction'}, frame {t}")
                for t in range(frames)]
    title = f"{config.model} after {step:,} training steps"
    target = path(config.train_dir, step)
    folder = os.path.dirname(target)
    with writing(folder):
        os.makedirs(folder, exist_ok=True)
    write_mp4(target, side_by_side(truth[0], shown, captions, title))
    latest = os.path.join(folder, "latest.mp4")
    with writing(latest), atomic_path(latest) as tmp:  # never half-written
        shutil.copyfile(target, tmp)


def side_by_side(truth, prediction, captions=None, title=""):
    """`(T, H, W, C)` each in [0, 1] (C 1 or 3) -> `(T, s H, 2 s W + GAP, 3)` uint8, truth
    left, each frame scaled up `s = PANEL // H` times (`to_pixels`). With `captions`, one
    `(left, right)` pair of strings per frame, a band above the panels holds `title` on its
    first line and each frame's pair over its panels on the second: `(T, BAND + s H, ...)`."""
    scale = max(1, PANEL // truth.shape[1])
    panels = [to_pixels(p, scale) for p in (truth, prediction)]
    gap = np.full((*panels[0].shape[:2], GAP, 3), 255, np.uint8)
    frames = np.concatenate([panels[0], gap, panels[1]], axis=2)
    if captions is None:
        return frames
    bands = {pair: _band(title, *pair, frames.shape[2]) for pair in set(captions)}
    return np.concatenate([np.stack([bands[pair] for pair in captions]), frames], axis=1)


def to_pixels(frames, scale=1):
    """Frames `(..., H, W, C)` in [0, 1], C 1 or 3, as uint8 RGB `(..., scale H, scale W, 3)`,
    converted before scaling up, so that large frames never exist as floats."""
    pixels = (np.clip(np.nan_to_num(frames), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)  # NaN: 0
    pixels = np.repeat(pixels, 3 // pixels.shape[-1], axis=-1)  # gray as RGB
    return pixels.repeat(scale, axis=-3).repeat(scale, axis=-2)


def _band(title, left, right, width):
    """A white `(BAND, width, 3)` band: `title`, then `left` and `right` over their panels."""
    band = Image.new("RGB", (width, BAND), "white")
    draw = ImageDraw.Draw(band)
    font = ImageFont.load_default(size=FONT)
    for text, x, y in ((title, 4, 0), (left, 4, LINE), (right, (width + GAP) // 2 + 4, LINE)):
        draw.text((x, y + LINE // 2), text, fill="black", font=font, anchor="lm")
    return np.asarray(band)


def write_mp4(path, frames):
    """Encode `(T, H, W, 3)` uint8 frames (H, W even) as H.264/yuv420p at `path`, atomically.
    Raises `CannotWrite`."""
    with writing(path), atomic_path(path) as tmp, av.open(tmp, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
