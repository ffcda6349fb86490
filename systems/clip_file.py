"""The user's own clips from a NumPy file: the training data beside the simulator's.

A file holds clips `(N, T, H, W)` (one channel) or `(N, T, H, W, C)` with C = 1 or 3, uint8
(0-255, divided by 255 when read) or floats in [0, 1]: a `.npy`, never read whole (memory-
mapped for its shape, its frames read as needed), or an `.npz` of exactly one array, read
whole; nothing is ever unpickled. With `time_major` it is stored
time first, `(T, N, H, W[, C])` (Moving MNIST's `mnist_test_seq.npy`: 20 x 10000 x 64 x 64),
and read through that layout as it lies. Each bad file is one `UsageError` line.

A shape does not always tell the layout (20 clips of 10000 frames is a fair file), so the other
layout is suggested only where the check on N or T fails and would pass the other way round.
The last `holdout` fraction of the clips, by index, is held out of training.
"""

import hashlib
import os
import zipfile

import numpy as np

from model.cli import UsageError, first_line, progress

CHANNELS = (1, 3)  # gray or RGB
SIDE_STEP = 4  # the encoder halves each side twice: H and W are multiples of this
CHUNK = 1 << 24  # bytes per read in `Clips.verify`, a multiple of every itemsize
BAR_BYTES = 500 * 2**20  # `Clips.verify` shows a progress bar for data over this size


class Clips:
    """The clips of one file, read in the layout they are stored in.

    Attributes:
        path: The file, as given.
        time_major: Stored `(T, N, ...)` rather than `(N, T, ...)`.
        shape: `(N, T, H, W, C)`, whatever the layout; `len(clips)` is N.
        dtype: The stored dtype's name: "uint8" or a float type.
    """

    def __init__(self, path, array, time_major, offset=None):
        self.path, self.time_major = path, time_major
        self._array = array  # as stored: (N, T, H, W[, C]) or (T, N, H, W[, C])
        self._offset = offset  # where a .npy's data begins; None for an .npz's in-memory array
        self._fd = None if offset is None else os.open(path, os.O_RDONLY)
        self._fingerprint = None

    @property
    def frame_shape(self):
        """`(H, W, C)`."""
        h, w, *c = self._array.shape[2:]
        return (h, w, *(c or [1]))

    @property
    def shape(self):
        first, second = self._array.shape[:2]
        return ((second, first) if self.time_major else (first, second)) + self.frame_shape

    @property
    def dtype(self):
        return str(self._array.dtype)

    def __len__(self):
        return self.shape[0]

    def window(self, clip_indices, starts, length):
        """Frames `starts .. starts + length - 1` of clips `clip_indices` (both `(B,)`): float32
        `(B, length, H, W, C)` in [0, 1]."""
        clip = np.asarray(clip_indices)[:, None]
        time = np.asarray(starts)[:, None] + np.arange(length)  # (B, length)
        index = np.broadcast_arrays(*((time, clip) if self.time_major else (clip, time)))
        if self._offset is None:
            frames = self._array[tuple(index)]
        else:
            frames = self._read(np.ravel_multi_index(index, self._array.shape[:2]))
        frames = frames.reshape(*time.shape, *self.frame_shape)
        if frames.dtype == np.uint8:
            return np.divide(frames, np.float32(255), dtype=np.float32)
        return frames.astype(np.float32, copy=False)

    def _read(self, positions):
        """The stored frames at flat `positions` of the first two axes, by plain reads: frames
        read through the memory map would stay in this process's resident memory, up to the
        whole file (`bench/benchmark.py --parts data_memory`)."""
        size = int(np.prod(self._array.shape[2:])) * self._array.dtype.itemsize
        data = b"".join(os.pread(self._fd, size, self._offset + int(p) * size)
                        for p in positions.ravel())
        return np.frombuffer(data, self._array.dtype).reshape(*positions.shape, -1)

    def verify(self):
        """The content fingerprint, a SHA-256 hex digest of the dtype, the stored shape and order,
        and the data bytes (a `.npy` and an `.npz` of one array agree), read in one chunked pass
        of plain reads, so resident memory does not grow with the file; float data is checked
        on the way for NaN and values outside [0, 1]. Computed once. Raises `UsageError`."""
        if self._fingerprint is None:
            stored = (self._array.dtype.str, self._array.shape, np.isfortran(self._array))
            digest = hashlib.sha256(repr(stored).encode())
            size = self._array.nbytes
            with progress(total=size, unit="B", unit_scale=True, desc=f"checking {self.path}",
                          disable=size <= BAR_BYTES) as bar:
                for chunk in self._chunks():
                    digest.update(chunk)
                    self._check_values(chunk)
                    bar.update(len(chunk))
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def describe(self):
        """What a run records of its data: path, shape `(N, T, H, W, C)`, dtype, layout, and
        fingerprint (`verify`)."""
        return {"path": os.fspath(self.path), "shape": list(self.shape), "dtype": self.dtype,
                "layout": "time_major" if self.time_major else "clips_first",
                "fingerprint": self.verify()}

    def _chunks(self):
        """The data bytes as stored, `CHUNK` at a time."""
        if self._offset is None:
            data = self._array.ravel(order="K").view(np.uint8)
            yield from (data[i : i + CHUNK] for i in range(0, data.size, CHUNK))
            return
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            for start in range(0, self._array.nbytes, CHUNK):
                yield f.read(min(CHUNK, self._array.nbytes - start))

    def _check_values(self, chunk):
        if self._array.dtype.kind == "f":
            values = np.frombuffer(chunk, self._array.dtype)
            low, high = values.min(), values.max()
            if not (low >= 0 and high <= 1):  # NaN fails both
                bad = low if low < 0 else high
                found = "NaN" if np.isnan(low) or np.isnan(high) else f"{bad:g}"
                raise UsageError(f"{self.path}: float clips must lie in [0, 1], found {found}; "
                                 "scale them, or store uint8 0-255")


def open_clips(path, time_major=False, seq_length=2):
    """Open a `.npy` (never read whole) or an `.npz` of one array of clips whose T is at least
    `seq_length`. Raises `UsageError`, one line naming `path` and the problem."""
    if _magic(path) == b"\x93NUMPY":
        shape, dtype, offset = _npy_header(path)
        _check(path, shape, dtype, time_major, seq_length)
        return Clips(path, np.load(path, mmap_mode="r", allow_pickle=False), time_major, offset)
    array = _npz_array(path)
    _check(path, array.shape, array.dtype, time_major, seq_length)
    return Clips(path, array, time_major)


def held_out(n, holdout):
    """How many of `n` clips are held out: the last `holdout` fraction by index, rounded, at
    least 1 (indices `n - k .. n - 1`), leaving at least 1 for training. Raises `UsageError`."""
    if not 0 < holdout < 1:
        raise UsageError(f"--holdout must be in (0, 1), got {holdout}")
    k = max(1, round(n * holdout))
    if k >= n:
        raise UsageError(f"--holdout {holdout} holds out all {n} clips; at least 1 must remain "
                         "for training")
    return k


def training_batch(clips, rng, batch_size, seq_length, holdout):
    """`batch_size` windows of `seq_length` consecutive frames, each from a random training clip
    (never a held-out one) at a random start, drawn from the `np.random.Generator` `rng` alone:
    float32 `(batch_size, seq_length, H, W, C)`."""
    n, t = clips.shape[:2]
    _check_length(clips, seq_length)
    clip = rng.integers(0, n - held_out(n, holdout), batch_size)
    start = rng.integers(0, t - seq_length + 1, batch_size)
    return clips.window(clip, start, seq_length)


def held_out_clips(clips, holdout, count=None, length=None):
    """The first `count` (default all) held-out clips, frames `0 .. length - 1` (default all T):
    float32 `(count, length, H, W, C)`. Reads only those frames."""
    n, t = clips.shape[:2]
    k = held_out(n, holdout)
    count, length = k if count is None else min(count, k), t if length is None else length
    _check_length(clips, length)
    return clips.window(np.arange(n - k, n - k + count), np.zeros(count, int), length)


def frame_size_problem(h, w):
    """Why frames of `h x w` do not suit the networks, naming the nearest sizes that do; None
    where each side is a positive multiple of `SIDE_STEP`."""
    if h > 0 and w > 0 and h % SIDE_STEP == 0 and w % SIDE_STEP == 0:
        return None
    down = [max(SIDE_STEP, s // SIDE_STEP * SIDE_STEP) for s in (h, w)]
    up = [max(SIDE_STEP, -(-s // SIDE_STEP) * SIDE_STEP) for s in (h, w)]
    sizes = " or ".join(dict.fromkeys(f"{a}x{b}" for a, b in (down, up)))
    return (f"frames of {h}x{w} (H x W), but each side must be a multiple of {SIDE_STEP}: "
            f"use {sizes}")


def _check_length(clips, length):
    if length > clips.shape[1]:
        raise UsageError(f"{clips.path}: clips of {clips.shape[1]} frames, fewer than {length}")


def _magic(path):
    """The first 6 bytes of `path`; raises `UsageError` unless it is a readable NumPy file."""
    if os.path.isdir(path):
        raise UsageError(f"{path} is a folder, not a NumPy file")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):  # an .npz is a zip
        raise UsageError(f"{path} is not a NumPy file (.npy or .npz)")
    return magic


def _npy_header(path):
    """`(shape, dtype, offset of the data)` from a `.npy`'s header; a truncated file raises
    `UsageError`."""
    with open(path, "rb") as f:
        try:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if major == 1 else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
        except ValueError as error:
            raise UsageError(f"{path}: unreadable .npy header ({first_line(error)})") from None
        offset = f.tell()
    if fortran:
        raise UsageError(f"{path} is stored in Fortran order; save np.ascontiguousarray(clips)")
    need, have = int(np.prod(shape)) * dtype.itemsize, os.path.getsize(path) - offset
    if not dtype.hasobject and have < need:
        raise UsageError(f"{path} is truncated: its header says {need:,} bytes of data, it has "
                         f"{have:,}")
    return shape, dtype, offset


def _npz_array(path):
    """The one array of an `.npz`, read whole."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if len(archive.files) != 1:
                raise UsageError(f"{path} holds {len(archive.files)} arrays, not exactly one")
            return archive[archive.files[0]]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise UsageError(f"{path}: unreadable .npz ({first_line(error)})") from None


def _check(path, shape, dtype, time_major, seq_length):
    """Raise `UsageError` for the first thing wrong with clips of `shape` and `dtype`."""
    if dtype.hasobject:
        raise UsageError(f"{path} holds Python objects (a pickled array), never loaded here; "
                         "save uint8 or float clips")
    if dtype != np.uint8 and dtype.kind != "f":
        raise UsageError(f"{path}: dtype {dtype}; clips must be uint8 (0-255) or float in [0, 1]")
    if len(shape) not in (4, 5):
        layout = "(T, N, H, W[, C]) (--time_major)" if time_major else "(N, T, H, W[, C])"
        raise UsageError(f"{path}: shape {shape}, but clips are {layout}")
    if len(shape) == 5 and shape[4] not in CHANNELS:
        raise UsageError(f"{path}: {shape[4]} channels per frame; clips have 1 (gray) or 3 (RGB)")
    problem = _count_problem(*(shape[1::-1] if time_major else shape[:2]), seq_length)
    if problem and not _count_problem(*(shape[:2] if time_major else shape[1::-1]), seq_length):
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
    return None
