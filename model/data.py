"""The training data: clips from the simulator or from a user's clips file (`--data`), each
step's a pure function of (seed, step), so a resumed run sees exactly the data an uninterrupted
one would have."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from systems import bouncing_balls, clip_file

VIDEO_FRAMES = 50  # length of the simulator's rollout videos, true context included
BALL_FRAME = (32, 32, 3)  # the simulator's frames


def open_data(config):
    """The clips file of `--data` (`systems.clip_file.Clips`), or `None` for the simulator."""
    if config.data is None:
        return None
    clips = clip_file.open_clips(config.data, config.time_major, config.seq_length)
    clips.verify()  # every value, once, before anything is written
    return clips


def frame_shape(clips):
    return BALL_FRAME if clips is None else clips.frame_shape


def batch_at(config, step, clips=None):
    """The training clips of `step`, `(batch_size, seq_length, H, W, C)`."""
    rng = np.random.default_rng([config.seed, step])
    if clips is not None:
        return clip_file.training_batch(clips, rng, config.batch_size, config.seq_length,
                                        config.holdout)
    return bouncing_balls.generate(config.batch_size, config.seq_length,
                                   num_balls=config.num_balls, friction=config.friction, rng=rng)


def batches(config, step, clips=None):
    """The training clips of steps `step, step + 1, ...` as backend tensors, each made in a
    background thread while the caller trains on the one before."""
    from keras import ops

    def prepare(step):
        return ops.convert_to_tensor(batch_at(config, step, clips))

    with ThreadPoolExecutor(1) as pool:
        upcoming = pool.submit(prepare, step)
        while True:
            clip = upcoming.result()
            step += 1
            upcoming = pool.submit(prepare, step)
            yield clip


def video_clip(config, clips=None):
    """`(1, T, H, W, C)`: the clip every video of a run shows, so videos compare across steps:
    a fixed simulated one of `VIDEO_FRAMES`, or the first held-out clip of --data."""
    if clips is not None:
        return clip_file.held_out_clips(clips, config.holdout, count=1)
    rng = np.random.default_rng([config.seed, 2**32 - 1])
    return bouncing_balls.generate(1, VIDEO_FRAMES, num_balls=config.num_balls,
                                   friction=config.friction, rng=rng)


