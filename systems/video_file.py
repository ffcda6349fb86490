"""Frames of a video file, every one stretched to H x W: what clips are cut from.

A video is any file FFmpeg reads as one, whatever its extension, but for text (which FFmpeg
would draw as ANSI art) and still images. Every decoded frame is kept, in order, whatever the
frame rate (a 60 fps video gives twice the frames a second of a 30 fps one), and stretched to
H x W by area averaging: the aspect ratio is not kept. A file that FFmpeg reports damaged, by
an error raised or only logged (it conceals broken frames and skips broken data), is refused
whole; damage that FFmpeg does not notice cannot be found.
"""

import itertools

import av
import numpy as np

from systems.errors import DataError

NOT_VIDEO = ("tty", "_pipe")  # name endings of FFmpeg's readers of text and of still images


def read_frames(path, size, rgb, count=None):
    """The first `count` (default all) frames of the video at `path`, stretched to `size` (H, W):
    uint8 `(T, H, W)`, or `(T, H, W, 3)` with `rgb`; decoding stops there. Raises `DataError`
    for a file that is not a video or that FFmpeg reports damaged."""
    level = av.logging.get_level()
    av.logging.set_level(av.logging.PANIC)  # FFmpeg's errors are then counted, none printed
    try:
        errors = av.logging.get_last_error()[0]
        frames = _decode(path, size, "rgb24" if rgb else "gray", count)
        logged, last = av.logging.get_last_error()
    finally:
        av.logging.set_level(level)
    if logged > errors:
        raise DataError(f"{path}: damaged ({last[2].strip()})")
    return np.asarray(frames, np.uint8).reshape(len(frames), *size, *((3,) if rgb else ()))


def is_video(path):
    """Whether `path` is a file that `read_frames` reads as a video (damaged or not)."""
    try:
        _open(path)[0].close()
    except DataError:
        return False
    return True


def _decode(path, size, pixels, count):
    container, stream = _open(path)
    with container:
        try:
            return [frame.reformat(width=size[1], height=size[0], format=pixels,
                                   interpolation="AREA").to_ndarray()
                    for frame in itertools.islice(container.decode(stream), count)]
        except av.FFmpegError as error:
            raise DataError(f"{path}: damaged ({error.strerror or error})") from None


def _open(path):
    """`(container, its first video stream)`, its decoder set to stop at the first damage."""
    try:
        container = av.open(path, metadata_errors="replace")
    except (av.FFmpegError, OSError) as error:
        why = "cannot be read as a video" if isinstance(error, av.InvalidDataError) else None
        raise DataError(f"{path}: {why or error.strerror}") from None
    streams = [stream for stream in container.streams.video if stream.codec_context]
    if not streams or container.format.name.endswith(NOT_VIDEO):
        container.close()
        raise DataError(f"{path}: cannot be read as a video")
    streams[0].codec_context.options = {"err_detect": "explode"}  # av.open's options miss it
    return container, streams[0]
