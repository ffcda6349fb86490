import json
import time

import numpy as np
import pytest

import create_graphs
from model.cli import UsageError
from model.config import MODELS
from model.training import parse_flags
from systems import bouncing_balls as bb
from systems.bouncing_balls import Balls, generate, simulate
from tests import bouncing_balls_numpy as reference

R = bb.RADIUS


def energy(vel):
    return np.sum(vel**2, axis=(-2, -1))  # (B, T), unit masses


def pair_distance(pos):
    return np.linalg.norm(pos[..., 0, :] - pos[..., 1, :], axis=-1)  # (B, T)


@pytest.fixture(scope="module")
def long_run():
    return simulate(256, 200, rng=7)


@pytest.mark.parametrize("kwargs", [{}, {"friction": True}, {"num_balls": 5, "radius": 1.0},
                                    {"size": 48, "radius": 2.0}, {"num_balls": 1, "radius": 3.0}])
def test_compiled_loops_match_the_numpy_reference(kwargs):
    size = kwargs.pop("size", 32)
    radius, friction = kwargs.get("radius", R), kwargs.get("friction", False)
    for seed in range(5):
        pos, vel = simulate(16, 40, rng=seed, **kwargs)
        x, v = pos[:, 0], vel[:, 0]
        ref_pos, ref_vel = reference.trajectories(x, v, 40, radius, friction)
        np.testing.assert_array_equal(pos, ref_pos)  # the same float64 operations, in order
        np.testing.assert_array_equal(vel, ref_vel)
        frames = bb.render(pos, vel, size, radius)
        assert frames.dtype == np.float32 and frames.shape == (16, 40, size, size, 3)
        np.testing.assert_allclose(frames, reference.render(pos, vel, size, radius), atol=1e-6)
        tries = np.random.default_rng(seed).uniform(bb.LOW, bb.BOX, (8, 64, x.shape[1], 2))
        valid = bb._valid_placement(tries, radius)
        np.testing.assert_array_equal(valid, reference.valid_placement(tries, radius))


def test_clips_of_a_seed_are_pinned():
    """The clips of a seed, as the earlier engines made them (float32-rounding level)."""
    frames = generate(4, 6, rng=11)
    np.testing.assert_allclose(frames.sum(dtype=np.float64), 3863.17440752, rtol=1e-8)
    np.testing.assert_allclose(frames[..., 0].sum(dtype=np.float64), 813.14828301, rtol=1e-8)
    pos, vel = simulate(4, 6, rng=11)
    np.testing.assert_allclose(pos[2, 5, 1], [4.90016611, 8.84770989], rtol=1e-8)
    np.testing.assert_allclose(vel[3, 0], [[0.17976514, -0.01228057], [-0.37601689, -0.2759438]],
                               rtol=1e-7)
    frames = generate(2, 20, num_balls=5, radius=1.0, friction=True, rng=3)
    np.testing.assert_allclose(frames.sum(dtype=np.float64), 11449.7866231, rtol=1e-8)


def test_friction_adds_gravity_then_drag():
    """The original's order within a sub-step: `v = (v + g) * (1 - drag)`, gravity on y only
    while the ball is above the floor; the walls come after."""
    x = np.array([[[5.0, 5.0]], [[5.0, 8.9]]])  # in mid-air; resting on the floor (y + R > 10)
    v = np.array([[[0.1, -0.2]], [[0.1, 0.0]]])
    _, vel = bb.trajectories(x, v, 2, friction=True)
    keep = 1.0 - bb.DRAG
    mid_air = [0.1 * keep**2, ((-0.2 + bb.GRAVITY) * keep + bb.GRAVITY) * keep]
    np.testing.assert_allclose(vel[0, 1, 0], mid_air, rtol=1e-14)
    np.testing.assert_allclose(vel[1, 1, 0], [0.1 * keep**2, 0.0], rtol=1e-14, atol=0)


def test_collision_pairs_in_the_original_order():
    """Pairs are resolved one at a time as `(1, 0), (2, 0), (2, 1)`, each pair's new velocities
    in place before the next is tested. Three touching balls in a row, the outer two moving in:
    (1, 0) swaps first, then (2, 1) passes ball 0's velocity on to ball 2, leaving 0 at rest.
    (Any order that keeps each two pairs sharing a ball in this relative order is the same
    computation; `(0, 1), (0, 2), (1, 2)` is one.)"""
    x = np.array([[3.0, 5.0], [5.3, 5.0], [7.6, 5.0]])  # 2.3 apart (2 R = 2.4)
    v = np.array([[0.1, 0.0], [0.0, 0.0], [-0.1, 0.0]])
    _, ref_v = reference._substep(x[None], v[None].copy(), R, False)
    bb._substep(x, v, R, False)  # one sub-step, in place
    np.testing.assert_allclose(v, [[0.0, 0.0], [-0.1, 0.0], [0.1, 0.0]], atol=1e-15)
    np.testing.assert_array_equal(ref_v[0], v)


def test_collisions_only_while_approaching():
    """Overlapping balls moving apart keep their velocities; approaching ones swap the normal
    components (equal masses), so a pair never locks together."""
    x = np.array([[[4.0, 5.0], [6.2, 5.0]]] * 2)  # 2.2 apart: overlapping (2 R = 2.4)
    v = np.array([[[-0.1, 0.05], [0.1, 0.0]],  # separating along x
                  [[0.1, 0.0], [-0.1, 0.0]]])  # approaching along the line of centres
    _, vel = bb.trajectories(x, v, 2)
    np.testing.assert_array_equal(vel[0, 1], v[0])
    np.testing.assert_allclose(vel[1, 1], [[-0.1, 0.0], [0.1, 0.0]], atol=1e-12)


def test_shape_dtype_range():
    x = generate(3, 7, size=24, rng=0)
    assert x.shape == (3, 7, 24, 24, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5


def test_initial_speed_and_placement(long_run):
    pos, vel = long_run
    np.testing.assert_allclose(np.linalg.norm(vel[:, 0], axis=(1, 2)), bb.SPEED, rtol=1e-12)
    assert np.all(pos[:, 0] - R >= 0) and np.all(pos[:, 0] + R <= bb.BOX)
    assert np.all(pos[:, 0] >= bb.LOW)
    assert np.all(pair_distance(pos[:, :1]) >= 2 * R)


def test_energy_conserved_through_walls_and_collisions(long_run):
    _, vel = long_run
    e = energy(vel)
    np.testing.assert_allclose(e, np.broadcast_to(e[:, :1], e.shape), rtol=1e-9)


def test_speed_conserved_at_walls():
    pos, vel = simulate(64, 200, num_balls=1, rng=3)
    speed = np.linalg.norm(vel[..., 0, :], axis=-1)
    np.testing.assert_allclose(speed, np.broadcast_to(speed[:, :1], speed.shape), rtol=1e-9)
    flips = np.sign(vel[:, 1:, 0]) != np.sign(vel[:, :-1, 0])
    assert flips.any(), "no wall bounce happened in 200 frames"


def test_momentum_conserved_in_collisions(long_run):
    pos, vel = long_run
    walls = (pos - R < 0.6) | (pos + R > bb.BOX - 0.6)  # within one frame's travel of a wall
    near_wall = walls.any(axis=(-2, -1))
    quiet = ~(near_wall[:, 1:] | near_wall[:, :-1])
    collided = (pair_distance(pos[:, 1:]) < 2 * R + 0.6) & quiet
    momentum = vel.sum(axis=-2)  # (B, T, 2)
    change = np.abs(momentum[:, 1:] - momentum[:, :-1]).max(axis=-1)
    velocity_change = np.abs(vel[:, 1:] - vel[:, :-1]).max(axis=(-2, -1))
    hits = collided & (velocity_change > 1e-3)
    assert hits.sum() > 20, "too few collisions to test"
    assert change[hits].max() < 1e-9


def test_balls_stay_in_box_and_apart(long_run):
    pos, _ = long_run
    # a ball may overshoot a wall by at most one sub-step's travel before it is turned back
    step = bb.SPEED / bb.SUBSTEPS
    assert pos.min() > -step and pos.max() < bb.BOX + step
    touching = pair_distance(pos) < 2 * R - 2 * step
    assert not touching.any()
    # a touching pair pinned against a wall may still overlap on the next frame, never longer
    overlap = pair_distance(pos) < 2 * R
    stuck = overlap[:, 2:] & overlap[:, 1:-1] & overlap[:, :-2]
    assert overlap.sum() > 100 and not stuck.any(), "balls stayed overlapped for 3 frames"


def test_colour_encodes_velocity():
    pos, vel = simulate(1, 1, num_balls=1, rng=5)
    frame = bb.render(pos, vel, 32, R)[0, 0]
    x, y = pos[0, 0, 0]
    row, col = int(y / bb.BOX * 32), int(x / bb.BOX * 32)  # x runs along columns, y along rows
    green = frame[row, col, 1]
    assert green > 0.5
    np.testing.assert_allclose(frame[row, col, 0], min(1, (vel[0, 0, 0, 0] + 0.5) * green), atol=1e-5)
    np.testing.assert_allclose(frame[row, col, 2], min(1, (vel[0, 0, 0, 1] + 0.5) * green), atol=1e-5)
    assert frame[0, 0].max() < 1e-3 or np.hypot(x, y) < 2 * R


def test_soft_disc_profile():
    pos = np.array([[[[5.0, 5.0]]]])
    vel = np.zeros_like(pos)
    frame = bb.render(pos, vel, 32, R)[0, 0, :, :, 1]
    centres = (np.arange(32) + 0.5) / 32 * bb.BOX
    d2 = (centres[:, None] - 5.0) ** 2 + (centres[None, :] - 5.0) ** 2
    np.testing.assert_allclose(frame, np.exp(-((d2 / R**2) ** 4)), atol=1e-6)


def test_same_seed_same_data():
    np.testing.assert_array_equal(generate(4, 6, rng=11), generate(4, 6, rng=11))
    assert not np.array_equal(generate(4, 6, rng=11), generate(4, 6, rng=12))
    rng = np.random.default_rng(3)
    assert generate(2, 3, rng=rng).shape == (2, 3, 32, 32, 3)


def test_friction_slows_and_pulls_down():
    pos, vel = simulate(64, 100, friction=True, rng=2)
    free_pos, _ = simulate(64, 100, friction=False, rng=2)
    assert energy(vel)[:, -1].mean() < 0.5 * energy(vel)[:, 0].mean()
    # y grows downwards (rows): with gravity the balls spend their time lower in the box
    assert pos[:, 50:, :, 1].mean() > free_pos[:, 50:, :, 1].mean() + 0.5


def test_max_balls_is_where_placement_stops_being_reliable():
    """At radius 1.2, 5 balls: a random set of 5 is valid 0.42 % of the time, so 12,800 tries
    fail once in e^53; a set of 6 only 0.031 % (12,800 tries fail for 2 % of sequences)."""
    assert bb.max_balls() == 5 and bb.max_balls(1.0) == 6 and bb.max_balls(3.0) == 1
    tries = bb.MAX_PLACEMENT_ROUNDS * bb.CANDIDATES
    sets = np.random.default_rng(1).uniform(bb.LOW, bb.BOX, (1000, 200, 6, 2))
    rate = [bb._valid_placement(sets[..., :n, :], R).mean() for n in (5, 6)]
    assert rate[0] * tries > bb.RELIABLE > rate[1] * tries


def test_many_batches_at_the_most_balls():
    for seed in range(250):  # 4,000 sequences; at 6 balls about 27 % of batches would fail
        pos, _ = simulate(16, 1, num_balls=bb.max_balls(), rng=seed)
        assert np.all(pos[:, 0] - R >= 0) and np.all(pos[:, 0] + R <= bb.BOX)
        gaps = np.linalg.norm(pos[:, 0, :, None] - pos[:, 0, None], axis=-1)
        assert np.all(gaps + 2 * R * np.eye(pos.shape[2]) >= 2 * R)


def test_num_balls_flag_accepts_exactly_the_reliable_counts(tmp_path):
    flags, defaults = ["--train_dir", str(tmp_path / "run")], MODELS["conv_lstm"].defaults
    assert parse_flags(defaults, [*flags, "--num_balls", str(bb.max_balls())]).num_balls == 5
    with pytest.raises(UsageError, match=r"--num_balls 6 do not fit reliably .*\(at most 5\)"):
        parse_flags(defaults, [*flags, "--num_balls", str(bb.max_balls() + 1)])
    assert not (tmp_path / "run").exists()


def test_placement_gives_up_after_its_rounds(monkeypatch):
    monkeypatch.setattr(bb, "MAX_PLACEMENT_ROUNDS", 1)
    with pytest.raises(ValueError, match="could not place 6 balls .* in 64 tries"):
        bb._initial_positions(16, 6, R, np.random.default_rng(0))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(num_balls=50), "at most 5"),
        (dict(num_balls=6), "cannot be placed reliably"),
        (dict(radius=0), "radius must be positive"),
        (dict(radius=6), "at most 0"),
        (dict(size=0), "size must be a positive integer"),
        (dict(seq_length=0), "seq_length must be a positive integer"),
        (dict(batch_size=-1), "batch_size must be a positive integer"),
        (dict(num_balls=0), "num_balls must be a positive integer"),
    ],
)
def test_impossible_requests_raise_quickly(kwargs, message):
    args = dict(batch_size=4, seq_length=3, rng=0) | kwargs
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        generate(**args)
    assert time.perf_counter() - start < 5.0


def test_balls_are_a_source_of_clips_as_a_clips_file_is():
    balls = Balls(num_balls=3, friction=True)
    for seed, step in ((0, 0), (0, 1), (5, 0)):
        np.testing.assert_array_equal(balls.batch(seed, step, 2, 4), generate(
            2, 4, num_balls=3, friction=True, rng=np.random.default_rng([seed, step])))
    rng = np.random.default_rng(7)  # one stream through the batches
    want = [generate(n, 3, num_balls=3, friction=True, rng=rng) for n in (2, 2, 1)]
    held_out = list(balls.held_out(5, 3, seed=7, batch_size=2))
    assert [len(batch) for batch in held_out] == [2, 2, 1]
    for batch, expected in zip(held_out, want):
        np.testing.assert_array_equal(batch, expected)
    assert balls.frame_shape == (32, 32, 3) and balls.original
    assert balls.frames is None and balls.held_out_count is None
    assert balls.describe() == {"source": "bouncing balls", "shape": [None, None, 32, 32, 3]}


def test_the_mean_frame_is_that_of_1000_simulated_clips_of_seed_0():
    x, v = (values[:, 0] for values in simulate(1000, 1, rng=0))  # the starts of seed 0
    pos, vel = reference.trajectories(x, v, 10, R)
    want = np.mean([reference.render(p, u, 32, R) for p, u in zip(np.split(pos, 10),
                                                                   np.split(vel, 10))],
                   axis=(0, 1, 2))
    mean = Balls().mean_frame()
    assert mean.shape == (32, 32, 3) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, want, atol=1e-6)
    assert np.abs(Balls(num_balls=1).mean_frame() - mean).max() > 0.05


def test_graphs_of_the_balls_show_both_alignments_and_both_baselines(tiny_runs, tmp_path, capsys):
    assert create_graphs.main(["--conv_lstm_dir", tiny_runs["conv_lstm"], "--conv_dir",
                               tiny_runs["conv"], "--num_sequences", "3", "--horizon", "4",
                               "--out", str(tmp_path / "g")]) == 0
    stdout = capsys.readouterr().out
    record = json.loads((tmp_path / "g.json").read_text())
    assert record["alignments"] == {
        "_2016": "2016 alignment: ConvLSTM in 0-4, step 0 = frame 6; conv in 0, step 0 = frame 1",
        "": "our alignment: ConvLSTM in 0-4, conv in 4, step 0 = frame 5"}
    assert record["series"] == ["conv_lstm", "conv", "conv_lstm_2016", "conv_2016", "copy_last",
                                "mean_frame"]
    assert "ours: frames 5.. for both" in stdout and "2016: ConvLSTM 6.., conv 1.." in stdout
    columns = np.genfromtxt(tmp_path / "g.csv", delimiter=",", names=True)
    clips = next(Balls().held_out(3, 5 + 4 + 1, seed=2016))  # the evaluation's, seed 2016
    truth = clips[:, 5:9]
    copy = np.square(clips[:, 4:5] - truth).sum(axis=(2, 3, 4)).mean(axis=0)
    mean = np.square(Balls().mean_frame() - truth).sum(axis=(2, 3, 4)).mean(axis=0)
    np.testing.assert_allclose(columns["copy_last"], copy, rtol=1e-5)
    np.testing.assert_allclose(columns["mean_frame"], mean, rtol=1e-5)
