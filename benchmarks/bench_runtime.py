"""End-to-end runtime benchmark: IMU frame written to the pty -> trajectory received by another process.

    python benchmarks/bench_runtime.py --rate 100 --seconds 30
    python benchmarks/bench_runtime.py --rate 200 --camera --seconds 600   # soak: memory over time

The virtual IMU board writes the pty from its own process (as hardware would: it must not share the
runtime's interpreter lock). Reports latency p50/p99 (serial write of the frame that closed the cycle ->
subscriber receive) with a per-stage breakdown, frames
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

from tqdm import tqdm


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def latency_breakdown(stages_s, write_ns, recv_ns) -> dict:
    """p50/p99 per stage: serial (write -> ring), wait (ring -> worker), generate, queue (-> publisher), zmq."""
    import numpy as np

    # Stage stamps are monotonic; write and receive are CLOCK_REALTIME. One offset maps the former onto
    # the latter (both clocks tick at the same rate over a run).
    offset_ns = time.time_ns() - time.monotonic_ns()
    t = offset_ns + 1e9 * np.asarray(stages_s, np.float64).reshape(-1, 4)
    arrival, picked, generated, queued = t.T
    stages = np.stack([arrival - write_ns, picked - arrival, generated - picked, queued - generated,
                       recv_ns - queued], axis=1) / 1e6
    names = ("serial", "wait_worker", "generate", "to_publisher", "zmq_to_subscriber")
    out = {n: [round(float(np.percentile(stages[:, i], q)), 2) for q in (50, 99)] for i, n in enumerate(names)}
    worst = np.argsort(stages.sum(axis=1))[::-1][:5]
    out["worst_5"] = [{n: round(float(stages[k, i]), 2) for i, n in enumerate(names)} for k in worst]
    return out


def _board(samples, rate_hz: float, folder: str, times, written, lost, go, stop) -> None:
    """The virtual IMU board in its own process, as real hardware is: frames into a pty at ``rate_hz``
    from ``go`` (the reader is connected) until ``stop``."""
    import numpy as np

    from metagait_edge.runtime.virtual_walker import PtySerialLink

    link = PtySerialLink(samples, rate_hz, folder, write_times=np.frombuffer(times.get_obj(), np.int64))
    go.wait(60)
    link.start()
    while not stop.wait(0.05):
        written.value, lost.value = link.written, link.lost
    link.stop(drain_s=0.3)
    written.value, lost.value = link.written, link.lost


def _jitter_probe(starts, lengths, count, priority: int, stop) -> None:
    """A process that only sleeps 1 ms in a loop (SCHED_FIFO above the runtime's threads when ``priority``
    > 0) and records every wake-up more than 2 ms late: stalls the machine imposes on any process, which
    no change inside the runtime can shorten."""
    if priority > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        except PermissionError:
            pass
    n, i = 0, 0
    while True:
        i += 1
        if i % 200 == 0 and stop.is_set():
            break
        t0 = time.time_ns()
        time.sleep(0.001)
        late = time.time_ns() - t0 - 1_000_000
        if late > 2_000_000 and n < len(starts):
            starts[n], lengths[n] = t0 + 1_000_000, late
            n += 1
            count.value = n


def cpu_steal_ticks() -> int:
    """The machine's stolen CPU time (clock ticks) from /proc/stat: time the hypervisor ran other guests."""
    with open("/proc/stat") as fh:
        fields = fh.readline().split()
    return int(fields[8]) if len(fields) > 8 else 0


def probe_overlap(write_ns, recv_ns, lat_ms, starts, lengths, threshold_ms: float = 10.0) -> dict:
    """How many trajectories slower than ``threshold_ms`` overlap a stall of the independent jitter probe."""
    import numpy as np

    s = np.asarray(starts, np.int64)
    e = s + np.asarray(lengths, np.int64)
    slow = np.flatnonzero(lat_ms > threshold_ms)
    hit = sum(bool(np.any((s < recv_ns[k]) & (e > write_ns[k]) & (e - s > 3_000_000))) for k in slow)
    d = (e - s) / 1e6
    return {"stalls_over_3ms": int((d > 3).sum()), "stalls_over_10ms": int((d > 10).sum()),
            "max_stall_ms": round(float(d.max()), 2) if d.size else 0.0,
            "slow_trajectories": int(slow.size), "slow_overlapping_a_stall": int(hit)}


class Drain:
    """Moves published records out of the runtime into preallocated arrays (flat memory over a soak)."""

    def __init__(self, capacity: int, times, written) -> None:
        import numpy as np

        self.t_ns = np.zeros(capacity, np.int64)
        self.write_ns = np.zeros(capacity, np.int64)
        self.stages = np.zeros((capacity, 4), np.float64)
        self.n = self.unmatched = 0
        self._times = np.frombuffer(times.get_obj(), np.int64)
        self._written = written

    def __call__(self, records) -> None:
        from metagait_edge.runtime.virtual_walker import frame_write_time

        while records:
            r = records.popleft()
            t = frame_write_time(self._times, r.frame_seq, max(self._written.value, r.frame_seq + 1))
            if t is None or self.n >= len(self.t_ns):
                self.unmatched += 1
                continue
            self.t_ns[self.n], self.write_ns[self.n], self.stages[self.n] = r.t_ns, t, r.stages_s
            self.n += 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=30.0, help="streaming time (soak length)")
    ap.add_argument("--camera", action="store_true", help="also run the camera pipeline at 30 fps")
    ap.add_argument("--backend", default=None, help="models.backend (default: the EdgeConfig default, auto)")
    ap.add_argument("--realtime", type=int, default=0, metavar="PRIO",
                    help="runtime.realtime_priority for the control threads, and SCHED_FIFO for the subscriber "
                         "(the controller); needs CAP_SYS_NICE")
    ap.add_argument("--camera-nice", type=int, default=None, help="runtime.camera_nice (default: the config default)")
    ap.add_argument("--jitter-probe", action="store_true",
                    help="run an independent process that only sleeps 1 ms in a loop (SCHED_FIFO above the "
                         "runtime with --realtime) and report which slow trajectories coincide with its stalls")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from metagait_edge.runtime.capture import capture_messages, free_tcp_port
    from metagait_edge.runtime.config import (
        CalibrationConfig, EdgeConfig, ModelsConfig, RuntimeConfig, SinksConfig, SourceConfig,
    )
    from metagait_edge.runtime.orchestrator import Runtime
    from metagait_edge.runtime.profiles import ProfileStore
    from metagait_edge.runtime.safety import SafetyConfig
    from metagait_edge.runtime.virtual_walker import load_walker, render_walker_video
    from metagait_edge.runtime.zmq_output import ZmqOutputConfig

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="metagait-bench-"))
    spec = load_walker(rate_hz=args.rate)
    sources = [SourceConfig(kind="serial", port=str(work / "dev" / "ttyVIRTUAL0"), rate_hz=args.rate)]
    if args.camera:
        video = render_walker_video(spec, work / "cam.avi", n_frames=90)
        sources.append(SourceConfig(kind="video", path=video.path, rate_hz=30.0, loop=True))
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    sub = ctx.Process(target=capture_messages, args=(endpoint, str(work / "sub.npz"), ready, stop, args.realtime),
                      daemon=True)
    sub.start()
    ready.wait(30)
    times, written, lost, board_stop = ctx.Array("q", 1 << 16), ctx.Value("q", 0), ctx.Value("q", 0), ctx.Event()
    models = ModelsConfig() if args.backend is None else ModelsConfig(backend=args.backend)
    cfg = EdgeConfig(sources=sources, sinks=SinksConfig(zmq=ZmqOutputConfig(endpoints=[endpoint], queue_size=256)),
                     safety=SafetyConfig(staleness_timeout_s=0.25), calibration=CalibrationConfig(directory=work / "p"),
                     models=models, runtime=RuntimeConfig(realtime_priority=args.realtime, **(
                         {} if args.camera_nice is None else {"camera_nice": args.camera_nice})))
    rt = Runtime(cfg, store=ProfileStore(work / "p")).start()
    drain = Drain(int(args.seconds * 4) + 100, times, written)
    time.sleep(0.3)
    go = ctx.Event()
    board = ctx.Process(target=_board, args=(spec.samples, args.rate, str(work / "dev"), times, written, lost, go,
                                             board_stop), daemon=True)
    board.start()
    deadline = time.monotonic() + 30
    while not rt.serial.stats.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    if args.jitter_probe:
        p_starts, p_lengths, p_count, p_stop = ctx.Array("q", 1 << 16), ctx.Array("q", 1 << 16), ctx.Value("q", 0), ctx.Event()
        probe = ctx.Process(target=_jitter_probe, args=(p_starts, p_lengths, p_count,
                                                        args.realtime + 10 if args.realtime else 0, p_stop), daemon=True)
        probe.start()
    steal0 = cpu_steal_ticks()
    cpu0, wall0, rss0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), rss_mb()
    go.set()
    t_cal = time.monotonic()
    outcome = rt.calibrate("bench", 5, timeout_s=min(60, args.seconds))
    cal_wall = time.monotonic() - t_cal
    rt.set_identity("bench", 1.0)
    rss_curve, rss_every = [], args.seconds / 12
    with tqdm(total=round(args.seconds), unit="s", desc="streaming", disable=None) as bar:
        while (elapsed := time.monotonic() - wall0) < args.seconds:
            time.sleep(min(2.0, args.seconds / 10))
            drain(rt.records)
            elapsed = min(time.monotonic() - wall0, args.seconds)
            bar.update(round(elapsed) - bar.n)
            if elapsed >= rss_every * (len(rss_curve) + 1):
                rss_curve.append(round(rss_mb(), 1))
    board_stop.set()
    board.join(10)
    time.sleep(0.3)
    cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    steal = (cpu_steal_ticks() - steal0) / os.sysconf("SC_CLK_TCK") / (wall1 - wall0) / (os.cpu_count() or 1)
    if args.jitter_probe:
        p_stop.set()
        probe.join(5)
    rt.stop()
    drain(rt.records)
    stop.set()
    sub.join(10)
    got = np.load(work / "sub.npz")
    recv = dict(zip(got["t_ns"].tolist(), got["recv_ns"].tolist()))
    keep = [i for i in range(drain.n) if int(drain.t_ns[i]) in recv]
    recv_ns = np.array([recv[int(drain.t_ns[i])] for i in keep], np.int64)
    lat = (recv_ns - drain.write_ns[keep]) / 1e6
    breakdown = latency_breakdown(drain.stages[keep], drain.write_ns[keep], recv_ns)
    ser = rt.serial.stats
    cpu = (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / (wall1 - wall0)
    out = {
        "rate_hz": args.rate, "camera": args.camera, "seconds": round(wall1 - wall0, 1),
        "backend": rt.personalizer.backend, "realtime": rt.realtime,
        "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                       "max": float(lat.max()), "n": int(len(lat)), "over_10ms": int((lat > 10).sum())},
        "latency_breakdown_ms": breakdown,
        "generate_ms_p50_p99": [round(float(np.percentile(rt.stats.gen_ms, q)), 2) for q in (50, 99)],
        "frames_written": int(written.value), "frames_decoded": ser.frames, "bad_frames": ser.bad_frames,
        "serial_missing": ser.missing, "pty_lost": int(lost.value), "ring_dropped": rt.stats.dropped_samples,
        "publisher_dropped": rt.publisher.stats.dropped_queue_full + rt.publisher.stats.dropped_hwm,
        "published": rt.stats.published, "received": int(len(got["t_ns"])),
        "camera_fps": round(rt.camera.stats.fps, 1) if rt.camera else None,
        "camera_read_failures": rt.camera.stats.read_failures if rt.camera else None,
        "cpu_cores": round(cpu, 3), "cpu_steal_fraction": round(steal, 4), "rss_mb": {"start": round(rss0, 1), "curve": rss_curve},
        "calibration": {"accepted": outcome.success, "wall_s": round(cal_wall, 2), "process_s": round(outcome.process_s, 3),
                        "adapt_s": round(outcome.adapt_s, 3), "error_before": outcome.error_before,
                        "error_after": outcome.error_after},
    }
    if args.jitter_probe:
        k = p_count.value
        out["jitter_probe"] = probe_overlap(drain.write_ns[keep], recv_ns, lat, p_starts[:k], p_lengths[:k])
    print(json.dumps(out, indent=2))
    print(f"summary: {out['backend']}, latency p50 {out['latency_ms']['p50']:.1f} / p99 {out['latency_ms']['p99']:.1f} ms "
          f"over {len(lat)} trajectories, {out['frames_decoded']}/{out['frames_written']} frames, "
          f"drops {out['ring_dropped'] + out['publisher_dropped'] + out['serial_missing']}, CPU {cpu:.2f} cores, "
          f"RSS {rss_curve[0] if rss_curve else rss0} -> {rss_curve[-1] if rss_curve else rss0} MB, "
          f"calibration processing {outcome.process_s:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
