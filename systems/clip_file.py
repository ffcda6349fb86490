"""A user's clips from a NumPy file: a source of clips beside the simulator
(`bouncing_balls.Balls`), with the same interface.

Clips `(N, T, H, W[, C])`, C = 1 or 3, or stored time first `(T, N, H, W[, C])`, uint8 0-255 or
float in [0, 1], in a `.npy` (never read whole) or a small `.npz` of one array, never unpickled.
Which of the first two axes is time is measured, not trusted (`measure_layout`). The last
`held_out_count` clips are never trained on: videos, evaluation and prediction use them.
"""

import contextlib
import hashlib
import os
import zipfile

import numpy as np

from systems.errors import DataError

SIDE_STEP = 4  # the encoder halves each side twice: H and W are multiples of this
CHUNK = 1 << 24  # bytes per read in `Clips.verify`, rounded down to whole frames
NPZ_LIMIT = 500 * 2**20  # an .npz is read whole: larger ones are refused
LAYOUT_SAMPLES = 32  # neighbouring frame pairs read along each axis to measure the layout
CLEAR = 0.6  # the layout is clear where one axis's neighbours differ this much less
LAYOUTS = {False: "clips first (N, T, ...)", True: "time first (T, N, ...)"}


class Clips:
    """The clips of one file: `shape` is `(N, T, H, W, C)` whatever the stored layout.

    Args:
        path: The file.
        array: Its memory map (`.npy`) or array (`.npz`), `(N, T, ...)` or `(T, N, ...)`.
        time_major: Whether the stored first axis is time.
        holdout: The share of clips held out of training, the last by index.
    """

    original = False  # not the 2016 original's data: its graphs' habits do not apply

    def __init__(self, path, array, time_major, holdout):
        self.path, self.time_major, self.dtype = path, time_major, str(array.dtype)
        self._array = array
        self._fd = os.open(path, os.O_RDONLY) if isinstance(array, np.memmap) else None
        self._fingerprint = self._mean = None
        self.frame_shape = (*array.shape[2:4], *(array.shape[4:] or (1,)))  # (H, W, C)
        self.shape = (*(array.shape[1::-1] if time_major else array.shape[:2]), *self.frame_shape)
        self.held_out_count = held_out_count(self.shape[0], holdout)
        self.frames = self.shape[1]  # per clip

    def check_evaluable(self):
        """Raise `DataError` unless at least 2 clips are held out, as evaluation needs: what
        training accepts, evaluation must be able to score."""
        n = self.shape[0]
        if self.held_out_count < 2:
            fix = f"--holdout {np.ceil(150 / n) / 100:g} or more" if n > 2 else "at least 3 clips"
            raise DataError(f"{self.path}: 1 of its {n} clips is held out, but evaluation needs "
                            f"2: use {fix}")

    def batch(self, seed, step, batch_size, length):
        """Training step `step`'s `batch_size` windows of `length` frames, each from a random
        training clip at a random start: float32 `(B, length, H, W, C)`, a function of
        `(seed, step)` alone."""
        rng = np.random.default_rng([seed, step])
        clip = rng.integers(0, self.shape[0] - self.held_out_count, batch_size)
        start = rng.integers(0, self.frames - length + 1, batch_size)
        return self.window(clip, start, length)

    def held_out(self, count, length, seed=None, batch_size=None):
        """Yield the first `count` held-out clips, frames `0 .. length - 1`, in batches of at
        most `batch_size` (default: one batch); `seed` is unused (the simulator's)."""
        if count > self.held_out_count or length > self.frames:
            raise DataError(f"{self.path} holds out {self.held_out_count} clips of "
                            f"{self.frames} frames, not {count} of {length}")
        first = self.shape[0] - self.held_out_count
        for start in range(0, count, batch_size or count):
            index = first + np.arange(start, min(count, start + (batch_size or count)))
            yield self.window(index, np.zeros(len(index), int), length)

    def window(self, clip_indices, starts, length):
        """Frames `starts .. starts + length - 1` of clips `clip_indices` (both `(B,)`): float32
        `(B, length, H, W, C)` in [0, 1]."""
        clip = np.asarray(clip_indices)[:, None]
        time = np.asarray(starts)[:, None] + np.arange(length)  # (B, length)
        index = np.broadcast_arrays(*((time, clip) if self.time_major else (clip, time)))
        return self._frames(index).reshape(*time.shape, *self.frame_shape)

    def _frames(self, index):
        """The stored frames at `index` (two arrays over the first two stored axes), float32 in
        [0, 1], `(..., H * W * C)`. A `.npy`'s by plain reads: frames read through a memory map
        would stay in this process's resident memory."""
        if self._fd is None:
            frames = self._array[tuple(index)].reshape(*index[0].shape, -1)
        else:
            positions, size = np.ravel_multi_index(index, self._array.shape[:2]), self._frame_bytes
            data = b"".join(os.pread(self._fd, size, self._array.offset + int(p) * size)
                            for p in positions.ravel())
            frames = np.frombuffer(data, self._array.dtype).reshape(*positions.shape, -1)
        return to_unit(frames)

    @property
    def _frame_bytes(self):
        return int(np.prod(self.frame_shape)) * self._array.itemsize

    def verify(self, progress=None):
        """The SHA-256 hex digest of the dtype, stored shape and data, computed once, in one
        chunked pass of plain reads that also checks float data lie in [0, 1] and sums the
        training clips' frames (`mean_frame`). `progress(total)`: a bar for that pass."""
        if self._fingerprint is None:
            array, total = self._array, self._array.nbytes
            digest = hashlib.sha256(repr((array.dtype.str, array.shape, False)).encode())
            data = array.reshape(-1).view(np.uint8) if self._fd is None else None
            chunk = max(1, CHUNK // self._frame_bytes) * self._frame_bytes
            total_sum = np.zeros(int(np.prod(self.frame_shape)))
            bar = contextlib.closing(progress(total)) if progress else contextlib.nullcontext()
            with bar as bar:
                for start in range(0, total, chunk):
                    raw = (data[start : start + chunk] if data is not None else
                           os.pread(self._fd, min(chunk, total - start), array.offset + start))
                    digest.update(raw)
                    frames = np.frombuffer(raw, array.dtype).reshape(-1, total_sum.size)
                    if array.dtype.kind == "f":
                        self._check_range(frames)
                    total_sum += self._training_sum(frames, start // self._frame_bytes)
                    bar and bar.update(len(raw))
            trained = (self.shape[0] - self.held_out_count) * self.frames
            scale = 255 if array.dtype == np.uint8 else 1
            self._mean = (total_sum / trained / scale).astype(np.float32).reshape(self.frame_shape)
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def _training_sum(self, frames, first):
        """The sum of those of `frames` (stored frames `first, first + 1, ...`) in training
        clips."""
        position = first + np.arange(len(frames))
        clip = position % self._array.shape[1] if self.time_major else \
            position // self._array.shape[1]
        return frames[clip < self.shape[0] - self.held_out_count].sum(axis=0, dtype=np.float64)

    def mean_frame(self):
        """The training clips' mean frame, float32 `(H, W, C)`: a baseline prediction."""
        self.verify()
        return self._mean

    def _check_range(self, values):
        low, high = values.min(), values.max()  # NaN where any is NaN
        if not (low >= 0 and high <= 1):
            found = "NaN" if np.isnan(low) else f"{low if low < 0 else high:g}"
            raise DataError(f"{self.path}: float clips must lie in [0, 1], found {found}; "
                            "scale them, or store uint8 0-255")

    def describe(self):
        """What a run records of its data: path, shape, dtype, layout and fingerprint."""
        return {"path": os.path.abspath(self.path), "shape": list(self.shape),
                "dtype": self.dtype, "layout": "time_major" if self.time_major else "clips_first",
                "fingerprint": self.verify()}


def open_clips(path, time_major=None, holdout=0.1, seq_length=2, recorded=None):
    """`(clips, note)`: the clips of a `.npy` or `.npz`, T at least `seq_length`, the layout
    measured, and a line saying which layout and why. `time_major`: the user's flag (None:
    not given), refused where the data clearly say otherwise; `recorded`: the layout a run
    recorded ("time_major" or "clips_first"), which holds where the data cannot tell.
    Raises `DataError`."""
    array = read_array(path)
    _check(path, array.shape)
    layout, note = _choose_layout(path, array, time_major, recorded)
    n, t = array.shape[1::-1] if layout else array.shape[:2]
    if problem := _count_problem(n, t, seq_length) or frame_size_problem(*array.shape[2:4]):
        raise DataError(f"{path}: {problem}")
    return Clips(path, array, layout, holdout), note


def read_array(path):
    """The array of a `.npy` (memory-mapped) or of an `.npz` of one, never unpickled, uint8 or
    floats. Raises `DataError`."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):  # an .npz is a zip
        raise DataError(f"{path} is not a NumPy file (.npy or .npz)")
    array = _npy(path) if magic == b"\x93NUMPY" else _npz_array(path)
    if array.dtype != np.uint8 and array.dtype.kind != "f":
        raise DataError(f"{path}: dtype {array.dtype}; clips must be uint8 (0-255) or float in "
                        "[0, 1]")
    return array


def to_unit(frames):
    """uint8 frames (0-255) or float ones as float32 in [0, 1]."""
    return np.divide(frames, 255 if frames.dtype == np.uint8 else 1, dtype=np.float32)


def _choose_layout(path, array, flag, recorded):
    """`(time_major, note)` from the measured layout, the flag and the recorded layout."""
    measured, differences = measure_layout(array)
    said = f"neighbours along its first axis differ by {differences[0]:.3f}, along its second " \
           f"by {differences[1]:.3f}"
    given = {"--time_major": flag, "the run's recorded layout": None if recorded is None else
             recorded == "time_major"}
    for name, value in given.items():
        if value is not None and measured is not None and value != measured:
            raise DataError(f"{path}: {name} says {LAYOUTS[value]}, but the data are stored "
                            f"{LAYOUTS[measured]} ({said})")
    if measured is not None:
        return measured, f"{path}: read as {LAYOUTS[measured]}, measured ({said})"
    if None not in given.values() and flag != given["the run's recorded layout"]:
        raise DataError(f"{path}: --time_major says {LAYOUTS[flag]}, but the run recorded "
                        f"{LAYOUTS[not flag]} and the data do not show which axis is time "
                        f"({said}); drop --time_major")
    chosen = next((v for v in given.values() if v is not None), False)
    return chosen, (f"{path}: the data do not show which axis is time ({said}); read as "
                    f"{LAYOUTS[chosen]}" + (", as --time_major says" if flag else
                                            ", as the run recorded" if recorded else ""))


def measure_layout(array):
    """`(time_major, (d0, d1))`: the mean absolute difference between neighbouring frames along
    the first and along the second axis, on a fixed sample; time neighbours are far more alike
    than neighbouring clips. `time_major` is None where the two are too close to tell."""
    a0, a1 = array.shape[:2]
    rng = np.random.default_rng(0)
    scale = 255.0 if array.dtype == np.uint8 else 1.0
    differences = []
    for axis, size in enumerate((a0, a1)):
        if size < 2:
            differences.append(np.nan)
            continue
        i = rng.integers(0, a0 - (axis == 0), LAYOUT_SAMPLES)
        j = rng.integers(0, a1 - (axis == 1), LAYOUT_SAMPLES)
        pairs = [np.abs(np.asarray(array[x + (axis == 0), y + (axis == 1)], np.float32)
                        - np.asarray(array[x, y], np.float32)).mean() for x, y in zip(i, j)]
        differences.append(float(np.mean(pairs)) / scale)
    d0, d1 = differences
    if not (np.isfinite(d0) and np.isfinite(d1)) or max(d0, d1) < 1e-3:
        return None, (d0, d1)
    time_major = True if d0 < CLEAR * d1 else False if d1 < CLEAR * d0 else None
    return time_major, (d0, d1)


def held_out_count(n, holdout):
    """How many of `n` clips are held out: the last `holdout` fraction, rounded, at least 1."""
    if not 0 < holdout < 1:
        raise DataError(f"--holdout must be in (0, 1), got {holdout}")
    k = max(1, round(n * holdout))
    if k >= n:
        raise DataError(f"--holdout {holdout} leaves none of the {n} clips for training")
    return k


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
            raise DataError(f"{path}: unreadable .npy header ({_first_line(error)})") from None
        need, have = int(np.prod(shape)) * dtype.itemsize, os.path.getsize(path) - f.tell()
    if dtype.hasobject:
        raise DataError(f"{path} holds Python objects (a pickled array); save uint8 or floats")
    if fortran:
        raise DataError(f"{path} is stored in Fortran order; save np.ascontiguousarray(clips)")
    if have < need:
        raise DataError(f"{path} is truncated: {have:,} of its {need:,} bytes of data")
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _npz_array(path):
    """An `.npz`'s one array, read whole: refused over `NPZ_LIMIT` bytes uncompressed."""
    try:
        with zipfile.ZipFile(path) as archive:
            size = sum(info.file_size for info in archive.infolist())
        if size > NPZ_LIMIT:
            raise DataError(f"{path}: an .npz is read whole, and this one holds {size / 2**20:,.0f}"
                            f" MB; save the array as a .npy (np.save), which is read as needed")
        with np.load(path, allow_pickle=False) as archive:
            if len(archive.files) != 1:
                raise DataError(f"{path} holds {len(archive.files)} arrays, not exactly one")
            return np.ascontiguousarray(archive[archive.files[0]])
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"{path}: unreadable .npz ({_first_line(error)})") from None


def _check(path, shape):
    """Raise `DataError` for the first thing wrong with clips of `shape`."""
    if len(shape) not in (4, 5):
        raise DataError(f"{path}: shape {shape}, but clips are (N, T, H, W[, C]) or "
                        "(T, N, H, W[, C])")
    if len(shape) == 5 and shape[4] not in (1, 3):
        raise DataError(f"{path}: {shape[4]} channels per frame; clips have 1 (gray) or 3 (RGB)")


def _count_problem(n, t, seq_length):
    """What is wrong with `n` clips of `t` frames, or None."""
    if n < 2:
        return f"{n} clip{'s' * (n != 1)}, but at least 2 are needed (1 is held out)"
    if t < seq_length:
        return f"clips of {t} frames, fewer than --seq_length {seq_length}"


def _first_line(error):
    return str(error).splitlines()[0] if str(error) else type(error).__name__
