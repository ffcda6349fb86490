"""Cut videos into a clips file for training on your own data (`--data`).

Each video (mp4, mov, avi, mkv, gif; a folder: every such file in it, by name) is decoded,
each frame made gray (or RGB with --rgb) and resized to W x H (stretched, not cropped), and
cut into clips of T consecutive frames, a new clip every --stride frames (default T: no
overlap). All clips go to one uint8 .npy, (N, T, H, W) or (N, T, H, W, 3), written whole or
not at all. A file that does not decode is named in a warning and skipped.

Example:
    python -m systems.convert_videos videos/ --out clips.npy --size 64 64 --length 20
    python main_conv_lstm.py --data clips.npy
"""

import os
import sys

import av
import numpy as np

from model.cli import Parser, UsageError, check_folder, check_positive, progress, run_script
from model.files import atomic_path, writing
from systems.clip_file import frame_size_problem

VIDEOS = (".mp4", ".mov", ".avi", ".mkv", ".gif")  # what a folder is searched for
PROG = "python -m systems.convert_videos"


def parse(argv):
    parser = Parser(prog=PROG, description=__doc__)
    parser.add_argument("inputs", nargs="+", metavar="VIDEO_OR_FOLDER")
    parser.add_argument("--out", required=True, help="the .npy file to write")
    parser.add_argument("--size", required=True, type=int, nargs=2, metavar=("H", "W"),
                        help="frame height and width, each a multiple of 4")
    parser.add_argument("--length", required=True, type=int, metavar="T",
                        help="frames per clip")
    parser.add_argument("--stride", type=int, help="frames from one clip's start to the next "
                                                   "(default: --length, no overlap)")
    parser.add_argument("--rgb", action="store_true", help="keep colour (default: gray)")
    args = parser.parse_intermixed_args(argv)  # videos may follow the flags too
    args.stride = args.length if args.stride is None else args.stride
    check_positive({"length": args.length, "stride": args.stride})
    problem = frame_size_problem(*args.size)
    if problem:
        raise UsageError(f"--size {args.size[0]} {args.size[1]}: {problem}")
    if not args.out.endswith(".npy"):
        raise UsageError(f"--out {args.out!r} must name a .npy file")
    check_folder("out", os.path.dirname(os.path.abspath(args.out)))
    return args


def video_paths(inputs):
    """The files named, and the videos in the folders named, sorted by name."""
    paths = []
    for path in inputs:
        if os.path.isdir(path):
            paths += sorted(os.path.join(path, name) for name in os.listdir(path)
                            if name.lower().endswith(VIDEOS))
        elif os.path.exists(path):
            paths.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    return paths


def frames_of(path, size, rgb):
    """The frames of the video at `path`, each uint8 `(H, W)`, or `(H, W, 3)` with `rgb`."""
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        return [frame.reformat(width=size[1], height=size[0], interpolation="AREA",
                               format="rgb24" if rgb else "gray").to_ndarray()
                for frame in container.decode(video=0)]


def clips_of(frames, length, stride):
    """Windows of `length` consecutive `frames`, one starting every `stride` frames:
    `(N, length, *frame)`."""
    return np.stack([np.stack(frames[s : s + length])
                     for s in range(0, len(frames) - length + 1, stride)])


def video_clips(path, args):
    """The clips of one video: uint8 `(N, T, H, W[, 3])`. Raises `ValueError` or PyAV's errors
    where it does not decode or is shorter than one clip."""
    frames = frames_of(path, args.size, args.rgb)
    if len(frames) < args.length:
        raise ValueError(f"{len(frames)} frames, fewer than --length {args.length}")
    return clips_of(frames, args.length, args.stride)


def convert(args):
    clips = []
    with progress(iterable=video_paths(args.inputs), desc="decoding", unit="file") as bar:
        for path in bar:
            try:
                clips.append(video_clips(path, args))
            except (av.FFmpegError, OSError, ValueError) as error:
                why = getattr(error, "strerror", None) or error  # without FFmpeg's errno
                bar.write(f"{PROG}: warning: skipping {path}: {why}", file=sys.stderr)
    if not clips:
        raise UsageError(f"no clip of {args.length} frames in {', '.join(args.inputs)}; "
                         "nothing written")
    clips = np.concatenate(clips)
    with writing(args.out), atomic_path(args.out) as tmp:
        np.save(tmp, clips)
    print(f"wrote {args.out}: {len(clips)} clips of {args.length} frames, "
          f"{args.size[0]}x{args.size[1]} {'RGB' if args.rgb else 'gray'}")
    return 0


def main(argv=None):
    return run_script(PROG, lambda: convert(parse(argv)), "nothing written")


if __name__ == "__main__":
    sys.exit(main())
