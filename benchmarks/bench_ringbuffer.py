"""Ring buffer push / read rates against ``collections.deque``.

    .venv/bin/python benchmarks/bench_ringbuffer.py [--width 36] [--n 200000]

Single thread, so it measures the cost of the operations themselves. The deque stores (timestamp,
row-copy) tuples with ``maxlen`` (the obvious alternative); its windowed read is ``list(islice(...))``
plus ``np.stack``. Numbers go into docs/BENCHMARKS.md by hand.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import platform
import time

import numpy as np

from metagait_edge.runtime.ringbuffer import RingBuffer


def _rate(fn, n: int) -> float:
    t = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=36)
    ap.add_argument("--capacity", type=int, default=2048)
    ap.add_argument("--n", type=int, default=200_000, help="pushes per measurement")
    ap.add_argument("--window", type=int, default=128, help="samples per windowed read")
    ap.add_argument("--reads", type=int, default=20_000)
    args = ap.parse_args()

    row = np.random.default_rng(0).standard_normal(args.width).astype(np.float32)
    rb = RingBuffer(args.capacity, args.width, np.float32)
    dq: collections.deque = collections.deque(maxlen=args.capacity)

    def push_rb(n):
        push = rb.push
        for i in range(n):
            push(row, float(i))

    def push_dq(n):
        append = dq.append
        for i in range(n):
            append((float(i), row.copy()))  # a copy: the producer reuses its row buffer

    def read_rb(n):
        for _ in range(n):
            w = rb.latest(args.window)
            assert len(w) == args.window

    def read_dq(n):
        start = len(dq) - args.window
        for _ in range(n):
            items = list(itertools.islice(dq, start, None))
            data = np.stack([r for _, r in items])
            assert data.shape[0] == args.window

    def read_new_rb(n):
        # Steady state of a consumer: 1 push, then read what is new.
        for i in range(n):
            rb.push(row, float(i))
            rb.read_new()

    for fn in (push_rb, push_dq):  # warm up
        fn(1000)
    results = {
        "push ring buffer": _rate(push_rb, args.n),
        "push deque (tuple + row copy)": _rate(push_dq, args.n),
        f"read latest {args.window} ring buffer": _rate(read_rb, args.reads),
        f"read latest {args.window} deque + np.stack": _rate(read_dq, args.reads),
        "push + read_new ring buffer": _rate(read_new_rb, args.reads),
    }
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
          f"width {args.width}, capacity {args.capacity}")
    for name, r in results.items():
        print(f"{name:40s} {r / 1e3:10.1f} k ops/s  {1e6 / r:8.2f} us/op")


if __name__ == "__main__":
    main()
