"""A trained run and a clip in, its future out.

INPUT is a video (decoded as `convert_videos.py` decodes, to the run's frame size and channels),
a `.npy`/`.npz` of one clip `(T, H, W[, C])`, or of clips with --clip I (read in the layout the
run recorded). Left out on a bouncing-ball run, a clip is simulated (--seed). The model reads
the run's context (its --seq_start frames) from frame --start on, then feeds itself --frames
frames. Writes PREFIX.npy (the predicted frames, uint8 (N, H, W, C)) and PREFIX.mp4 (the context
then the predictions, the truth beside them where the input has it) and, where it has, prints
the error per predicted frame beside copying the last input frame.

Example:
    python predict.py my_clip.mp4 --train_dir runs/conv_lstm
    python predict.py --train_dir checkpoints/pretrained/conv_lstm
"""

import os
import sys

from model import runtime

runtime.start()  # first: Keras and its backend, quietly

import numpy as np  # noqa: E402

from model import cli, files, runs, video  # noqa: E402
from model.cli import UsageError  # noqa: E402
from model.config import MODELS  # noqa: E402
from model.evaluation import MAX_HORIZON, metrics  # noqa: E402
from systems import clip_file, video_file  # noqa: E402
from systems.bouncing_balls import Balls  # noqa: E402

NUMPY = (".npy", ".npz")


def parse_flags(argv=None):
    parser = cli.Parser(prog="predict.py", description=__doc__)
    add = parser.add_argument
    add("input", nargs="?", help="a video, or a .npy/.npz clip (default: a simulated clip)")
    add("--train_dir", required=True, help="a training folder (its newest checkpoint that "
        "loads) or one checkpoint folder, e.g. checkpoints/pretrained/conv_lstm")
    add("--frames", type=int, help="frames to predict (default: the rest of the input, else "
        f"the run's training horizon; at most {MAX_HORIZON})")
    add("--start", type=int, default=0, help="the first input frame the model reads "
        "(default: %(default)s)")
    add("--clip", type=int, help="the clip of a .npy/.npz of clips to predict")
    add("--seed", type=int, default=0, help="seed of the simulated clip (default: %(default)s)")
    add("--out", help="output prefix: .npy and .mp4 (default: results/<input name>_future)")
    args = parser.parse_args(argv)
    cli.check_positive({"start": args.start, "clip": args.clip or 0}, at_least=0)
    cli.check_positive({"frames": args.frames or 1})
    cli.check_seed(args.seed)
    if args.input is None and args.clip is not None:
        raise UsageError("--clip needs INPUT, a .npy/.npz of clips")
    name = os.path.splitext(os.path.basename(args.input or f"simulated_seed{args.seed}"))[0]
    args.out = cli.out_prefix(args.out or os.path.join(cli.REPO, "results", ""), name + "_future")
    if args.input and os.path.abspath(args.input) in {os.path.abspath(args.out + e) for e in (
            ".npy", ".mp4")}:
        raise UsageError(f"--out {args.out} would overwrite the input {args.input}")
    return args


def read_clip(args, run, need):
    """The input clip, float32 `(T, H, W, C)` in [0, 1], at most `need` frames of it where it
    is a video or simulated. Raises `UsageError` or `DataError`."""
    frame = tuple(run.data["shape"][2:])
    if args.input is None:
        if "fingerprint" in run.data:
            raise UsageError(f"{run.path} was trained on {run.data['path']}, not on the bouncing "
                             "balls: name an INPUT clip or video")
        return next(Balls(run.config.num_balls, run.config.friction).held_out(
            1, need, seed=args.seed))[0]
    if not os.path.isfile(args.input):
        raise UsageError(f"{args.input}: no such file")
    if not args.input.lower().endswith(NUMPY):
        frames = video_file.read_frames(args.input, frame[:2], frame[2] == 3, count=need)
        return frames.reshape(len(frames), *frame).astype(np.float32) / 255
    if args.clip is not None:
        clips, _ = clip_file.open_clips(args.input, recorded=run.data.get("layout"))
        if args.clip >= clips.shape[0]:
            raise UsageError(f"--clip {args.clip}: {args.input} holds {clips.shape[0]} clips")
        clip = clips.window([args.clip], [0], clips.frames)[0]
    else:
        clip = _one_clip(args.input)
    if clip.shape[1:] != frame:
        raise UsageError(f"{args.input}: frames of {'x'.join(map(str, clip.shape[1:]))} (H x W x "
                         f"C), but the run's are {'x'.join(map(str, frame))}")
    return clip


def _one_clip(path):
    """The one clip `(T, H, W[, C])` of a `.npy`/`.npz`, float32 `(T, H, W, C)` in [0, 1]."""
    array = clip_file.read_array(path)
    if not (array.ndim == 3 or array.ndim == 4 and array.shape[-1] in (1, 3)):
        raise UsageError(f"{path}: shape {array.shape} is not one clip (T, H, W[, C]); for a file "
                         "of clips, pass --clip I")
    return clip_file.to_unit(np.asarray(array).reshape(*array.shape[:3], -1))


def predict(run, clip, start, frames):
    """`(context, prediction)`: the `context` frames read from `start`, and the model's
    `frames` predictions after them, float32."""
    context = clip[start : start + run.model.context]
    prediction = run.model.rollout(context[None], frames)  # eager: one call repays no tracing
    return context, np.asarray(prediction)[0]


def report(prediction, truth, last, first):
    """Print the error per predicted frame that has its truth (the first is frame `first`),
    beside copying `last`."""
    n = len(truth)
    ours = metrics(prediction[None, :n], truth[None], quality=False)["sse"][0]
    copy = metrics(np.repeat(last[None, None], n, axis=1), truth[None], quality=False)["sse"][0]
    print("squared error summed over the frame (as create_graphs.py):")
    print(f"{'step':>4}  {'frame':>5}  {'model':>10}  {'copy last':>10}")
    for k in range(n):
        print(f"{k:>4}  {first + k:>5}  {float(ours[k]):10.2f}  {float(copy[k]):10.2f}")


def run_predict(argv=None):
    args = parse_flags(argv)
    run = runs.load_run(None, args.train_dir, warn=lambda m: print(m, file=sys.stderr))
    context, trained = run.model.context, run.config.seq_length - run.model.context
    wanted = args.frames or (trained if args.input is None else MAX_HORIZON)
    clip = read_clip(args, run, args.start + context + min(wanted, MAX_HORIZON))
    if len(clip) < args.start + context:
        raise UsageError(f"{args.input or 'the clip'} has {len(clip)} frames; the run reads "
                         f"{context} from frame {args.start} (--start)")
    frames = args.frames or len(clip) - args.start - context or trained
    if frames > MAX_HORIZON:
        print(f"--frames {frames} capped at {MAX_HORIZON}, the longest rollout create_graphs.py "
              "scores")
        frames = MAX_HORIZON
    seen, prediction = predict(run, clip, args.start, frames)
    truth = clip[args.start + context : args.start + context + frames]
    if len(truth):
        report(prediction, truth, seen[-1], args.start + context)
    write(args, run, seen, prediction, truth)
    return 0


def write(args, run, seen, prediction, truth):
    """PREFIX.npy and PREFIX.mp4, both or neither."""
    context, frames = len(seen), len(prediction)
    shown = np.concatenate([seen, prediction])
    left = np.concatenate([seen, truth, np.ones((frames - len(truth), *seen.shape[1:]))])
    captions = [(f"{'truth' if t < context + len(truth) else 'no truth'}, frame {t}",
                 f"{'input' if t < context else 'prediction'}, frame {t}")
                for t in range(context + frames)]
    title = f"{MODELS[run.config.model].label}, {os.path.basename(run.path)} (step {run.step:,})"
    pixels = video.side_by_side(left, shown, captions, title)
    files.write_all({
        args.out + ".npy": lambda p: np.save(p, video.to_pixels(prediction)[..., :seen.shape[-1]]),
        args.out + ".mp4": lambda p: video.write_mp4(p, pixels)})
    print(f"wrote {args.out}.npy ({frames} frames) and {args.out}.mp4")


def main(argv=None):
    """The exit code (`cli.EXIT_CODES`); nothing is written unless all of it is."""
    return cli.run_script("predict.py", lambda: run_predict(argv), "nothing written")


if __name__ == "__main__":
    sys.exit(main())
