"""The simulator's physics, placement check and painting in NumPy, vectorised over the batch:
the reference the compiled loops of `systems.bouncing_balls` are tested against."""

import numpy as np

from systems.bouncing_balls import BOX, DRAG, GRAVITY, SUBSTEPS


def trajectories(x, v, seq_length, radius, friction=False):
    """Positions and velocities `(B, T, N, 2)` from start positions and velocities `(B, N, 2)`."""
    x, v = np.array(x, np.float64), np.array(v, np.float64)
    pos = np.empty((x.shape[0], seq_length, *x.shape[1:]))
    vel = np.empty_like(pos)
    for t in range(seq_length):
        pos[:, t], vel[:, t] = x, v
        for _ in range(SUBSTEPS):
            x, v = _substep(x, v, radius, friction)
    return pos, vel


def _substep(x, v, radius, friction):
    x = x + v / SUBSTEPS
    if friction:  # gravity, then drag
        v[..., 1] += GRAVITY * (x[..., 1] + radius < BOX)
        v = v * (1.0 - DRAG)
    v = np.where(x - radius < 0.0, np.abs(v), v)
    v = np.where(x + radius > BOX, -np.abs(v), v)
    for a, b in zip(*np.tril_indices(x.shape[1], k=-1)):  # (1, 0), (2, 0), (2, 1), ...
        d = x[:, a] - x[:, b]  # (B, 2)
        dist = np.linalg.norm(d, axis=-1, keepdims=True)
        n = d / np.maximum(dist, 1e-12)
        closing = np.sum((v[:, a] - v[:, b]) * n, axis=-1, keepdims=True)
        dv = np.where((dist < 2 * radius) & (closing < 0), closing * n, 0.0)
        v[:, a] -= dv
        v[:, b] += dv
    return x, v


def valid_placement(x, radius):
    """`x` is `(..., N, 2)`; True where every ball is inside the box and apart from the others."""
    inside = np.all((x - radius >= 0) & (x + radius <= BOX), axis=(-2, -1))
    gaps = np.linalg.norm(x[..., :, None, :] - x[..., None, :, :], axis=-1)
    gaps += np.eye(x.shape[-2]) * 2 * BOX
    return inside & np.all(gaps >= 2 * radius, axis=(-2, -1))


def render(pos, vel, size, radius):
    """Paint `(B, T, N, 2)` positions and velocities as `(B, T, size, size, 3)` frames."""
    centres = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(BOX / size)
    p = pos.astype(np.float32)[..., None]
    dx2 = np.square(centres - p[..., 0, :]) / np.float32(radius**2)  # (B, T, N, W)
    dy2 = np.square(centres - p[..., 1, :]) / np.float32(radius**2)  # (B, T, N, H)
    d4 = np.square(dy2[..., :, None] + dx2[..., None, :])  # (B, T, N, H, W)
    mass = np.exp(-np.square(d4))
    shade = np.stack([vel[..., 0] + 0.5, np.ones_like(vel[..., 0]), vel[..., 1] + 0.5], -1)
    frames = np.matmul(  # sum over balls of mass * shade, as (B, T, H * W, N) @ (B, T, N, 3)
        mass.reshape(*mass.shape[:3], -1).swapaxes(-1, -2), shade.astype(np.float32)
    ).reshape(*mass.shape[:2], size, size, 3)
    return np.clip(frames, 0.0, 1.0, out=frames)
