"""Cut videos into a clips file for training on your own data (`--data`).

Each video (mp4, mov, avi, mkv, gif; a folder: those in it, by name) is made gray (or --rgb),
stretched to H x W (multiples of 4) and cut into clips of T frames, one every --stride, all saved
to one uint8 .npy `(N, T, H, W[, 3])`, whole or not at all. A file that does not decode is skipped.

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

PROG = "python -m systems.convert_videos"


def parse(argv):
    parser = Parser(prog=PROG, description=__doc__)
    parser.add_argument("inputs", nargs="+", metavar="VIDEO_OR_FOLDER")
    parser.add_argument("--out", required=True, help="the .npy file to write")
    parser.add_argument("--size", required=True, type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--length", required=True, type=int, metavar="T", help="frames per clip")
    parser.add_argument("--stride", type=int, help="frames between clip starts (default: T)")
    parser.add_argument("--rgb", action="store_true", help="keep colour (default: gray)")
    args = parser.parse_intermixed_args(argv)  # videos may follow the flags too
    args.stride = args.length if args.stride is None else args.stride
    check_positive({"length": args.length, "stride": args.stride})
    if problem := frame_size_problem(*args.size):
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
                            if name.lower().endswith((".mp4", ".mov", ".avi", ".mkv", ".gif")))
        elif os.path.exists(path):
            paths.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    return paths


def video_clips(path, args):
    """The clips of one video: uint8 `(N, T, H, W[, 3])`; raises `ValueError` or PyAV's errors."""
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        frames = [frame.reformat(width=args.size[1], height=args.size[0], interpolation="AREA",
                                 format="rgb24" if args.rgb else "gray").to_ndarray()
                  for frame in container.decode(video=0)]
    if len(frames) < args.length:
        raise ValueError(f"{len(frames)} frames, fewer than --length {args.length}")
    starts = range(0, len(frames) - args.length + 1, args.stride)
    return np.stack([frames[s : s + args.length] for s in starts])


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
        raise UsageError(f"no clip in {', '.join(args.inputs)}; nothing written")
    clips = np.concatenate(clips)
    with writing(args.out), atomic_path(args.out) as tmp:
        np.save(tmp, clips)
    print(f"wrote {args.out}: {len(clips)} clips of {args.length} frames")
    return 0


def main(argv=None):
    return run_script(PROG, lambda: convert(parse(argv)), "nothing written")


if __name__ == "__main__":
    sys.exit(main())
