from __future__ import annotations

import threading
import time
import tracemalloc

import numpy as np
import pytest

from metagait_edge.runtime.ringbuffer import RingBuffer


def _row(width, value, dtype=np.float64):
    return np.full(width, value, dtype=dtype)


def test_latest_since_and_time_range_return_the_right_samples():
    rb = RingBuffer(8, 3, np.float64)
    for s in range(5):
        assert rb.push(_row(3, s), timestamp=10.0 + s) == s
    w = rb.latest(3)
    assert w.first_seq == 2 and list(w.seqs) == [2, 3, 4]
    assert np.array_equal(w.data[:, 0], [2, 3, 4]) and np.array_equal(w.timestamps, [12, 13, 14])
    assert list(rb.since(3).seqs) == [3, 4]
    assert list(rb.since(1, max_n=2).seqs) == [1, 2]
    tr = rb.time_range(11.0, 13.5)
    assert list(tr.seqs) == [1, 2, 3]
    assert rb.latest_timestamp() == 14.0
    assert len(rb.latest(100)) == 5


def test_overwrite_oldest_counts_reader_lag_drops():
    rb = RingBuffer(4, 2, np.float64)
    for s in range(3):
        rb.push(_row(2, s), s)
    assert list(rb.read_new().seqs) == [0, 1, 2] and rb.dropped == 0
    for s in range(3, 13):  # 10 new samples into 4 slots: 6 are lost before the reader looks
        rb.push(_row(2, s), s)
    w = rb.read_new()
    assert list(w.seqs) == [9, 10, 11, 12]
    assert w.dropped == 6 and rb.dropped == 6
    assert len(rb.read_new()) == 0 and rb.dropped == 6
    w = rb.since(0)
    assert w.first_seq == 9 and w.dropped == 9


def test_reader_rejects_a_slot_the_writer_is_in_the_middle_of():
    rb = RingBuffer(4, 2, np.float64)
    for s in range(6):
        rb.push(_row(2, s), s)
    # Simulate the writer stopped half-way through seq 6 (which reuses the slot of seq 2):
    rb._slot_seq[6 % 4] = 2 * 6 + 1
    rb._data[6 % 4] = [6, -1]
    w = rb.since(2)
    assert list(w.seqs) == [3, 4, 5] and w.dropped == 1
    assert all(np.all(row == s) for row, s in zip(w.data, w.seqs))


def test_constructor_rejects_bad_sizes():
    with pytest.raises(ValueError, match="capacity"):
        RingBuffer(0, 3)
    with pytest.raises(ValueError, match="width"):
        RingBuffer(3, 0)


def test_push_allocates_nothing():
    width = 4096  # a row-sized temporary would be 16 KiB and show up in the peak
    rb = RingBuffer(32, width, np.float32)
    row = np.ones(width, dtype=np.float32)
    data_ptr = rb._data.ctypes.data
    for s in range(100):  # warm up
        rb.push(row, float(s))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        for s in range(100, 20100):
            rb.push(row, float(s))
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 1024, f"push allocated: peak grew by {peak - base} bytes"
    assert current - base < 512
    assert rb._data.ctypes.data == data_ptr


def test_concurrent_writer_and_reader_never_see_torn_rows():
    width = 64
    rb = RingBuffer(32, width, np.float64)  # small: the writer laps the reader constantly
    stop = threading.Event()
    pushed = [0]
    errors: list[str] = []
    received = [0]

    def writer():
        row = np.empty(width, dtype=np.float64)
        s = 0
        while not stop.is_set():
            row.fill(float(s))
            rb.push(row, float(s))
            s += 1
        pushed[0] = s

    def check(w, what):
        if len(w) == 0:
            return
        expect = w.seqs.astype(np.float64)
        if not np.array_equal(w.data, np.repeat(expect[:, None], width, axis=1)):
            errors.append(f"{what}: torn or misnumbered rows at first_seq={w.first_seq}")
        if not np.array_equal(w.timestamps, expect):
            errors.append(f"{what}: timestamps do not match sequence numbers")

    def reader():
        while not stop.is_set():
            w = rb.read_new()
            check(w, "read_new")
            received[0] += len(w)
            check(rb.latest(16), "latest")
            t = float(rb.head)
            check(rb.time_range(t - 20, t), "time_range")

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(5)
    assert not errors, errors[:5]
    w = rb.read_new()  # drain what is left after the writer stopped
    check(w, "final read_new")
    received[0] += len(w)
    assert pushed[0] > 1000
    # Every pushed sample was either delivered exactly once or counted as dropped.
    assert received[0] + rb.dropped == pushed[0]
    assert received[0] > 0
