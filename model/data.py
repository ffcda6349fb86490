"""A run's source of clips, the simulator's (`systems.bouncing_balls.Balls`) or a user's file's
(`systems.clip_file.Clips`), which share one interface; and each step's clips made in a
background thread. A step's clips are a function of (seed, step), so a resumed run sees
exactly the data an uninterrupted one would have."""

from concurrent.futures import ThreadPoolExecutor

from keras import ops

from model import cli
from systems import bouncing_balls, clip_file

VIDEO_FRAMES = 50  # frames of a run video on the simulator (a clips file's: its clips' length)
BAR_BYTES = 500 * 2**20  # checking a clips file shows a progress bar over this size


def open_source(config, recorded=None, say=print):
    """The source of `config`'s clips: `--data`'s file, opened, its layout said through `say`
    and every value checked, or the simulator. `recorded`: the layout a run recorded."""
    if config.data is None:
        return bouncing_balls.Balls(config.num_balls, config.friction)
    clips, note = clip_file.open_clips(config.data, config.time_major, config.holdout,
                                       config.seq_length, recorded)
    say(note)
    clips.check_evaluable()
    clips.verify(lambda total: cli.progress(total=total, unit="B", unit_scale=True,
                                            desc=f"checking {config.data}",
                                            disable=total <= BAR_BYTES))
    return clips


def video_clip(source, seed):
    """`(1, T, H, W, C)`: the clip every video of a run shows, so that they compare across steps."""
    return next(source.held_out(1, source.frames or VIDEO_FRAMES, seed=[seed, 2**32 - 1]))


def batches(source, config, step):
    """The training clips of steps `step, step + 1, ...` as backend tensors, each made in a
    background thread while the caller trains on the one before."""

    def prepare(step):
        clips = source.batch(config.seed, step, config.batch_size, config.seq_length)
        return ops.convert_to_tensor(clips)

    with ThreadPoolExecutor(1) as pool:
        upcoming = pool.submit(prepare, step)
        while True:
            clip = upcoming.result()
            step += 1
            upcoming = pool.submit(prepare, step)
            yield clip
