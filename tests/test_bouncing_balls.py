import time

import numpy as np
import pytest

from systems import bouncing_balls as bb
from systems.bouncing_balls import generate, simulate

R = bb.RADIUS


def energy(vel):
    return np.sum(vel**2, axis=(-2, -1))  # (B, T), unit masses


def pair_distance(pos):
    return np.linalg.norm(pos[..., 0, :] - pos[..., 1, :], axis=-1)  # (B, T)


ENGINES = ["numba", "numpy"] if bb._compiled is not None else ["numpy"]


@pytest.fixture(scope="module", params=ENGINES)
def long_run(request):
    return simulate(256, 200, rng=7, engine=request.param)


@pytest.mark.skipif(bb._compiled is None, reason="numba is not installed")
@pytest.mark.parametrize("kwargs", [{}, {"friction": True}, {"num_balls": 5, "radius": 1.0},
                                    {"size": 48, "radius": 2.0}, {"num_balls": 1, "radius": 3.0}])
def test_engines_agree(kwargs):
    sim = {k: v for k, v in kwargs.items() if k != "size"}
    for seed in range(5):
        pos, vel = simulate(16, 40, rng=seed, engine="numpy", **sim)
        fast_pos, fast_vel = simulate(16, 40, rng=seed, engine="numba", **sim)
        np.testing.assert_array_equal(fast_pos, pos)  # the same float64 operations, in order
        np.testing.assert_array_equal(fast_vel, vel)
        frames = generate(16, 40, rng=seed, engine="numpy", **kwargs)
        fast = generate(16, 40, rng=seed, engine="numba", **kwargs)
        assert fast.dtype == np.float32 and fast.shape == frames.shape
        np.testing.assert_allclose(fast, frames, rtol=0, atol=1e-6)


def test_unknown_engine():
    with pytest.raises(ValueError, match="engine must be"):
        generate(1, 1, engine="cuda")


@pytest.mark.parametrize("engine", ENGINES)
def test_collisions_only_while_approaching(engine):
    """Overlapping balls moving apart keep their velocities; approaching ones swap the normal
    components (equal masses), so a pair never locks together."""
    x = np.array([[[4.0, 5.0], [6.2, 5.0]]] * 2)  # 2.2 apart: overlapping (2 R = 2.4)
    v = np.array([[[-0.1, 0.05], [0.1, 0.0]],  # separating along x
                  [[0.1, 0.0], [-0.1, 0.0]]])  # approaching along the line of centres
    _, vel = bb.trajectories(x, v, 2, engine=engine)
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


@pytest.mark.skipif(bb._compiled is None, reason="numba is not installed")
def test_compiled_masses_are_float32_exp():
    """The numba painter's own `exp(-p)`, over the whole range it is used on: within one float32
    step of the correctly rounded value, and 0 where that is 0."""
    powers = np.linspace(0, 3.3**4, 200_001).astype(np.float32)
    out = np.empty_like(powers)
    bb._compiled._masses(powers, powers.size, out)
    exact = np.exp(-powers.astype(np.float64)).astype(np.float32)
    steps = np.abs(out.view(np.int32).astype(np.int64) - exact.view(np.int32))
    assert steps.max() <= 1
    assert np.all(out[exact == 0] == 0)


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


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(num_balls=50), "do not fit"),
        (dict(num_balls=9), "could not place"),
        (dict(radius=0), "radius must be positive"),
        (dict(radius=6), "do not fit"),
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


@pytest.mark.skipif(bb._compiled is None, reason="numba is not installed")
def test_threaded_painting_matches_one_thread(monkeypatch):
    monkeypatch.setattr(bb.os, "cpu_count", lambda: 4)
    threaded = generate(4 * bb.PARALLEL_MIN_SEQUENCES, 3, rng=5)  # painted in 4 chunks
    monkeypatch.setattr(bb, "PARALLEL_MIN_SEQUENCES", 10**9)
    np.testing.assert_array_equal(generate(threaded.shape[0], 3, rng=5), threaded)


@pytest.mark.parametrize("shape, dtype", [((3, 5, 7), np.float32), ((1,), np.float64), ((2, 4), np.uint8)])
def test_aligned_zeros(shape, dtype):
    for _ in range(5):  # numpy's own allocations are 16-byte aligned: some of these would not be
        a = bb.aligned_zeros(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
        assert a.ctypes.data % bb.ALIGNMENT == 0 and not a.any()


def test_numba_frames_are_aligned_for_tensorflow():
    pytest.importorskip("numba")
    for seed in range(5):
        frames = generate(3, 4, rng=seed, engine="numba")
        assert frames.flags.c_contiguous and frames.ctypes.data % bb.ALIGNMENT == 0
