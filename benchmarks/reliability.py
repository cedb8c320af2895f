"""Reliability campaign of the edge runtime's output (issue 16); figures and commands in docs/reliability.md.

    python benchmarks/reliability.py limits                  # what the default joint limits must contain
    python benchmarks/reliability.py clip [--files N]        # envelope clipping on real HuGaDB walkers
    python benchmarks/reliability.py clip-personalized       # the same, each walker calibrated first (5-shot)
    python benchmarks/reliability.py fuzz [--bytes N]        # random / bit-flipped bytes into the decoder
    python benchmarks/reliability.py stalls [--cycles N]     # IMU stall/resume cycles through the runtime
    python benchmarks/reliability.py sigstop [--stall-s S]   # imu-sim stopped (SIGSTOP) under a running `run`
    python benchmarks/reliability.py unplug [--cycles N]     # pty unplug/replug through SerialSource
    python benchmarks/reliability.py kill [--cycles N]       # kill -9 during profile writes
    python benchmarks/reliability.py slow-subscriber         # a subscriber that stops reading
    python benchmarks/reliability.py curve                   # an unauthorized CURVE peer
    python benchmarks/reliability.py soak --seconds S        # memory over a long run (imu-sim + run)

Each prints one JSON object (``--json PATH`` also writes it). Everything runs on the CPU; the runtime
parts run the real ``Runtime`` with the shipped model on a simulated clock where timing is the subject
(stalls), so the figures do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from metagait_edge.runtime.capture import free_tcp_port
from metagait_edge.runtime.wire_recorder import WireRecorder

RATE = 58.8
ANGLES = ["hip_r", "knee_r", "ankle_r", "hip_l", "knee_l", "ankle_l"]


def _offline_runtime(safety=None, tmp: Path = Path("/tmp/metagait-reliability")):
    """A Runtime whose worker is driven in this thread (``rt._sample``) on a simulated clock."""
    import torch

    from metagait_edge.runtime.config import CalibrationConfig, EdgeConfig
    from metagait_edge.runtime.orchestrator import Runtime
    from metagait_edge.runtime.profiles import ProfileStore
    from metagait_edge.runtime.safety import SafetyConfig

    torch.set_num_threads(1)
    sim = [0.0]
    cfg = EdgeConfig(sources=[], safety=safety or SafetyConfig(), calibration=CalibrationConfig(directory=tmp))
    rt = Runtime(cfg, store=ProfileStore(tmp), clock=lambda: sim[0])
    rt.publisher = WireRecorder(rt)
    return rt, sim


def _drive(rt, sim, raw: np.ndarray, t0: float) -> float:
    """Feed int16 rows at RATE from t0 through the worker's per-sample path; returns the next sample time."""
    scale = rt._scale
    for k, row in enumerate(raw):
        t = t0 + k / RATE
        sim[0] = t
        rt._sample(row.astype(np.float32) * scale, t, k)
    return t0 + len(raw) / RATE


def run_limits(args) -> dict:
    """What the default relative limits must contain: on every HuGaDB walking cycle with valid angle channels,
    each joint's deviation from the walker's neutral (mean of the 5 cycles before) and its point-to-point rate
    at the cycle's own duration (the offline angle estimates, docs/data.md)."""
    from metagait_edge.data.cycles import cycle_channels, cycles_from_recording
    from metagait_edge.data.hugadb import HuGaDB

    db = HuGaDB.open()
    ch = list(cycle_channels())
    idx = [ch.index(c) for c in ANGLES]
    lo, hi, rate, walkers = [], [], [], set()
    for file_id in db.select("walking"):
        cs = cycles_from_recording(db.load(file_id))
        if len(cs) < 6:
            continue
        a = cs.cycles[:, idx, :].astype(np.float64)
        valid = cs.valid[:, idx].all(axis=1)
        means = a.mean(axis=2)
        for k in range(1, len(a)):
            if not valid[k]:
                continue
            d = a[k] - means[max(0, k - 5):k].mean(axis=0)[:, None]
            lo.append(d.min(axis=1))
            hi.append(d.max(axis=1))
            rate.append(np.abs(np.diff(a[k], axis=1)).max(axis=1) * 100 / (cs.duration[k] / cs.sample_rate_hz))
            walkers.add(int(cs.subject[k]))
    lo, hi, rate = np.array(lo), np.array(hi), np.array(rate)
    return {"walkers": len(walkers), "cycles": len(lo), **{
        name: {"deviation_min_deg": round(float(lo[:, j].min()), 1), "deviation_max_deg": round(float(hi[:, j].max()), 1),
               "rate_p99_dps": round(float(np.percentile(rate[:, j], 99))), "rate_max_dps": round(float(rate[:, j].max()))}
        for j, name in enumerate(ANGLES)}}


def run_clip(args) -> dict:
    """Published references on every HuGaDB walking file through the runtime, default (relative) limits vs
    anatomical absolute ones; files with corrupted gyroscopes (x10 gain and clipping, docs/data.md) apart:
    their angle estimates are a broken sensor's, where HOLD is the right answer."""
    from metagait_edge.data.gyro_validity import corrupted_gyros
    from metagait_edge.data.hugadb import HuGaDB
    from metagait_edge.runtime.safety import SafetyConfig

    db = HuGaDB.open()
    files = db.select("walking")[: args.files] if args.files else db.select("walking")
    out = {}
    for frame in ("relative", "absolute"):
        for group in ("clean", "corrupted"):
            tot = {"files": 0, "walkers": set(), "cycles": 0, "published": 0, "clipped_holds": 0,
                   "clamped_points": 0, "rate_limited_points": 0}
            for file_id in files:
                if bool(corrupted_gyros(file_id)) != (group == "corrupted"):
                    continue
                rt, sim = _offline_runtime(SafetyConfig(limits_frame=frame))
                rec = db.load(file_id)
                _drive(rt, sim, rec.raw, 0.0)
                c = rt.safety.counters
                tot["files"] += 1
                tot["walkers"].add(int(rec.subject))
                tot["cycles"] += rt.stats.cycles
                tot["published"] += rt.stats.published
                tot["clipped_holds"] += c.clipped_hold
                tot["clamped_points"] += c.clamped_points  # over every bounded reference, held ones included
                tot["rate_limited_points"] += c.rate_limited_points
            tot["walkers"] = len(tot["walkers"])
            bounded = tot["published"] + tot["clipped_holds"]
            tot["clipped_hold_fraction"] = round(tot["clipped_holds"] / max(1, bounded), 5)
            tot["clamped_fraction"] = round(tot["clamped_points"] / max(1, bounded * 6 * 101), 6)
            tot["rate_limited_fraction"] = round(tot["rate_limited_points"] / max(1, bounded * 6 * 101), 6)
            out[f"{frame}_{group}"] = tot
    return out


def run_clip_personalized(args) -> dict:
    """Each HuGaDB walking file with valid gyroscopes: the runtime calibrates the walker (5-shot, as
    ``metagait-edge calibrate`` does) on the strides at the start of the file, then runs the rest with that
    personalized model under the default envelope: are personalized references published unclipped?"""
    import tempfile
    import threading

    from metagait_edge.data.gyro_validity import corrupted_gyros
    from metagait_edge.data.hugadb import HuGaDB

    db = HuGaDB.open()
    files = [f for f in db.select("walking") if not corrupted_gyros(f)]
    files = files[: args.files] if args.files else files
    tot = {"files": 0, "walkers": set(), "calibrated": 0, "cycles": 0, "published": 0, "personalized": 0,
           "clipped_holds": 0, "clamped_points": 0, "rate_limited_points": 0, "not_calibrated": []}
    for file_id in files:
        rt, sim = _offline_runtime(tmp=Path(tempfile.mkdtemp(prefix="metagait-clip-")))
        raw = db.load(file_id).raw
        outcome: dict = {}
        worker = threading.Thread(target=lambda: outcome.setdefault("o", rt.calibrate("walker", 5, timeout_s=60.0)))
        worker.start()
        while rt._calib_queue is None and worker.is_alive():  # the calibration listens before strides arrive
            time.sleep(0.01)
        split = len(raw) // 2  # first half: calibration strides (settle + 5 + a held-out one, retries)
        t = _drive(rt, sim, raw[:split], 0.0)
        worker.join(120.0)
        tot["files"] += 1
        tot["walkers"].add(int(db.load(file_id).subject))
        if not (outcome.get("o") and outcome["o"].success):
            tot["not_calibrated"].append(f"{file_id}: {outcome['o'].reason if outcome.get('o') else 'no outcome'}")
            continue
        tot["calibrated"] += 1
        rt.use_walker("walker", 1.0)
        c, s = rt.safety.counters, rt.stats
        before = (s.cycles, s.published, s.personalized, c.clipped_hold, c.clamped_points, c.rate_limited_points)
        _drive(rt, sim, raw[split:], t + 1.0)  # a gap: detection restarts, as when a walk resumes
        after = (s.cycles, s.published, s.personalized, c.clipped_hold, c.clamped_points, c.rate_limited_points)
        for key, b, a in zip(("cycles", "published", "personalized", "clipped_holds", "clamped_points",
                              "rate_limited_points"), before, after):
            tot[key] += a - b
    tot["walkers"] = len(tot["walkers"])
    bounded = tot["published"] + tot["clipped_holds"]
    tot["clipped_hold_fraction"] = round(tot["clipped_holds"] / max(1, bounded), 5)
    tot["clamped_fraction"] = round(tot["clamped_points"] / max(1, bounded * 6 * 101), 6)
    tot["rate_limited_fraction"] = round(tot["rate_limited_points"] / max(1, bounded * 6 * 101), 6)
    return {"relative_personalized_clean": tot}


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def run_soak(args) -> dict:
    """``imu-sim --pty --source synthetic --loop`` into ``run`` for ``--seconds``, a subscriber counting and
    validating; the run process's RSS sampled every ``--sample-s`` seconds."""
    import os
    import subprocess
    import tempfile
    import threading

    from metagait_edge.commands.listen import listen

    tmp = Path(tempfile.mkdtemp(prefix="metagait-soak-"))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # --speed 2: frames at twice the configured rate, i.e. strides at 1.8/s in the runtime (cycle_s ~0.55 s):
    # the runtime's bounded record of its last 2048 trajectories fills in half the time.
    sim = subprocess.Popen([sys.executable, "-m", "metagait_edge", "imu-sim", "--pty", "--source", "synthetic",
                            "--loop", "--no-progress", "--rate", str(RATE * args.speed)],
                           stdout=subprocess.PIPE, text=True, env=env)
    samples, got = [], {}
    try:
        port = sim.stdout.readline().split()[1]
        endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
        cfg = tmp / "edge.yaml"
        cfg.write_text(f"sources:\n  - kind: serial\n    port: {port}\n    rate_hz: {RATE}\n"
                       f"sinks:\n  zmq:\n    endpoints: [\"{endpoint}\"]\n"
                       f"calibration:\n  directory: {tmp / 'walkers'}\n")
        sub = threading.Thread(target=lambda: got.update(s=listen(endpoint, timeout=args.seconds + 60,
                                                                  out=lambda _l: None)), daemon=True)
        sub.start()
        log = open(tmp / "run.log", "w")
        run = subprocess.Popen([sys.executable, "-m", "metagait_edge", "run", "--config", str(cfg), "--duration",
                                str(args.seconds)], stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
        t0 = time.monotonic()
        while run.poll() is None:
            try:
                samples.append((round(time.monotonic() - t0, 1), round(_rss_mb(run.pid), 2)))
            except OSError:
                break
            time.sleep(args.sample_s)
        rc = run.wait()
        sub.join(90)
    finally:
        sim.terminate()
        sim.wait(10)
    log.close()
    summary = (tmp / "run.log").read_text().strip().splitlines()[-1]
    warm = [m for t, m in samples if t >= 60.0] or [m for _, m in samples]
    half = len(warm) // 2
    s = got.get("s")
    return {"seconds": args.seconds, "speed": args.speed, "returncode": rc, "summary": summary, "rss_mb_samples": len(samples),
            "rss_mb_after_60s": warm[0] if warm else None, "rss_mb_end": warm[-1] if warm else None,
            "rss_mb_max": max(warm) if warm else None,
            "rss_mb_first_half_mean": round(float(np.mean(warm[:half])), 2) if half else None,
            "rss_mb_second_half_mean": round(float(np.mean(warm[half:])), 2) if half else None,
            "received": dict(s.received) if s else None, "invalid": s.invalid if s else None,
            "gaps": dict(s.gaps) if s else None, "rss_series": samples[:: max(1, len(samples) // 60)]}


def _feed_chunks(dec, data: bytes, rng) -> list:
    frames, i = [], 0
    while i < len(data):
        n = int(rng.integers(1, 4097))
        frames += dec.feed(data[i:i + n])
        i += n
    return frames


def run_fuzz(args) -> dict:
    """``--bytes`` random bytes, then a frame stream of the same size with random bit flips, into the binary
    decoder in random chunks. Checks: no exception; every byte accounted for (garbage + 90 per frame + one
    per rejected sync + pending); every frame without a flipped bit recovered, none altered; gap counters exact."""
    from metagait_edge.imu.protocol import FRAME_SIZE, FrameDecoder, encode_frame

    rng = np.random.default_rng(args.seed)
    out = {"bytes": args.bytes}
    # 1. random bytes
    dec, crashes = FrameDecoder(), 0
    data = rng.integers(0, 256, args.bytes, dtype=np.uint8).tobytes()
    try:
        frames = _feed_chunks(dec, data, rng)
    except Exception as exc:  # the claim is that this never happens
        crashes, frames = 1, []
        out["random_error"] = repr(exc)
    st = dec.stats
    out["random"] = {"crashes": crashes, "frames": len(frames), "bad_crc": st.bad_crc, "bad_header": st.bad_header,
                     "garbage_bytes": st.garbage_bytes, "pending": dec.pending,
                     "bytes_accounted": st.garbage_bytes + FRAME_SIZE * st.frames + st.bad_crc + st.bad_header
                     + dec.pending == len(data)}
    # 2. a frame stream with bit flips (about one flipped bit per --flip-every bytes)
    n_frames = args.bytes // FRAME_SIZE
    raw = rng.integers(-32768, 32768, (n_frames, 36)).astype(np.int16)
    stream = bytearray(b"".join(encode_frame(k, 17000 * k, raw[k]) for k in range(n_frames)))
    n_flips = max(1, len(stream) // args.flip_every)
    bits = rng.integers(0, len(stream) * 8, n_flips)
    for b in bits:
        stream[b // 8] ^= 1 << int(b % 8)
    hit = np.zeros(n_frames, bool)
    hit[np.unique(bits // 8) // FRAME_SIZE] = True
    dec, crashes = FrameDecoder(), 0
    try:
        frames = _feed_chunks(dec, bytes(stream), rng)
    except Exception as exc:
        crashes, frames = 1, []
        out["flip_error"] = repr(exc)
    got = {f.seq: f for f in frames}
    intact = np.flatnonzero(~hit)
    altered = sum(1 for f in frames if f.seq >= n_frames or not np.array_equal(f.raw, raw[f.seq])
                  or f.t_us != 17000 * f.seq)
    seqs = np.array(sorted(got))
    jumps = np.diff(seqs) if len(seqs) > 1 else np.zeros(0, int)
    st = dec.stats
    out["bitflip"] = {
        "crashes": crashes, "frames_sent": n_frames, "flipped_bits": int(n_flips), "frames_hit": int(hit.sum()),
        "intact_recovered": int(np.isin(intact, seqs).sum()), "intact": int(len(intact)),
        "altered_accepted": int(altered), "frames": st.frames, "bad_crc": st.bad_crc, "bad_header": st.bad_header,
        # between received frames, as the decoder sees them (a loss before the first or after the last is unseen)
        "gaps": st.gaps, "expected_gaps": int(np.count_nonzero(jumps > 1)),
        "missing": st.missing, "expected_missing": int((jumps[jumps > 1] - 1).sum()),
    }
    return out


def run_unplug(args) -> dict:
    """``--cycles`` pty unplug/replug cycles under a SerialSource: each one recovered? time to recover."""
    import tempfile

    from metagait_edge.imu.synthetic import synthetic_imu
    from metagait_edge.runtime.serial_source import SerialSource, SerialSourceConfig
    from metagait_edge.runtime.virtual_walker import PtySerialLink

    link = PtySerialLink(synthetic_imu(int(60 * 200)), 200.0, tempfile.mkdtemp(prefix="metagait-unplug-"))
    src = SerialSource(SerialSourceConfig(port=str(link.path), reconnect_initial_s=0.02, reconnect_max_s=0.2)).start()
    recover, failed = [], 0
    link.start()
    try:
        deadline = time.monotonic() + 5
        while src.stats.frames < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        rng = np.random.default_rng(args.seed)
        for _ in range(args.cycles):
            link.unplug()
            time.sleep(float(rng.uniform(0.05, 0.5)))
            before = src.stats.frames
            link.replug()
            t0 = time.monotonic()
            while src.stats.frames < before + 20 and time.monotonic() - t0 < 10:
                time.sleep(0.002)
            if src.stats.frames >= before + 20:
                recover.append(time.monotonic() - t0)  # replug -> 20 new frames (0.1 s of data at 200 Hz)
            else:
                failed += 1
    finally:
        link.stop()
        src.stop()
    r = np.array(recover) * 1e3
    st = src.stats
    return {"cycles": args.cycles, "recovered": len(recover), "failed": failed, "reconnects": st.reconnects,
            "open_failures": st.open_failures, "bad_frames": st.bad_frames,
            "recover_ms_p50": round(float(np.median(r)), 1) if len(r) else None,
            "recover_ms_p99": round(float(np.percentile(r, 99)), 1) if len(r) else None,
            "recover_ms_max": round(float(r.max()), 1) if len(r) else None,
            "note": "recovery = replug until 20 new frames (0.1 s of 200 Hz data) are in the ring"}


KILL_WRITER = """
import sys, numpy as np
from metagait_edge.runtime.profiles import Profile, ProfileStore
store = ProfileStore(sys.argv[1]); i = int(sys.argv[2])
print("ready", flush=True)
while True:
    i += 1
    store.save(Profile("kim", {"w": np.full(500_000, i, np.float32)}, np.full((2, 101), i, np.float32),
                       np.ones(2, bool), {"tag": float(i)}))
"""


def run_kill(args) -> dict:
    """``--cycles`` times: a process writing walker profiles in a loop is killed -9 at a random moment;
    the profile must load (the previous or a newer complete one), never corrupt, no temporary file left."""
    import os
    import signal
    import subprocess
    import tempfile

    from metagait_edge.runtime.profiles import Profile, ProfileError, ProfileStore

    folder = Path(tempfile.mkdtemp(prefix="metagait-kill-"))
    store = ProfileStore(folder)
    store.save(Profile("kim", {"w": np.full(500_000, 1, np.float32)}, np.full((2, 101), 1, np.float32),
                       np.ones(2, bool), {"tag": 1.0}))
    rng = np.random.default_rng(args.seed)
    corrupt, older, tags, leftovers = 0, 0, [], 0
    last = 1.0
    for k in range(args.cycles):
        proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(folder), str(int(last) + 1000 * (k + 1))],
                                stdout=subprocess.PIPE)
        proc.stdout.readline()
        time.sleep(float(rng.uniform(0.0, 0.4)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        try:
            p = store.load("kim")
            ok = bool(np.all(p.weights["w"] == p.meta["tag"]) and np.all(p.template == p.meta["tag"]))
            corrupt += not ok
            older += p.meta["tag"] < last
            last = p.meta["tag"]
            tags.append(last)
        except ProfileError:
            corrupt += 1
        leftovers = len([f for f in (folder / "kim").iterdir() if f.name.startswith(".")])
    weights_left = len(list((folder / "kim").glob("weights-*.safetensors")))
    store.save(Profile("kim", {"w": np.full(10, 7, np.float32)}, np.full((2, 101), 7, np.float32),
                       np.ones(2, bool), {"tag": 7.0}))
    return {"cycles": args.cycles, "corrupt": corrupt, "went_back_to_an_older_profile": older,
            "distinct_profiles_seen": len(set(tags)), "temporary_files_after_the_kills": leftovers,
            "weights_files_after_the_kills": weights_left,
            "files_after_one_more_save": sorted(f.name for f in (folder / "kim").iterdir())}


def run_stalls(args) -> dict:
    """``--cycles`` IMU stall/resume cycles of random length, in real time at 58.8 Hz through the runtime:
    walk 2.5-4 s, stall 0.05-2 s; after half of the stalls the sender flushes its backlog (old timestamps)."""
    import tempfile
    import threading

    import torch

    from metagait_edge.runtime.config import CalibrationConfig, EdgeConfig
    from metagait_edge.runtime.orchestrator import Runtime
    from metagait_edge.runtime.profiles import ProfileStore
    from metagait_edge.runtime.virtual_walker import synthetic_walker

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="metagait-stalls-"))
    rt = Runtime(EdgeConfig(sources=[], calibration=CalibrationConfig(directory=tmp)), store=ProfileStore(tmp))
    rt.publisher = WireRecorder(rt)
    timeout = rt.config.safety.staleness_timeout_s
    walker = synthetic_walker(seconds=60).samples
    rng = np.random.default_rng(args.seed)
    stalls = []  # (last sample time, resume time, seconds, backlog, detection restarted)
    gaps_before = 0
    period = 1.0 / RATE
    rt.start()
    k = 0
    try:
        next_t = time.monotonic()
        for c in range(args.cycles + 1):
            walk_end = time.monotonic() + float(rng.uniform(2.5, 4.0))
            while time.monotonic() < walk_end:
                now = time.monotonic()
                if now < next_t:
                    time.sleep(next_t - now)
                rt.push_imu(walker[k % len(walker)], time.monotonic(), k)
                k += 1
                next_t += period
            if c == args.cycles:
                stalls[-1] = stalls[-1] + (rt.gate.gaps > gaps_before,)
                break
            if stalls:  # did the previous stall restart gait detection (a hole in the input > max_sample_gap_s)?
                stalls[-1] = stalls[-1] + (rt.gate.gaps > gaps_before,)
            gaps_before = rt.gate.gaps
            last = time.monotonic()
            length, backlog = float(rng.uniform(0.05, 2.0)), bool(c % 2)
            time.sleep(length)
            resume = time.monotonic()
            if backlog:  # the overdue frames at once, each with the time it was due
                for j in range(int(length / period)):
                    rt.push_imu(walker[k % len(walker)], last + (j + 1) * period, k)
                    k += 1
            stalls.append((last, resume, length, backlog))
            next_t = time.monotonic()
        time.sleep(0.3)
    finally:
        rt.stop()
    ev = rt.publisher.events
    trajs = [kw for kind, _, kw in ev if kind == "traj"]
    stale_refs = during = limit_viol = rate_viol = 0
    stale_detail = []
    max_gap = rt.config.safety.max_sample_gap_s
    for (kind, traj, kw) in ev:
        if kind != "traj":
            continue
        t_input = kw["mono"] - (kw["wall_ns"] - kw["t_input_ns"]) / 1e9
        # The last stall that left a hole in the input (gait detection restarted): no cycle may span it. A stall
        # whose fresh backlog bridged it (hole <= max_sample_gap_s, every sample fresh when used) may be spanned.
        before = [st for st in stalls if st[1] <= kw["mono"] and st[4]]
        if before and t_input - kw["cycle_s"] < before[-1][1] - 1e-3:  # the cycle began before the resume
            stale_refs += 1
            stale_detail.append((round(before[-1][2], 3), before[-1][3], round(kw["cycle_s"], 3),
                                 round(before[-1][1] - (t_input - kw["cycle_s"]), 3)))
        during += any(st[0] + timeout < kw["mono"] < st[1] for st in stalls)
        lo, hi = kw["lo"][:, None], kw["hi"][:, None]
        limit_viol += int(np.count_nonzero((traj < lo - 1e-4) | (traj > hi + 1e-4)))
        rates = np.array([rt.safety.config.joint_limits[c].max_rate_dps for c in kw["channels"]])[:, None]
        rate_viol += int(np.count_nonzero(np.abs(np.diff(traj.astype(np.float64), axis=1))
                                          > rates * kw["cycle_s"] / 100 + 1e-3))
    hold_ms, missed = [], 0
    statuses = [(kw["mono"], s) for kind, s, kw in ev if kind == "status"]
    for last, resume, length, _, _ in stalls:
        if length <= timeout + 2 * period:
            continue  # too short to need a HOLD reliably
        first = next((t for t, s in statuses if last < t <= resume + 0.5 and s == "HOLD"), None)
        if first is None:
            missed += 1
        else:
            hold_ms.append(1e3 * (first - (last + timeout)))
    h = np.array(hold_ms)
    return {
        "cycles": len(stalls), "stall_s_range": [0.05, 2.0], "with_backlog": sum(1 for st in stalls if st[3]),
        "imu_period_ms": round(1e3 * period, 2), "staleness_timeout_s": timeout,
        "stalls_that_restarted_detection": sum(1 for st in stalls if st[4]),
        "stalls_bridged_by_a_fresh_backlog": sum(1 for st in stalls if st[3] and not st[4]),
        "trajectories": len(trajs), "trajectories_spanning_a_hole": stale_refs, "detail": stale_detail[:10],
        "input_age_at_publish_ms_max": round(max((kw["wall_ns"] - kw["t_input_ns"]) / 1e6 for kw in trajs), 2)
        if trajs else None,
        "trajectories_during_a_stall": during, "angle_limit_violations": limit_viol,
        "rate_limit_violations": rate_viol, "stalls_needing_hold": len(hold_ms) + missed, "hold_missed": missed,
        "hold_after_limit_ms_p50": round(float(np.median(h)), 1) if len(h) else None,
        "hold_after_limit_ms_p99": round(float(np.percentile(h, 99)), 1) if len(h) else None,
        "hold_after_limit_ms_max": round(float(h.max()), 1) if len(h) else None,
        "holds_later_than_2_imu_periods": int(np.count_nonzero(h > 2e3 * period)),
        "stale_samples_dropped": rt.gate.stale_samples, "input_gaps": rt.gate.gaps, "holds": rt.stats.holds,
        "rejected_cycles": rt.safety.counters.implausible_cycle, "clipped_holds": rt.safety.counters.clipped_hold,
    }


def _send_times(pub, n: int) -> np.ndarray:
    traj = np.zeros((6, 101), np.float32)
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        pub.publish_trajectory(traj, ANGLES, walker_id=None, personalized=False, phase=0.0, cycle_s=1.0,
                               status="DEGRADED")
        out[i] = time.perf_counter() - t0
    return out * 1e6


def run_slow_subscriber(args) -> dict:
    """publish_trajectory call time (the gait worker's cost) with a subscriber that reads, and with one that
    stopped reading (its socket and the publisher's high-water mark fill up): sends never wait."""
    import zmq

    from metagait_edge.runtime.zmq_output import ZmqOutputConfig, ZmqPublisher

    out = {}
    for mode in ("reading", "stopped"):
        pub = ZmqPublisher(ZmqOutputConfig(endpoints=["tcp://127.0.0.1:*"])).start()
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RCVHWM, 5)
        sub.connect(pub.bound_endpoints[0])
        stop, got = [False], [0]
        import threading

        def reader():
            while not stop[0]:
                if sub.poll(10):
                    sub.recv_multipart()
                    got[0] += 1

        th = threading.Thread(target=reader, daemon=True)
        if mode == "reading":
            th.start()
        time.sleep(0.3)
        us = _send_times(pub, args.messages)
        stop[0] = True
        if mode == "reading":
            th.join(1)
        st = pub.stats
        pub.stop()
        sub.close(0)
        ctx.term()
        out[mode] = {"calls": args.messages, "send_us_p50": round(float(np.median(us)), 1),
                     "send_us_p99": round(float(np.percentile(us, 99)), 1), "send_us_max": round(float(us.max()), 1),
                     "sent": st.sent, "dropped_hwm": st.dropped_hwm, "received": got[0]}
    return out


def run_curve(args) -> dict:
    """A CURVE publisher for --seconds at 100 Hz; the authorized client, a client with unknown keys and a
    plain (no CURVE) client connected the whole time: what each one receives."""
    import tempfile
    import threading

    from metagait_edge.commands.listen import listen
    from metagait_edge.runtime.zmq_output import ZmqOutputConfig, ZmqPublisher, generate_keys

    tmp = Path(tempfile.mkdtemp(prefix="metagait-curve-"))
    keys, other = generate_keys(tmp / "keys"), generate_keys(tmp / "other")
    pub = ZmqPublisher(ZmqOutputConfig(endpoints=["tcp://127.0.0.1:*"], curve_server_secret_key=keys["server_secret"],
                                       curve_allowed_clients_dir=keys["allowed_clients_dir"])).start()
    ep = pub.bound_endpoints[0]
    res = {}
    clients = {"authorized": dict(server_key=str(keys["server_public"]), client_keys=str(tmp / "keys")),
               "unknown_client_keys": dict(server_key=str(keys["server_public"]), client_keys=str(other["client_secret"])),
               "no_curve": {}}
    threads = [threading.Thread(target=lambda n=n, kw=kw: res.update({n: listen(ep, timeout=args.seconds + 1.0,
                                                                              out=lambda _l: None, **kw)}))
               for n, kw in clients.items()]
    for th in threads:
        th.start()
    time.sleep(0.5)
    sent = 0
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        _send_times(pub, 1)
        sent += 1
        time.sleep(0.01)
    for th in threads:
        th.join()
    pub.stop()
    return {"published": sent, **{n: {"received": s.total, "invalid": s.invalid} for n, s in res.items()}}


def run_sigstop(args) -> dict:
    """The issue's black-box experiment: ``imu-sim --pty --source synthetic --loop`` into ``run``, a subscriber
    reading everything in order; after 15 s the simulator is stopped (SIGSTOP) for ``--stall-s`` seconds,
    then continued (SIGCONT): it flushes its overdue frames at once, with their scheduled times."""
    import os
    import signal
    import subprocess
    import tempfile
    import threading

    import zmq

    from metagait_edge.runtime import zmq_schema as M
    from metagait_edge.runtime.safety import SafetyConfig

    tmp = Path(tempfile.mkdtemp(prefix="metagait-sigstop-"))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    sim = subprocess.Popen([sys.executable, "-m", "metagait_edge", "imu-sim", "--pty", "--source", "synthetic",
                            "--loop", "--no-progress"], stdout=subprocess.PIPE, text=True, env=env)
    msgs, stop = [], threading.Event()
    port = sim.stdout.readline().split()[1]
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"

    def subscriber():
        sock = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(endpoint)
        while not stop.is_set():
            if sock.poll(100):
                m = M.decode(sock.recv_multipart())
                msgs.append((time.monotonic(), m.topic, m.header, m.payload))
        sock.close(0)

    sub = threading.Thread(target=subscriber, daemon=True)
    sub.start()
    cfg = tmp / "edge.yaml"
    cfg.write_text(f"sources:\n  - kind: serial\n    port: {port}\n    rate_hz: {RATE}\n"
                   f"sinks:\n  zmq:\n    endpoints: [\"{endpoint}\"]\ncalibration:\n  directory: {tmp / 'w'}\n")
    total = 15 + args.stall_s + 20
    run = subprocess.Popen([sys.executable, "-m", "metagait_edge", "run", "--config", str(cfg), "--duration",
                            str(total)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        time.sleep(15 + 8)  # start-up (~8 s) and 15 s of walking
        os.kill(sim.pid, signal.SIGSTOP)
        t_stop = time.monotonic()
        time.sleep(args.stall_s)
        os.kill(sim.pid, signal.SIGCONT)
        t_cont = time.monotonic()
        out, _ = run.communicate(timeout=total + 60)
    finally:
        sim.terminate()
        sim.wait(10)
        stop.set()
        sub.join(2)
    limits = SafetyConfig().joint_limits
    trajs = [(t, h, p) for t, topic, h, p in msgs if topic == M.TOPIC_TRAJECTORY]
    status, under_hold, worst_rate = "HOLD", 0, 0.0
    for t, topic, h, p in msgs:
        if topic == M.TOPIC_STATUS:
            status = h["status"]
        elif topic == M.TOPIC_TRAJECTORY:
            under_hold += status == "HOLD"
            for row, name in zip(p, h["channels"]):
                step = float(np.abs(np.diff(row.astype(np.float64))).max()) * 100 / h["cycle_s"]
                worst_rate = max(worst_rate, step / limits[name].max_rate_dps)
    hold_reasons = {h["reason"] for t, topic, h, _ in msgs
                    if topic == M.TOPIC_STATUS and h["status"] == "HOLD" and t_stop < t < t_cont}
    after = [t for t, _, _ in trajs if t > t_cont]
    return {
        "stall_s": args.stall_s, "messages": len(msgs), "trajectories": len(trajs),
        "trajectories_while_last_status_hold": under_hold,
        "trajectories_in_the_2_s_after_sigcont": sum(1 for t in after if t < t_cont + 2.0),
        "first_trajectory_after_sigcont_s": round(after[0] - t_cont, 2) if after else None,
        "cycle_s_min_max": [round(min(h["cycle_s"] for _, h, _ in trajs), 3), round(max(h["cycle_s"] for _, h, _ in trajs), 3)]
        if trajs else None,
        "worst_step_over_rate_limit": round(worst_rate, 3),
        "phase_min_max": [round(min(h["phase"] for _, h, _ in trajs), 3), round(max(h["phase"] for _, h, _ in trajs), 3)]
        if trajs else None,
        "distinct_hold_reasons_during_stall": len(hold_reasons), "hold_reason_examples": sorted(hold_reasons)[:3],
        "run_summary": out.strip().splitlines()[-1] if out.strip() else "",
    }


SECTIONS = {"limits": run_limits, "sigstop": run_sigstop, "clip": run_clip, "clip-personalized": run_clip_personalized, "soak": run_soak, "fuzz": run_fuzz, "unplug": run_unplug, "kill": run_kill,
            "stalls": run_stalls, "slow-subscriber": run_slow_subscriber, "curve": run_curve}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=sorted(SECTIONS))
    parser.add_argument("--files", type=int, default=0, help="clip: first N walking files (0: all)")
    parser.add_argument("--seconds", type=float, default=1800.0, help="soak: length of the run")
    parser.add_argument("--bytes", type=int, default=1_000_000, help="fuzz: bytes per stream")
    parser.add_argument("--flip-every", type=int, default=1000, help="fuzz: one flipped bit per this many bytes")
    parser.add_argument("--cycles", type=int, default=100, help="unplug, kill, stalls: repetitions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--messages", type=int, default=20000, help="slow-subscriber: trajectories sent")
    parser.add_argument("--sample-s", type=float, default=10.0, help="soak: RSS sampling period")
    parser.add_argument("--speed", type=float, default=1.0, help="soak: IMU frames at this multiple of 58.8 Hz")
    parser.add_argument("--stall-s", type=float, default=10.0, help="sigstop: how long imu-sim is stopped")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    result = {"section": args.section, **SECTIONS[args.section](args), "wall_s": round(time.monotonic() - t0, 1)}
    text = json.dumps(result, indent=1, default=float)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
