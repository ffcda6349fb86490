"""Cut videos into a clips file for training on your own data (`--data`).

Each video (any file FFmpeg reads as one, whatever its extension; a folder: the videos in it and
its subfolders) is made gray (or --rgb), stretched to H x W (multiples of 4) and cut into clips
of T frames, one every --stride, all saved to one uint8 .npy `(N, T, H, W[, 3])`, whole or not
at all. Training holds out the file's last clips (--holdout); here those come from the last
videos by path alone, so that no frame is in both. A file that is not a video, is shorter than
T frames or that FFmpeg reports damaged is named and skipped.

Example:
    python convert_videos.py videos/ --out clips.npy --size 64 64 --length 20
    python main_conv_lstm.py --data clips.npy
"""

import os
import sys

import numpy as np

from model.cli import Parser, UsageError, check_folder, check_positive, progress, run_script
from model.files import TEMPORARY, atomic_path, writing
from systems.clip_file import frame_size_problem, held_out_count
from systems.errors import DataError
from systems.video_file import read_frames

PROG = "convert_videos.py"


def parse(argv):
    parser = Parser(prog=PROG, description=__doc__)
    parser.add_argument("inputs", nargs="+", metavar="VIDEO_OR_FOLDER")
    parser.add_argument("--out", required=True, help="the .npy file to write")
    parser.add_argument("--size", required=True, type=int, nargs=2, metavar=("H", "W"))
    parser.add_argument("--length", required=True, type=int, metavar="T", help="frames per clip")
    parser.add_argument("--stride", type=int, help="frames between clip starts (default: T)")
    parser.add_argument("--rgb", action="store_true", help="keep colour (default: gray)")
    parser.add_argument("--holdout", type=float, default=0.1,
                        help="the fraction of clips training holds out (default: %(default)s)")
    args = parser.parse_intermixed_args(argv)  # videos may follow the flags too
    args.stride = args.length if args.stride is None else args.stride
    if missing := [path for path in args.inputs if not os.path.exists(path)]:
        raise UsageError(f"{missing[0]}: no such file or folder")
    check_positive({"length": args.length, "stride": args.stride})
    held_out_count(2**31, args.holdout)  # raises for a --holdout outside (0, 1)
    if problem := frame_size_problem(*args.size):
        raise UsageError(f"--size {args.size[0]} {args.size[1]}: {problem}")
    if not args.out.endswith(".npy"):
        raise UsageError(f"--out {args.out!r} must name a .npy file")
    check_folder("out", os.path.dirname(os.path.abspath(args.out)))
    return args


def file_paths(inputs):
    """The files named and those in the folders named (and their subfolders), each once, in
    the order of their real paths."""
    paths = []
    for path in inputs:
        paths += [os.path.join(root, name) for root, _, names in os.walk(path) for name in names]
        paths += [path] if os.path.isfile(path) else []
    return [path for _, path in sorted({os.path.realpath(p): p for p in paths}.items())]


def prepare_folder(out):
    """Make `out`'s folder and remove the temporary .npy files that a killed conversion left."""
    folder = os.path.dirname(os.path.abspath(out))
    with writing(folder):
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(folder):
            if name.startswith(TEMPORARY) and name.endswith(".npy"):
                os.remove(os.path.join(folder, name))


def video_clips(path, args):
    """`path`'s clips, uint8 `(N, T, H, W[, 3])`; raises `DataError`."""
    frames = read_frames(path, args.size, args.rgb)
    if len(frames) < args.length:
        raise DataError(f"{path}: {len(frames)} frames, fewer than --length {args.length}")
    starts = range(0, len(frames) - args.length + 1, args.stride)
    return np.stack([frames[s : s + args.length] for s in starts])


def split(counts, holdout):
    """`(v, k)`: the last `v` videos, of `counts` clips each, give the `k` held-out clips (their
    first), the most for which training's `held_out_count` is `k`; None where none works."""
    for v in range(1, len(counts)):
        train, tail = sum(counts[:-v]), sum(counts[-v:])
        fits = [k for k in range(1, tail + 1) if held_out_count(train + k, holdout) == k]
        if fits:
            return v, max(fits)
    return None


def hold_out(videos, holdout):
    """`(clips, k, held)`: the clips of `videos` (`{path: clips}`) in order, the last `k` of them,
    those training holds out, from the videos `held` alone; the surplus of theirs dropped."""
    counts = [len(clips) for clips in videos.values()]
    if not (found := split(counts, holdout)):
        n = len(videos)
        raise DataError(f"held-out clips need videos of their own, and {n} video{'s' * (n > 1)} "
                        f"cannot give --holdout {holdout} of the clips so: pass more videos, or "
                        "split a long one into several files")
    v, k = found
    tail, tail_clips = list(videos)[-v:], sum(counts[-v:])
    held = tail[: np.searchsorted(np.cumsum(counts[-v:]), k) + 1]  # those with a clip kept
    print(f"holding out {k} of the {tail_clips} clips of {', '.join(tail)} (--holdout {holdout})"
          + (f"; the other {tail_clips - k} dropped" if tail_clips > k else ""))
    return np.concatenate(list(videos.values()))[: sum(counts) - tail_clips + k], k, held


def convert(args):
    prepare_folder(args.out)
    paths, videos = file_paths(args.inputs), {}
    with progress(iterable=paths, desc="decoding", unit="file") as bar:
        for path in bar:
            try:
                videos[path] = video_clips(path, args)
            except DataError as error:
                bar.write(f"{PROG}: warning: skipping {error}", file=sys.stderr)
    if not videos:
        raise UsageError(f"no clip in {', '.join(args.inputs)}; nothing written")
    clips, k, held = hold_out(videos, args.holdout)
    with writing(args.out), atomic_path(args.out) as tmp:
        np.save(tmp, clips)
    print(f"wrote {args.out}: {len(clips)} clips of {args.length} frames "
          f"({k} held out, from {', '.join(held)})")
    return 0


def main(argv=None):
    return run_script(PROG, lambda: convert(parse(argv)), "nothing written")


if __name__ == "__main__":
    sys.exit(main())
