"""Numba kernels for `systems.bouncing_balls`: the same physics and painting as its NumPy code,
one ball and one pixel at a time, compiled. Importing this module needs `numba`.

The physics does the same float64 operations in the same order as the NumPy code, so it gives
the same trajectories bit for bit. The painting visits only the box of pixels around each ball
where its float32 mass `exp(-(d^2 / r^2)^4)` can be nonzero, and computes the masses with
`_masses`, an `exp` that the compiler vectorises, correct to float32 rounding; so it matches the
NumPy frames to float32 rounding.
"""

import numba
import numpy as np

# Beyond d^2 / r^2 = 3.2, (d^2 / r^2)^4 > 104.8 and exp(-104.8) rounds to 0 in float32.
_ZERO_MASS_BEYOND = np.float32(3.2)
# `_masses` takes d^2 / r^2 no larger than this: its mass is still 0 in float32 (exp(-118.6)),
# and the series below stays accurate.
_CLAMP = np.float32(3.3)


@numba.njit(cache=True, nogil=True)
def simulate(x, v, seq_length, substeps, box, radius, friction, gravity, drag):
    """Trajectories from start positions and velocities `x, v` `(B, N, 2)` (both updated in
    place): positions and velocities `(B, T, N, 2)`, recorded before each frame's sub-steps."""
    batch, balls = x.shape[0], x.shape[1]
    pos = np.empty((batch, seq_length, balls, 2))
    vel = np.empty((batch, seq_length, balls, 2))
    for b in range(batch):
        for t in range(seq_length):
            pos[b, t] = x[b]
            vel[b, t] = v[b]
            for _ in range(substeps):
                _substep(x[b], v[b], substeps, box, radius, friction, gravity, drag)
    return pos, vel


@numba.njit(cache=True, nogil=True, inline="always")
def _substep(x, v, substeps, box, radius, friction, gravity, drag):
    balls = x.shape[0]
    for i in range(balls):
        for k in range(2):
            x[i, k] = x[i, k] + v[i, k] / substeps
        if friction:
            above_floor = x[i, 1] + radius < box
            for k in range(2):
                v[i, k] = v[i, k] * (1.0 - drag)
            v[i, 1] += gravity * above_floor
        for k in range(2):
            if x[i, k] - radius < 0.0:
                v[i, k] = abs(v[i, k])
            if x[i, k] + radius > box:
                v[i, k] = -abs(v[i, k])
    for a in range(balls):
        for b in range(a + 1, balls):
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
def valid_placement(x, box, radius):
    """`x` is `(R, C, N, 2)`; True where every ball is inside the box and apart from the others
    (the same comparisons as the NumPy code)."""
    rows, candidates, balls = x.shape[0], x.shape[1], x.shape[2]
    valid = np.ones((rows, candidates), np.bool_)
    for r in range(rows):
        for c in range(candidates):
            p = x[r, c]
            ok = True
            for i in range(balls):
                for k in range(2):
                    ok &= (p[i, k] - radius >= 0) & (p[i, k] + radius <= box)
            for i in range(balls):
                for j in range(i + 1, balls):
                    d0, d1 = p[i, 0] - p[j, 0], p[i, 1] - p[j, 1]
                    ok &= np.sqrt(d0 * d0 + d1 * d1) >= 2 * radius
            valid[r, c] = ok
    return valid


@numba.njit(cache=True, nogil=True)
def render(pos, vel, centres, radius_sq, frames):
    """Paint positions and velocities `(B, T, N, 2)` into `frames` `(B, T, S, S, 3)` float32,
    all zeros on entry; `centres` are the float32 pixel centres in world units."""
    batch, steps, balls = pos.shape[0], pos.shape[1], pos.shape[2]
    size = centres.shape[0]
    dx2 = np.empty(size, np.float32)
    dy2 = np.empty(size, np.float32)
    powers = np.empty(size * size, np.float32)  # (d^2 / r^2)^4 over a ball's box, row by row
    mass = np.empty(size * size, np.float32)
    boxes = np.empty((balls, 4), np.int64)  # rows and columns each ball paints, [start, stop)
    for b in range(batch):
        for t in range(steps):
            frame = frames[b, t]
            for n in range(balls):
                px, py = np.float32(pos[b, t, n, 0]), np.float32(pos[b, t, n, 1])
                red = np.float32(vel[b, t, n, 0] + 0.5)
                blue = np.float32(vel[b, t, n, 1] + 0.5)
                for k in range(size):
                    dx2[k] = (centres[k] - px) ** 2 / radius_sq
                    dy2[k] = (centres[k] - py) ** 2 / radius_sq
                h0, h1 = _span(dy2)
                w0, w1 = _span(dx2)
                boxes[n] = h0, h1, w0, w1
                count = 0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        s = min(dy2[h] + dx2[w], _CLAMP)
                        s = s * s
                        powers[count] = s * s
                        count += 1
                _masses(powers, count, mass)
                count = 0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        frame[h, w, 0] += mass[count] * red
                        frame[h, w, 1] += mass[count]
                        frame[h, w, 2] += mass[count] * blue
                        count += 1
            for n in range(balls):  # clip where painted (clipping twice changes nothing)
                for h in range(boxes[n, 0], boxes[n, 1]):
                    for w in range(boxes[n, 2], boxes[n, 3]):
                        for c in range(3):
                            frame[h, w, c] = min(max(frame[h, w, c], np.float32(0.0)),
                                                 np.float32(1.0))


@numba.njit(cache=True, nogil=True)
def _masses(powers, count, out):
    """`out[i] = exp(-powers[i])` in float32 for `i < count`, `0 <= powers[i] <= 3.3^4`, as
    `(exp(-p / 1024))^1024`: a degree-7 series for the small argument, then 10 squarings, in
    float64 (relative error below 1e-9 before the rounding to float32). A plain loop of
    arithmetic, which the compiler vectorises; numba's `np.exp` calls the C library one value
    at a time."""
    for i in range(count):
        t = np.float64(powers[i]) * (-1.0 / 1024.0)
        p = 1.0 + t * (1.0 + t * (1.0 / 2 + t * (1.0 / 6 + t * (
            1.0 / 24 + t * (1.0 / 120 + t * (1.0 / 720 + t * (1.0 / 5040)))))))
        for _ in range(10):
            p = p * p
        out[i] = np.float32(p)


@numba.njit(cache=True, nogil=True, inline="always")
def _span(d2):
    """`[start, stop)` of the pixels with `d2 <= _ZERO_MASS_BEYOND` (`d2` is convex, so they are
    contiguous); an empty span where there are none."""
    start, stop = d2.shape[0], 0
    for k in range(d2.shape[0]):
        if d2[k] <= _ZERO_MASS_BEYOND:
            start = min(start, k)
            stop = k + 1
    return start, max(start, stop)
