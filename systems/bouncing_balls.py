"""Sutskever's bouncing balls, vectorised over the batch, with velocity painted as colour.

Balls of equal mass move in a box of side `BOX`. Each frame records the
positions and velocities, then takes `SUBSTEPS` sub-steps: move by
`v / SUBSTEPS`, reflect at the walls, and resolve touching pairs with a 1-D
elastic collision along the line of centres. Frames are rendered as soft discs;
green is the ball, red and blue carry `vx + 0.5` and `vy + 0.5`.

Two engines compute the same clips: compiled kernels (`systems/_compiled.py`, used where
`numba` is installed, about 3x faster) and the NumPy code below, vectorised over the batch,
which is the reference the kernels are tested against. `engine="numpy"` picks it explicitly.
"""

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    from systems import _compiled
except ImportError:  # numba is not installed: the NumPy engine serves
    _compiled = None

BOX = 10.0  # side of the square box, in world units
RADIUS = 1.2  # default ball radius
SUBSTEPS = 2  # physics sub-steps per frame
SPEED = 0.5  # norm of the whole (balls x 2) initial velocity matrix
LOW = 2.0  # initial positions are drawn uniform in [LOW, BOX)
GRAVITY = 0.003  # friction option: downward pull on vy per sub-step
DRAG = 0.005  # friction option: fraction of velocity lost per sub-step
MAX_PLACEMENT_ROUNDS = 200  # rounds of redrawing the rejected rows before giving up
CANDIDATES = 64  # candidate placements drawn per rejected row and round
PARALLEL_MIN_SEQUENCES = 32  # the numba painter splits larger batches over threads, 32+ each
ALIGNMENT = 64  # bytes; the numba engine's frames start on such a boundary (see `aligned_zeros`)
HEX_DENSITY = math.pi / (2 * math.sqrt(3))  # densest packing of equal discs


def generate(batch_size, seq_length, size=32, num_balls=2, radius=RADIUS, friction=False, rng=None,
             engine=None):
    """Simulate and render a batch of bouncing-ball clips.

    Args:
        batch_size: Number of independent sequences `B`.
        seq_length: Frames per sequence `T`.
        size: Side of the square frame in pixels.
        num_balls: Balls per sequence.
        radius: Ball radius in world units (the box has side 10).
        friction: Add a slight downward pull and a 0.5 % drag per sub-step.
        rng: A `np.random.Generator`, an int seed, or `None` for fresh entropy.
        engine: "numba", "numpy", or None for numba where it is installed.

    Returns:
        float32 array `(B, T, size, size, 3)` in [0, 1]; from the numba engine, C-contiguous
        and starting on a 64-byte boundary (which TensorFlow needs to use it without a copy).

    Raises:
        ValueError: the request cannot be met (bad sizes, too many balls).
    """
    _check(batch_size, seq_length, size, num_balls, radius)
    rng = np.random.default_rng(rng)
    pos, vel = simulate(batch_size, seq_length, num_balls, radius, friction, rng, engine)
    return render(pos, vel, size, radius, engine)


def simulate(batch_size, seq_length, num_balls=2, radius=RADIUS, friction=False, rng=None,
             engine=None):
    """Trajectories only: positions and velocities, each `(B, T, N, 2)` as (x, y)."""
    _check(batch_size, seq_length, 1, num_balls, radius)
    rng = np.random.default_rng(rng)
    x = _initial_positions(batch_size, num_balls, radius, rng, engine)
    v = rng.standard_normal((batch_size, num_balls, 2))
    v *= SPEED / np.linalg.norm(v, axis=(1, 2), keepdims=True)
    return trajectories(x, v, seq_length, radius, friction, engine)


def trajectories(x, v, seq_length, radius=RADIUS, friction=False, engine=None):
    """Positions and velocities `(B, T, N, 2)` from start positions and velocities `(B, N, 2)`."""
    x, v = np.array(x, np.float64), np.array(v, np.float64)
    if _use_compiled(engine):
        return _compiled.simulate(x, v, seq_length, SUBSTEPS, BOX, radius, bool(friction),
                                  GRAVITY, DRAG)
    pos = np.empty((x.shape[0], seq_length, *x.shape[1:]))
    vel = np.empty_like(pos)
    pairs = np.triu_indices(x.shape[1], k=1)
    for t in range(seq_length):
        pos[:, t], vel[:, t] = x, v
        for _ in range(SUBSTEPS):
            x, v = _substep(x, v, radius, friction, pairs)
    return pos, vel


def render(pos, vel, size, radius, engine=None):
    """Paint `(B, T, N, 2)` positions and velocities as `(B, T, size, size, 3)` frames."""
    centres = (np.arange(size, dtype=np.float32) + 0.5) * (BOX / size)
    if _use_compiled(engine):
        return _render_compiled(pos, vel, centres, np.float32(radius**2))
    p = pos.astype(np.float32)[..., None]
    dx2 = np.square(centres - p[..., 0, :]) / radius**2  # (B, T, N, W)
    dy2 = np.square(centres - p[..., 1, :]) / radius**2  # (B, T, N, H)
    d4 = np.square(dy2[..., :, None] + dx2[..., None, :])  # (B, T, N, H, W)
    mass = np.exp(-np.square(d4))
    shade = np.stack([vel[..., 0] + 0.5, np.ones_like(vel[..., 0]), vel[..., 1] + 0.5], -1)
    frames = np.matmul(  # sum over balls of mass * shade, as (B, T, H * W, N) @ (B, T, N, 3)
        mass.reshape(*mass.shape[:3], -1).swapaxes(-1, -2), shade.astype(np.float32)
    ).reshape(*mass.shape[:2], size, size, 3)
    return np.clip(frames, 0.0, 1.0, out=frames)


def _render_compiled(pos, vel, centres, radius_sq):
    """The numba painter, on several threads for large batches (the kernel releases the GIL):
    at batch 16 one thread leaves the other core to the training step; at batch 256 on a GPU
    machine one thread would leave the GPU waiting."""
    frames = aligned_zeros((*pos.shape[:2], centres.size, centres.size, 3), np.float32)
    chunks = min(os.cpu_count() or 1, pos.shape[0] // PARALLEL_MIN_SEQUENCES)
    if chunks < 2:
        _compiled.render(pos, vel, centres, radius_sq, frames)
        return frames
    bounds = np.linspace(0, pos.shape[0], chunks + 1).astype(int)
    with ThreadPoolExecutor(chunks) as pool:
        list(pool.map(lambda a, b: _compiled.render(pos[a:b], vel[a:b], centres, radius_sq,
                                                    frames[a:b]), bounds[:-1], bounds[1:]))
    return frames


def aligned_zeros(shape, dtype):
    """`np.zeros(shape, dtype)` whose data starts on an `ALIGNMENT`-byte boundary."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    raw = np.zeros(size + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + size].view(dtype).reshape(shape)


def _use_compiled(engine):
    if engine not in (None, "numba", "numpy"):
        raise ValueError(f"engine must be 'numba', 'numpy' or None, got {engine!r}")
    if engine == "numba" and _compiled is None:
        raise ValueError("engine 'numba' needs the numba package: pip install numba")
    return engine != "numpy" and _compiled is not None


def _substep(x, v, radius, friction, pairs):
    x = x + v / SUBSTEPS
    if friction:
        above_floor = x[..., 1] + radius < BOX
        v = v * (1.0 - DRAG)
        v[..., 1] += GRAVITY * above_floor
    v = np.where(x - radius < 0.0, np.abs(v), v)
    v = np.where(x + radius > BOX, -np.abs(v), v)
    return x, _collide(x, v, radius, pairs)


def _collide(x, v, radius, pairs):
    """Equal-mass elastic collisions: approaching touching pairs swap their normal velocities."""
    for a, b in zip(*pairs):
        d = x[:, a] - x[:, b]  # (B, 2)
        dist = np.linalg.norm(d, axis=-1, keepdims=True)
        n = d / np.maximum(dist, 1e-12)
        closing = np.sum((v[:, a] - v[:, b]) * n, axis=-1, keepdims=True)
        hit = (dist < 2 * radius) & (closing < 0)
        dv = np.where(hit, closing * n, 0.0)
        v[:, a] -= dv
        v[:, b] += dv
    return v


def _initial_positions(batch_size, num_balls, radius, rng, engine=None):
    """Uniform positions in [LOW, BOX), each row's whole set redrawn until no ball touches a wall
    or another ball. Each round draws `CANDIDATES` sets per unfinished row and keeps the first
    valid one, which is the same distribution as redrawing one set at a time."""
    compiled = _use_compiled(engine)
    x = np.empty((batch_size, num_balls, 2))
    todo = np.arange(batch_size)
    for _ in range(MAX_PLACEMENT_ROUNDS):
        tries = rng.uniform(LOW, BOX, (todo.size, CANDIDATES, num_balls, 2))
        if compiled:
            valid = _compiled.valid_placement(tries, BOX, radius)  # (rows, CANDIDATES)
        else:
            valid = _valid_placement(tries, radius)
        found = valid.any(axis=1)
        x[todo[found]] = tries[found, valid[found].argmax(axis=1)]
        todo = todo[~found]
        if todo.size == 0:
            return x
    raise ValueError(
        f"could not place {num_balls} balls of radius {radius} without overlap in "
        f"{MAX_PLACEMENT_ROUNDS * CANDIDATES} tries; use fewer or smaller balls"
    )


def _valid_placement(x, radius):
    """`x` is `(..., N, 2)`; True where every ball is inside the box and apart from the others."""
    inside = np.all((x - radius >= 0) & (x + radius <= BOX), axis=(-2, -1))
    gaps = np.linalg.norm(x[..., :, None, :] - x[..., None, :, :], axis=-1)
    gaps += np.eye(x.shape[-2]) * 2 * BOX
    return inside & np.all(gaps >= 2 * radius, axis=(-2, -1))


def max_balls(radius):
    """An upper bound on how many balls of `radius` can start in the box without overlap.

    Centres lie in `[max(LOW, r), BOX - r]` on each axis, so the discs lie in a square of side
    `span + 2r`; no packing of equal discs beats the hexagonal density.
    """
    span = BOX - radius - max(LOW, radius)
    if span < 0:
        return 0
    return math.floor(HEX_DENSITY * (span + 2 * radius) ** 2 / (math.pi * radius**2))


def _check(batch_size, seq_length, size, num_balls, radius):
    for name, value in (("batch_size", batch_size), ("seq_length", seq_length), ("size", size)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(num_balls, (int, np.integer)) or num_balls < 1:
        raise ValueError(f"num_balls must be a positive integer, got {num_balls!r}")
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius!r}")
    if num_balls > max_balls(radius):
        raise ValueError(
            f"{num_balls} balls of radius {radius} do not fit in a box of side {BOX:g} "
            f"(at most {max_balls(radius)})"
        )
