"""Sutskever's bouncing balls, with velocity painted as colour; compiled loops (numba).

Balls of equal mass move in a box of side `BOX`. Each frame records the positions and
velocities, then takes `SUBSTEPS` sub-steps: move by `v / SUBSTEPS`, reflect at the walls, and
resolve touching pairs with a 1-D elastic collision along the line of centres. Frames are
rendered as soft discs `exp(-(d^2 / r^2)^4)`; green is the ball, red and blue carry `vx + 0.5`
and `vy + 0.5`. `tests/bouncing_balls_numpy.py` is the same in NumPy, the tests' reference."""

import functools

import numba
import numpy as np

BOX = 10.0  # side of the square box, in world units
RADIUS = 1.2  # default ball radius
SUBSTEPS = 2  # physics sub-steps per frame
SPEED = 0.5  # norm of the whole (balls x 2) initial velocity matrix
LOW = 2.0  # initial positions are drawn uniform in [LOW, BOX)
GRAVITY = 0.003  # friction option: downward pull on vy per sub-step
DRAG = 0.005  # friction option: fraction of velocity lost per sub-step
MAX_PLACEMENT_ROUNDS = 200  # rounds of redrawing the rejected sequences before giving up
CANDIDATES = 64  # candidate placements drawn per rejected sequence and round
RELIABLE = 30  # a ball count is accepted where all the rounds' tries fail for < 1 in e^30 sequences
RATE_SAMPLES = 100_000  # random placements that estimate how often one is valid
ZERO_MASS_BEYOND = np.float32(3.3)  # d^2 / r^2 beyond which exp(-(d^2 / r^2)^4) is 0 in float32


def generate(batch_size, seq_length, size=32, num_balls=2, radius=RADIUS, friction=False, rng=None):
    """Simulate and render `batch_size` independent clips `B` of `seq_length` frames `T`.

    Args:
        size: Side of the square frame in pixels.
        num_balls: Balls per sequence, at most `max_balls(radius)`.
        radius: Ball radius in world units (the box has side `BOX`).
        friction: Add a slight downward pull, then a 0.5 % drag, per sub-step.
        rng: A `np.random.Generator`, an int seed, or `None` for fresh entropy.

    Returns:
        float32 array `(B, T, size, size, 3)` in [0, 1].

    Raises:
        ValueError: the request cannot be met (bad sizes, too many balls).
    """
    _check(batch_size, seq_length, size, num_balls, radius)
    pos, vel = simulate(batch_size, seq_length, num_balls, radius, friction, rng)
    return render(pos, vel, size, radius)


def simulate(batch_size, seq_length, num_balls=2, radius=RADIUS, friction=False, rng=None):
    """Trajectories only: positions and velocities, each `(B, T, N, 2)` as (x, y)."""
    _check(batch_size, seq_length, 1, num_balls, radius)
    rng = np.random.default_rng(rng)
    x = _initial_positions(batch_size, num_balls, radius, rng)
    v = rng.standard_normal((batch_size, num_balls, 2))
    v *= SPEED / np.linalg.norm(v, axis=(1, 2), keepdims=True)
    return trajectories(x, v, seq_length, radius, friction)


def trajectories(x, v, seq_length, radius=RADIUS, friction=False):
    """Positions and velocities `(B, T, N, 2)` from start positions and velocities `(B, N, 2)`."""
    x, v = np.array(x, np.float64), np.array(v, np.float64)
    return _trajectories(x, v, seq_length, radius, bool(friction))


def render(pos, vel, size, radius):
    """Paint `(B, T, N, 2)` positions and velocities as `(B, T, size, size, 3)` frames."""
    centres = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(BOX / size)
    frames = np.zeros((*pos.shape[:2], size, size, 3), np.float32)
    _paint(pos, vel, centres, np.float32(radius**2), frames)
    return np.clip(frames, 0.0, 1.0, out=frames)


def _initial_positions(batch_size, num_balls, radius, rng):
    """Uniform positions in [LOW, BOX), redrawn per sequence until no ball touches a wall or
    another; `CANDIDATES` sets a round, the first valid one kept: as if drawn one at a time."""
    x = np.empty((batch_size, num_balls, 2))
    todo = np.arange(batch_size)
    for _ in range(MAX_PLACEMENT_ROUNDS):
        tries = rng.uniform(LOW, BOX, (todo.size, CANDIDATES, num_balls, 2))
        valid = _valid_placement(tries, radius)  # (rows, CANDIDATES)
        found = valid.any(axis=1)
        x[todo[found]] = tries[found, valid[found].argmax(axis=1)]
        todo = todo[~found]
        if todo.size == 0:
            return x
    raise ValueError(f"could not place {num_balls} balls of radius {radius} without overlap in "
                     f"{MAX_PLACEMENT_ROUNDS * CANDIDATES} tries")


@functools.lru_cache
def max_balls(radius=RADIUS, up_to=None):
    """The most balls of `radius` that `generate` places reliably (see `RELIABLE`), at most
    `up_to`. Sets grow ball by ball; those still valid at `n` give the rate for `n` (seed 0)."""
    rng = np.random.default_rng(0)
    sets = np.empty((RATE_SAMPLES, 0, 2))
    while up_to is None or sets.shape[1] < up_to:
        grown = np.concatenate([sets, rng.uniform(LOW, BOX, (len(sets), 1, 2))], axis=1)
        fits = _valid_placement(grown[:, None], radius)[:, 0]
        if fits.sum() * MAX_PLACEMENT_ROUNDS * CANDIDATES < RELIABLE * RATE_SAMPLES:
            break
        sets = grown[fits]
    return sets.shape[1]


def _check(batch_size, seq_length, size, num_balls, radius):
    for name, value in (("batch_size", batch_size), ("seq_length", seq_length), ("size", size),
                        ("num_balls", num_balls)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not radius > 0:
        raise ValueError(f"radius must be positive, got {radius!r}")
    fit = max_balls(radius, up_to=num_balls)
    if fit < num_balls:
        raise ValueError(f"{num_balls} balls of radius {radius} cannot be placed reliably in a "
                         f"box of side {BOX:g} (at most {fit})")


@numba.njit(cache=True, nogil=True)
def _trajectories(x, v, seq_length, radius, friction):
    """`trajectories`, updating `x, v` in place; the NumPy reference's float64 operations."""
    pos = np.empty((x.shape[0], seq_length, x.shape[1], 2))
    vel = np.empty_like(pos)
    for b, t in np.ndindex(pos.shape[:2]):
        pos[b, t], vel[b, t] = x[b], v[b]
        for _ in range(SUBSTEPS):
            _substep(x[b], v[b], radius, friction)
    return pos, vel


@numba.njit(cache=True, nogil=True)
def _substep(x, v, radius, friction):
    """One sub-step of `x, v` `(N, 2)`, in place; x and y are independent until the pairs."""
    for i in range(len(x)):
        for k in range(2):
            x[i, k] = x[i, k] + v[i, k] / SUBSTEPS
            if friction:  # gravity, then drag: the original's order
                if k == 1:
                    v[i, 1] += GRAVITY * (x[i, 1] + radius < BOX)
                v[i, k] = v[i, k] * (1.0 - DRAG)
            if x[i, k] - radius < 0.0:
                v[i, k] = abs(v[i, k])
            if x[i, k] + radius > BOX:
                v[i, k] = -abs(v[i, k])
    # the original's pair order (1, 0), (2, 0), (2, 1), ...; equal masses: an approaching
    # touching pair swaps normal velocities, each pair's before the next is tested
    for a in range(len(x)):
        for b in range(a):
            d0, d1 = x[a, 0] - x[b, 0], x[a, 1] - x[b, 1]
            dist = np.sqrt(d0 * d0 + d1 * d1)
            n0, n1 = d0 / max(dist, 1e-12), d1 / max(dist, 1e-12)
            closing = (v[a, 0] - v[b, 0]) * n0 + (v[a, 1] - v[b, 1]) * n1
            if dist < 2 * radius and closing < 0:
                v[a, 0] -= closing * n0
                v[a, 1] -= closing * n1
                v[b, 0] += closing * n0
                v[b, 1] += closing * n1


@numba.njit(cache=True, nogil=True)
def _valid_placement(x, radius):
    """`x` is `(R, C, N, 2)`; True where every ball is inside the box and apart from the others."""
    valid = np.ones(x.shape[:2], np.bool_)
    for r, c in np.ndindex(valid.shape):
        p = x[r, c]
        for i in range(p.shape[0]):
            for k in range(2):
                valid[r, c] &= (p[i, k] - radius >= 0) & (p[i, k] + radius <= BOX)
            for j in range(i + 1, p.shape[0]):
                d0, d1 = p[i, 0] - p[j, 0], p[i, 1] - p[j, 1]
                valid[r, c] &= np.sqrt(d0 * d0 + d1 * d1) >= 2 * radius
    return valid


@numba.njit(cache=True, nogil=True)
def _paint(pos, vel, centres, radius_sq, frames):
    """Add each ball's soft disc, in float32, to `frames` `(B, T, S, S, 3)`, visiting only the
    pixels where its mass can be nonzero; `centres` are the pixel centres in world units."""
    size = centres.shape[0]
    d2x = np.empty(size, np.float32)
    for b, t, n in np.ndindex(pos.shape[:3]):
        px, py = np.float32(pos[b, t, n, 0]), np.float32(pos[b, t, n, 1])
        red, blue = np.float32(vel[b, t, n, 0] + 0.5), np.float32(vel[b, t, n, 1] + 0.5)
        for w in range(size):
            d2x[w] = (centres[w] - px) * (centres[w] - px) / radius_sq
        for h in range(size):
            d2y = (centres[h] - py) * (centres[h] - py) / radius_sq
            if d2y > ZERO_MASS_BEYOND:
                continue
            for w in range(size):
                if d2x[w] <= ZERO_MASS_BEYOND:
                    d4 = (d2y + d2x[w]) * (d2y + d2x[w])
                    mass = np.exp(-(d4 * d4))
                    frames[b, t, h, w, 0] += mass * red
                    frames[b, t, h, w, 1] += mass
                    frames[b, t, h, w, 2] += mass * blue


class Balls:
    """The simulator as a source of clips (the interface of `clip_file.Clips`): training batches
    a function of `(seed, step)`; held-out clips, any number of any length, from their own seed."""

    frame_shape = (32, 32, 3)
    original = True  # the 2016 original's data: its graphs' habits apply
    frames = held_out_count = None  # clips of any length, as many as asked for
    MEAN_CLIPS = 1000  # simulated clips of 10 frames averaged by `mean_frame`

    def __init__(self, num_balls=2, friction=False):
        self.num_balls, self.friction, self._mean = num_balls, friction, None

    def _generate(self, count, length, rng):
        return generate(count, length, self.frame_shape[0], self.num_balls, friction=self.friction,
                        rng=rng)

    def batch(self, seed, step, batch_size, length):
        """Training step `step`'s clips, float32 `(batch_size, length, 32, 32, 3)`."""
        return self._generate(batch_size, length, np.random.default_rng([seed, step]))

    def held_out(self, count, length, seed, batch_size=None):
        """Yield `count` clips of `length` frames simulated from `seed` (an int or a sequence of
        them), in batches of at most `batch_size` (default: one batch), one stream throughout."""
        rng = np.random.default_rng(seed)
        for start in range(0, count, batch_size or count):
            yield self._generate(min(batch_size or count, count - start), length, rng)

    def mean_frame(self):
        """The mean frame of simulated clips, float32 `(32, 32, 3)`: a baseline prediction."""
        if self._mean is None:
            clips = self._generate(self.MEAN_CLIPS, 10, np.random.default_rng(0))
            self._mean = clips.mean(axis=(0, 1))
        return self._mean

    def describe(self):
        """What a run records of its data."""
        return {"source": "bouncing balls", "shape": [None, None, *self.frame_shape]}
