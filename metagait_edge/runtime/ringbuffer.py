"""Single-writer / single-reader ring buffer of timestamped sample rows, safe across threads.

Storage is preallocated once; ``push`` copies one row into its slot and allocates nothing. Each slot
carries a sequence word in seqlock style: the writer stores ``2*seq + 1`` (odd: being written), then the
row and its timestamp, then ``2*seq + 2`` (even: complete), and only then advances ``head``. A reader
copies a range and accepts a slot only if its word equals ``2*seq + 2`` both before and after the copy,
so it never returns a row that the writer was overwriting meanwhile (a torn row). Slots the writer
overwrote before the reader got to them are *dropped* and counted, never silently skipped.

The writer overwrites the oldest samples when the buffer is full (a real-time source must never wait
for a slow consumer); how far the reader lagged shows up in ``dropped``.

Correctness relies on the interpreter ordering memory operations between threads, which CPython's GIL
provides (each numpy store completes before the next bytecode of another thread runs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """A consistent copy of consecutive samples ``first_seq .. first_seq + len - 1``."""

    data: np.ndarray  # [n, width], the buffer's dtype
    timestamps: np.ndarray  # [n] float64 seconds
    first_seq: int
    dropped: int = 0  # samples asked for that had already been overwritten

    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def seqs(self) -> np.ndarray:
        return np.arange(self.first_seq, self.first_seq + len(self), dtype=np.int64)

    @property
    def end_seq(self) -> int:
        """Sequence number after the last sample (the ``since`` argument for the next read)."""
        return self.first_seq + len(self)


class RingBuffer:
    """Preallocated ring of ``capacity`` rows of ``width`` values, one writer thread, one reader thread."""

    def __init__(self, capacity: int, width: int, dtype: np.dtype | type = np.float32) -> None:
        if int(capacity) < 1:
            raise ValueError(f"RingBuffer capacity must be >= 1, got {capacity!r}")
        if int(width) < 1:
            raise ValueError(f"RingBuffer width must be >= 1, got {width!r}")
        self.capacity = int(capacity)
        self.width = int(width)
        self._data = np.zeros((self.capacity, self.width), dtype=dtype)
        self._ts = np.zeros(self.capacity, dtype=np.float64)
        # 0 = never written; 2*seq+1 = seq being written; 2*seq+2 = seq complete.
        self._slot_seq = np.zeros(self.capacity, dtype=np.int64)
        self._head = 0  # number of samples ever pushed == next sequence number
        self._read_cursor = 0  # reader-side state for read_new()
        self.dropped = 0  # reader-side: samples lost to overwrite before read_new() got them

    # ----------------------------------------------------------------------------------- writer side
    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    @property
    def head(self) -> int:
        """Sequence number the next pushed sample will get (== samples pushed so far)."""
        return self._head

    def push(self, row: np.ndarray, timestamp: float) -> int:
        """Copy ``row`` (``width`` values) into the next slot; returns its sequence number.

        Allocation-free when ``row`` is an ndarray of the buffer's dtype: the copy goes straight into
        preallocated storage.
        """
        seq = self._head
        slot = seq % self.capacity
        self._slot_seq[slot] = 2 * seq + 1
        self._data[slot] = row
        self._ts[slot] = timestamp
        self._slot_seq[slot] = 2 * seq + 2
        self._head = seq + 1
        return seq

    # ----------------------------------------------------------------------------------- reader side
    def _read(self, start: int, stop: int) -> Window:
        """Consistent copy of ``[start, stop)`` (already clipped to what the buffer may hold)."""
        n = stop - start
        if n <= 0:
            return Window(np.empty((0, self.width), self._data.dtype), np.empty(0, np.float64), stop, 0)
        expected = np.arange(2 * start + 2, 2 * stop + 2, 2, dtype=np.int64)
        s0 = start % self.capacity
        if s0 + n <= self.capacity:  # contiguous: plain slice copies, the common case
            sl = slice(s0, s0 + n)
            before = self._slot_seq[sl].copy()
            data = self._data[sl].copy()
            ts = self._ts[sl].copy()
            after = self._slot_seq[sl]
        else:
            slots = (np.arange(start, stop, dtype=np.int64) % self.capacity)
            before = self._slot_seq[slots]
            data = self._data[slots]
            ts = self._ts[slots]
            after = self._slot_seq[slots]
        bad = np.flatnonzero((before != expected) | (after != expected))
        if bad.size:
            # The writer overwrites oldest first, so bad slots are a prefix; keep the clean suffix after
            # the last bad one so the window stays contiguous.
            keep = int(bad[-1]) + 1
            return Window(data[keep:], ts[keep:], start + keep, keep)
        return Window(data, ts, start, 0)

    def _clip(self, start: int, stop: int) -> tuple[int, int, int]:
        oldest = max(0, stop - self.capacity)
        lost = max(0, oldest - start)
        return max(start, oldest), stop, lost

    def latest(self, n: int) -> Window:
        """The newest ``n`` samples (fewer if fewer were pushed or some were overwritten mid-read)."""
        if n < 0:
            raise ValueError(f"latest(n): n must be >= 0, got {n}")
        head = self._head
        n = min(int(n), self.capacity, head)
        return self._read(head - n, head)

    def since(self, seq: int, max_n: int | None = None) -> Window:
        """Samples with sequence number >= ``seq`` (oldest first), at most ``max_n`` of them.

        ``Window.dropped`` counts those between ``seq`` and the first returned one that were already
        overwritten. Does not touch the ``read_new`` cursor.
        """
        head = self._head
        start, stop, lost = self._clip(max(0, int(seq)), head)
        if max_n is not None:
            stop = min(stop, start + int(max_n))
        w = self._read(start, stop)
        return Window(w.data, w.timestamps, w.first_seq, w.dropped + lost) if lost else w

    def read_new(self, max_n: int | None = None) -> Window:
        """Samples pushed since the previous ``read_new`` (the single reader's cursor); counts drops."""
        w = self.since(self._read_cursor, max_n)
        self.dropped += w.dropped
        self._read_cursor = w.end_seq
        return w

    def time_range(self, t0: float, t1: float) -> Window:
        """Samples with ``t0 <= timestamp < t1`` (timestamps must be pushed non-decreasing)."""
        head = self._head
        start, stop, _ = self._clip(0, head)
        if stop <= start:
            return self._read(stop, stop)
        seqs = np.arange(start, stop, dtype=np.int64)
        ts = self._ts[seqs % self.capacity]
        lo = int(np.searchsorted(ts, t0, side="left"))
        hi = int(np.searchsorted(ts, t1, side="left"))
        w = self._read(start + lo, start + hi)
        # A slot overwritten between the search and the copy holds a newer (out-of-range) sample; _read
        # rejects it, so the window can only shrink from the old end.
        return w

    def latest_timestamp(self) -> float | None:
        """Timestamp of the newest complete sample, or None before the first push."""
        head = self._head
        if head == 0:
            return None
        w = self._read(head - 1, head)
        return float(w.timestamps[0]) if len(w) else None

    def __len__(self) -> int:
        return min(self._head, self.capacity)
