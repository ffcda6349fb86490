"""Rollout videos: ground truth and prediction side by side, H.264 in an MP4."""

import shutil

import av
import numpy as np

from model.checkpoint import atomic_path, writing

SCALE = 6  # 32 px frames become 192 px panels (the original showed 180 px)
GAP = 8  # pixels of white between the two panels
FONT = 16  # caption text size in pixels: readable at a glance
LINE = 22  # pixels per caption line
BAND = 2 * LINE  # pixels of white above the panels for the captions (even, for H.264)
FPS = 4


def side_by_side(truth, prediction, captions=None, title=""):
    """`(T, 32, 32, 3)` each in [0, 1] -> `(T, 192, 392, 3)` uint8, truth left. Converted to
    uint8 before scaling up, so the large frames never exist as floats. With `captions`, one
    `(left, right)` pair of strings per frame, a band above the panels holds `title` on its
    first line and each frame's pair over its panels on the second: `(T, BAND + 192, 392, 3)`."""
    small = [(np.clip(p, 0.0, 1.0) * 255 + 0.5).astype(np.uint8) for p in (truth, prediction)]
    panels = [np.repeat(np.repeat(p, SCALE, axis=1), SCALE, axis=2) for p in small]
    gap = np.full((*panels[0].shape[:2], GAP, 3), 255, np.uint8)
    frames = np.concatenate([panels[0], gap, panels[1]], axis=2)
    if captions is None:
        return frames
    bands = {pair: _band(title, *pair, frames.shape[2]) for pair in set(captions)}
    return np.concatenate([np.stack([bands[pair] for pair in captions]), frames], axis=1)


def _band(title, left, right, width):
    """A `(BAND, width, 3)` white band: `title` on the first line, then `left` over the left
    panel and `right` over the right one."""
    from PIL import Image, ImageDraw, ImageFont

    band = Image.new("RGB", (width, BAND), "white")
    draw = ImageDraw.Draw(band)
    font = ImageFont.load_default(size=FONT)
    for text, x, y in ((title, 4, 0), (left, 4, LINE), (right, (width + GAP) // 2 + 4, LINE)):
        draw.text((x, y + LINE // 2), text, fill="black", font=font, anchor="lm")
    return np.asarray(band)


def write_mp4(path, frames, fps=FPS):
    """Encode `(T, H, W, 3)` uint8 frames (H, W even) as H.264/yuv420p at `path`, atomically.
    Raises `CannotWrite`."""
    with writing(path), atomic_path(path) as tmp, av.open(tmp, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def copy_atomic(src, dst):
    """Copy `src` over `dst` so that `dst` is never half-written. Raises `CannotWrite`."""
    with writing(dst), atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def probe(path):
    """`(codec, pixel format, frame count, width, height)` of the first video stream of `path`."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        ctx = stream.codec_context
        return ctx.name, ctx.pix_fmt, count, ctx.width, ctx.height
