"""Where a gait.phase sample's time goes on this thread: the estimator, the rest of PhaseStream.push, the publish.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/phase_time_breakdown.py [--members N] [--no-mirror] [--back-to-back]

One HuGaDB sample every 17 ms (the IMU's pace, caches cold as the runtime sees them; ``--back-to-back``: none
between), 1000 samples after 100 of warm-up, each timed in three parts: ``StreamingPhaseEstimator.push`` (the
compiled mirror, network, mean and decoding), the rest of ``PhaseStream.push`` (mode smoothing, phase rate,
status), and ``ZmqPublisher.publish_phase`` (header, encoding, ``send_multipart``; no subscriber).
``bench_phase.py`` measures the whole path end to end through the serial reader.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=0, help="phase.members (0: every member of the shipped ensemble)")
    ap.add_argument("--no-mirror", action="store_true", help="phase.mirror_average: false")
    ap.add_argument("--back-to-back", action="store_true", help="no pause between samples (warm caches)")
    ap.add_argument("--samples", type=int, default=1000)
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from tqdm import tqdm

    from metagait_edge.imu.protocol import channel_scale
    from metagait_edge.runtime.phase_stream import PhaseStream, PhaseStreamConfig
    from metagait_edge.runtime.virtual_walker import load_walker
    from metagait_edge.runtime.zmq_output import ZmqOutputConfig, ZmqPublisher

    torch.set_num_threads(1)
    rows = np.asarray(load_walker(rate_hz=58.8).samples, np.float32) * channel_scale(np.float32)
    stream = PhaseStream(PhaseStreamConfig(members=args.members, mirror_average=not args.no_mirror), 58.8)
    if stream.net is None:
        raise SystemExit(f"no phase network: {stream.note}")
    estimator_ms: list = []
    push = stream.net.push

    def timed_push(row):
        t = time.perf_counter_ns()
        out = push(row)
        estimator_ms.append((time.perf_counter_ns() - t) / 1e6)
        return out

    stream.net.push = timed_push  # this benchmark's own stream: the estimator's share of PhaseStream.push
    pub = ZmqPublisher(ZmqOutputConfig(endpoints=["tcp://127.0.0.1:*"])).start()
    stream_ms, publish_ms = [], []
    warm = 100
    try:
        for k in tqdm(range(args.samples + warm), unit="sample", desc="gait.phase per sample", disable=None):
            if not args.back_to_back:
                time.sleep(1.0 / 58.8)
            t0 = time.perf_counter_ns()
            est = stream.push(rows[k % len(rows)], time.monotonic())
            t1 = time.perf_counter_ns()
            pub.publish_phase(est, walker_id=None, t_input_ns=time.time_ns())
            t2 = time.perf_counter_ns()
            stream_ms.append((t1 - t0) / 1e6)
            publish_ms.append((t2 - t1) / 1e6)
    finally:
        pub.stop()
    est_ms = np.asarray(estimator_ms[warm:])
    parts = {"estimator (StreamingPhaseEstimator.push)": est_ms,
             "rest of PhaseStream.push": np.asarray(stream_ms[warm:]) - est_ms,
             "publish_phase": np.asarray(publish_ms[warm:])}
    pace = "back to back" if args.back_to_back else "one sample every 17 ms"
    print(f"summary ({len(est_ms)} samples, {pace}, {len(stream.net.models)} network(s), mirror average "
          f"{'on' if stream.net.mirror else 'off'}):")
    for name, v in parts.items():
        print(f"  {name}: p50 {np.percentile(v, 50):.3f} ms, p99 {np.percentile(v, 99):.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
