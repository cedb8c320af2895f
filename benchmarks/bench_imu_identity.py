"""Runtime cost of IMU identity per detected stride: features, embedding and open-set identification.

    OMP_NUM_THREADS=1 python benchmarks/bench_imu_identity.py [--walkers 10] [--strides 500]

``WearerIdentity.observe_stride`` with the shipped model (``resources/imu_identity.safetensors``) and
``--walkers`` enrolled from random strides; the figure is the calling thread's CPU time (``time.thread_time``),
so other processes on the machine do not inflate it. The gait worker calls it once per stride, after the
stride's trajectory has been sent.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walkers", type=int, default=10)
    parser.add_argument("--strides", type=int, default=500)
    args = parser.parse_args()
    import time

    from metagait_edge.data.cycles import cycle_channels
    from metagait_edge.runtime.config import IdentityConfig
    from metagait_edge.runtime.identity import WearerIdentity

    wearer = WearerIdentity(IdentityConfig())
    if wearer.identifier is None:
        raise SystemExit("the shipped IMU identity model did not load")
    rng = np.random.default_rng(0)
    for i in range(args.walkers):
        strides = rng.normal(0, 1, (6, 42, 101)).astype(np.float32)
        wearer.identifier.enroll(f"w{i}", wearer.model.embed(strides, cycle_channels()))
    cycles = rng.normal(0, 1, (args.strides + 20, 42, 101)).astype(np.float32)
    for c in cycles[:20]:  # fill the stride window and the z-norm caches
        wearer.observe_stride(c)
    cpu = []
    for c in cycles[20:]:
        t = time.thread_time()
        wearer.observe_stride(c)
        cpu.append(time.thread_time() - t)
    ms = 1e3 * np.asarray(cpu)
    print(f"observe_stride, {args.walkers} enrolled walkers, {args.strides} strides: thread CPU "
          f"p50 {np.percentile(ms, 50):.3f} ms, p99 {np.percentile(ms, 99):.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
