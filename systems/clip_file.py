"""The user's own clips from a NumPy file: the training data beside the simulator's.

Clips `(N, T, H, W[, C])`, C = 1 or 3, or with `time_major` `(T, N, H, W[, C])`, uint8 0-255 or
float in [0, 1], in a `.npy` (never read whole) or an `.npz` of one array, never unpickled. The
other layout is hinted only where it would pass: 20 clips of 10000 frames is a fair file too.
"""

import hashlib
import os
import zipfile

import numpy as np

from model.cli import UsageError, first_line, progress

SIDE_STEP = 4  # the encoder halves each side twice: H and W are multiples of this
CHUNK = 1 << 24  # bytes per read in `Clips.verify`, a multiple of every itemsize
BAR_BYTES = 500 * 2**20  # `Clips.verify` shows a progress bar for data over this size


class Clips:
    """The clips of one file, as stored: `shape` is `(N, T, H, W, C)` whatever the layout."""

    def __init__(self, path, array, time_major):
        self.path, self.time_major, self.dtype = path, time_major, str(array.dtype)
        self._array = array  # a .npy's memory map or an .npz's array: (N, T, ...) or (T, N, ...)
        self._fd = os.open(path, os.O_RDONLY) if isinstance(array, np.memmap) else None
        self._fingerprint = None
        self.frame_shape = (*array.shape[2:4], *(array.shape[4:] or (1,)))  # (H, W, C)
        self.shape = (*(array.shape[1::-1] if time_major else array.shape[:2]), *self.frame_shape)

    def __len__(self):
        return self.shape[0]

    def window(self, clip_indices, starts, length):
        """Frames `starts .. starts + length - 1` of clips `clip_indices` (both `(B,)`): float32
        `(B, length, H, W, C)` in [0, 1]."""
        clip = np.asarray(clip_indices)[:, None]
        time = np.asarray(starts)[:, None] + np.arange(length)  # (B, length)
        index = np.broadcast_arrays(*((time, clip) if self.time_major else (clip, time)))
        frames = (self._array[tuple(index)] if self._fd is None else
                  self._read(np.ravel_multi_index(index, self._array.shape[:2])))
        scale = 255 if frames.dtype == np.uint8 else 1
        return np.divide(frames.reshape(*time.shape, *self.frame_shape), scale, dtype=np.float32)

    def _read(self, positions):
        """The stored frames at flat `positions` of the first two axes, by plain reads: frames
        read through a memory map would stay in this process's resident memory."""
        size = self._array[0, 0].nbytes
        data = b"".join(os.pread(self._fd, size, self._array.offset + int(p) * size)
                        for p in positions.ravel())
        return np.frombuffer(data, self._array.dtype).reshape(*positions.shape, -1)

    def verify(self):
        """The SHA-256 hex digest of the dtype, stored shape and order, and data bytes, computed
        once, in one chunked pass of plain reads that also checks float data lie in [0, 1]."""
        if self._fingerprint is None:
            array, total = self._array, self._array.nbytes
            digest = hashlib.sha256(repr((array.dtype.str, array.shape, np.isfortran(array)))
                                    .encode())
            data = array.ravel(order="K").view(np.uint8) if self._fd is None else None
            with progress(total=total, unit="B", unit_scale=True, desc=f"checking {self.path}",
                          disable=total <= BAR_BYTES) as bar:
                for start in range(0, total, CHUNK):
                    chunk = (data[start : start + CHUNK] if data is not None else
                             os.pread(self._fd, min(CHUNK, total - start), array.offset + start))
                    digest.update(chunk)
                    if array.dtype.kind == "f":
                        self._check_range(np.frombuffer(chunk, array.dtype))
                    bar.update(len(chunk))
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def _check_range(self, values):
        low, high = values.min(), values.max()  # NaN where any is NaN
        if not (low >= 0 and high <= 1):
            found = "NaN" if np.isnan(low) else f"{low if low < 0 else high:g}"
            raise UsageError(f"{self.path}: float clips must lie in [0, 1], found {found}; "
                             "scale them, or store uint8 0-255")

    def describe(self):
        """What a run records of its data: path, shape, dtype, layout and fingerprint."""
        return {"path": os.fspath(self.path), "shape": list(self.shape), "dtype": self.dtype,
                "layout": "time_major" if self.time_major else "clips_first",
                "fingerprint": self.verify()}


def open_clips(path, time_major=False, seq_length=2):
    """Open the clips of a `.npy` or `.npz`, T at least `seq_length`; raises `UsageError`."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):  # an .npz is a zip
        raise UsageError(f"{path} is not a NumPy file (.npy or .npz)")
    array = _npy(path) if magic == b"\x93NUMPY" else _npz_array(path)
    _check(path, array.shape, array.dtype, time_major, seq_length)
    return Clips(path, array, time_major)


def held_out(n, holdout):
    """How many of `n` clips are held out: the last `holdout` fraction, rounded, at least 1."""
    if not 0 < holdout < 1:
        raise UsageError(f"--holdout must be in (0, 1), got {holdout}")
    k = max(1, round(n * holdout))
    if k >= n:
        raise UsageError(f"--holdout {holdout} leaves none of the {n} clips for training")
    return k


def training_batch(clips, rng, batch_size, seq_length, holdout):
    """`batch_size` windows of `seq_length` frames, each from a random training clip at a random
    start, drawn from the `np.random.Generator` `rng` alone: float32 `(B, T, H, W, C)`."""
    n, t = clips.shape[:2]
    clip = rng.integers(0, n - held_out(n, holdout), batch_size)
    start = rng.integers(0, t - seq_length + 1, batch_size)
    return clips.window(clip, start, seq_length)


def held_out_clips(clips, holdout, count=None, length=None):
    """The first `count` (default all) held-out clips, frames `0 .. length - 1` (default all T):
    float32 `(count, length, H, W, C)`."""
    n, t = clips.shape[:2]
    k = held_out(n, holdout)
    count, length = k if count is None else min(count, k), t if length is None else length
    if length > t:
        raise UsageError(f"{clips.path}: clips of {t} frames, fewer than {length}")
    return clips.window(np.arange(n - k, n - k + count), np.zeros(count, int), length)


def frame_size_problem(h, w):
    """Why frames of `h x w` do not suit the networks, naming the nearest sizes that do, or None."""
    if min(h, w) > 0 and h % SIDE_STEP == w % SIDE_STEP == 0:
        return None
    down = [max(SIDE_STEP, s // SIDE_STEP * SIDE_STEP) for s in (h, w)]
    up = [max(SIDE_STEP, -(-s // SIDE_STEP) * SIDE_STEP) for s in (h, w)]
    near = " or ".join(dict.fromkeys(f"{a}x{b}" for a, b in (down, up)))
    return f"frames of {h}x{w} (H x W), but each side must be a multiple of {SIDE_STEP}: use {near}"


def _npy(path):
    """A `.npy`'s memory map, if its data are whole, C-ordered and of no Python objects."""
    with open(path, "rb") as f:
        try:
            major, _ = np.lib.format.read_magic(f)
            shape, fortran, dtype = (np.lib.format.read_array_header_1_0 if major == 1 else
                                     np.lib.format.read_array_header_2_0)(f)
        except ValueError as error:
            raise UsageError(f"{path}: unreadable .npy header ({first_line(error)})") from None
        need, have = int(np.prod(shape)) * dtype.itemsize, os.path.getsize(path) - f.tell()
    if dtype.hasobject:
        raise UsageError(f"{path} holds Python objects (a pickled array); save uint8 or floats")
    if fortran:
        raise UsageError(f"{path} is stored in Fortran order; save np.ascontiguousarray(clips)")
    if have < need:
        raise UsageError(f"{path} is truncated: {have:,} of its {need:,} bytes of data")
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _npz_array(path):
    try:
        with np.load(path, allow_pickle=False) as archive:
            if len(archive.files) != 1:
                raise UsageError(f"{path} holds {len(archive.files)} arrays, not exactly one")
            return archive[archive.files[0]]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise UsageError(f"{path}: unreadable .npz ({first_line(error)})") from None


def _check(path, shape, dtype, time_major, seq_length):
    """Raise `UsageError` for the first thing wrong with clips of `shape` and `dtype`."""
    if dtype != np.uint8 and dtype.kind != "f":
        raise UsageError(f"{path}: dtype {dtype}; clips must be uint8 (0-255) or float in [0, 1]")
    if len(shape) not in (4, 5):
        layout = "(T, N, H, W[, C]) (--time_major)" if time_major else "(N, T, H, W[, C])"
        raise UsageError(f"{path}: shape {shape}, but clips are {layout}")
    if len(shape) == 5 and shape[4] not in (1, 3):
        raise UsageError(f"{path}: {shape[4]} channels per frame; clips have 1 (gray) or 3 (RGB)")
    n_t = shape[1::-1] if time_major else shape[:2]
    problem = _count_problem(*n_t, seq_length)
    if problem and not _count_problem(*n_t[::-1], seq_length):
        problem += ("; if it is stored clips first, drop --time_major" if time_major else
                    "; if it is stored time first (T, N, ...), pass --time_major")
    problem = problem or frame_size_problem(*shape[2:4])
    if problem:
        raise UsageError(f"{path}: {problem}")


def _count_problem(n, t, seq_length):
    """What is wrong with `n` clips of `t` frames, or None."""
    if n < 2:
        return f"{n} clip{'s' * (n != 1)}, but at least 2 are needed (1 is held out)"
    if t < seq_length:
        return f"clips of {t} frames, fewer than --seq_length {seq_length}"
