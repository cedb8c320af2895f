"""End-to-end runtime benchmark: IMU frame written to the pty -> trajectory received by another process.

    python benchmarks/bench_runtime.py --rate 100 --seconds 30
    python benchmarks/bench_runtime.py --rate 200 --camera --seconds 600   # soak: memory over time

Reports latency p50/p99 (serial write of the frame that closed the cycle -> subscriber receive), frames
written vs decoded (drops), serial bad frames, ring/publisher drops, process CPU use, RSS at start/end,
and calibration wall time (one 5-shot calibration during the run). The walker is resampled to ``--rate``
so the gait keeps its real speed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=30.0, help="streaming time (soak length)")
    ap.add_argument("--camera", action="store_true", help="also run the camera pipeline at 30 fps")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from metagait_edge.commands.demo import _free_port, _subscriber
    from metagait_edge.runtime.config import CalibrationConfig, EdgeConfig, SinksConfig, SourceConfig
    from metagait_edge.runtime.orchestrator import Runtime
    from metagait_edge.runtime.profiles import ProfileStore
    from metagait_edge.runtime.safety import SafetyConfig
    from metagait_edge.runtime.virtual_walker import PtySerialLink, load_walker, render_walker_video
    from metagait_edge.runtime.zmq_output import ZmqOutputConfig

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="metagait-bench-"))
    spec = load_walker(rate_hz=args.rate)
    sources = [SourceConfig(kind="serial", port=str(work / "dev" / "ttyVIRTUAL0"), rate_hz=args.rate)]
    if args.camera:
        video = render_walker_video(spec, work / "cam.avi", n_frames=90)
        sources.append(SourceConfig(kind="video", path=video.path, rate_hz=30.0, loop=True))
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    sub = ctx.Process(target=_subscriber, args=(endpoint, str(work / "sub.npz"), ready, stop), daemon=True)
    sub.start()
    ready.wait(30)
    link = PtySerialLink(spec.samples, args.rate, work / "dev")
    cfg = EdgeConfig(sources=sources, sinks=SinksConfig(zmq=ZmqOutputConfig(endpoints=[endpoint], queue_size=256)),
                     safety=SafetyConfig(staleness_timeout_s=0.25), calibration=CalibrationConfig(directory=work / "p"))
    rt = Runtime(cfg, store=ProfileStore(work / "p")).start()
    time.sleep(0.3)
    cpu0, wall0, rss0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), rss_mb()
    link.start()
    t_cal = time.monotonic()
    outcome = rt.calibrate("bench", 5, timeout_s=min(60, args.seconds))
    cal_wall = time.monotonic() - t_cal
    rt.set_identity("bench", 1.0)
    rss_curve = []
    while time.monotonic() - wall0 < args.seconds:
        time.sleep(min(10.0, args.seconds / 10))
        rss_curve.append(round(rss_mb(), 1))
    link.stop()
    time.sleep(0.3)
    cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    rt.stop()
    stop.set()
    sub.join(10)
    got = np.load(work / "sub.npz")
    recv = dict(zip(got["t_ns"].tolist(), got["recv_ns"].tolist()))
    lat = [(recv[r.t_ns] - link.write_times_ns[r.frame_seq]) / 1e6 for r in rt.records
           if r.t_ns in recv and 0 <= r.frame_seq < len(link.write_times_ns)]
    ser = rt.serial.stats
    cpu = (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / (wall1 - wall0)
    out = {
        "rate_hz": args.rate, "camera": args.camera, "seconds": round(wall1 - wall0, 1),
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)), "n": len(lat)},
        "frames_written": link.written, "frames_decoded": ser.frames, "bad_frames": ser.bad_frames,
        "serial_missing": ser.missing, "pty_lost": link.lost, "ring_dropped": rt.stats.dropped_samples,
        "publisher_dropped": rt.publisher.stats.dropped_queue_full + rt.publisher.stats.dropped_hwm,
        "published": rt.stats.published, "received": int(len(got["t_ns"])),
        "camera_fps": round(rt.camera.stats.fps, 1) if rt.camera else None,
        "camera_read_failures": rt.camera.stats.read_failures if rt.camera else None,
        "cpu_cores": round(cpu, 3), "rss_mb": {"start": round(rss0, 1), "curve": rss_curve},
        "calibration": {"accepted": outcome.success, "wall_s": round(cal_wall, 2), "adapt_s": round(outcome.adapt_s, 3)},
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
