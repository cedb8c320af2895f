"""``metagait-edge demo``: the whole edge pipeline on a virtual walker, end to end, in about a minute.

A held-out HuGaDB walker (synthetic when the data is absent) streams IMU frames through a real pty serial
link while a camera video of the matching synthetic walker plays; the runtime identifies the walker from
the video (gallery enrolled from another sequence of the same walker plus distractors), performs the
5-shot calibration, and publishes trajectories over ZeroMQ to a subscriber in another process. Ends with
a summary, an optional JSON report (``--json``) and a plot of published vs true cycles (``--plot``).
"""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = "end-to-end demo: virtual walker -> serial + camera -> recognition, 5-shot calibration, ZeroMQ"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH", default=None, help="write the summary as JSON")
    parser.add_argument("--plot", metavar="PNG", default="demo_trajectories.png", help="plot of published trajectories")
    parser.add_argument("--seconds", type=float, default=14.0, help="streaming after calibration")
    parser.add_argument("--subject", type=int, default=8, help="HuGaDB subject of the virtual walker")
    parser.add_argument("--workdir", default=None, help="folder for the video, pty link and profiles (default: temp)")
    parser.add_argument("--port", type=int, default=0, help="ZeroMQ TCP port on 127.0.0.1 (0: a free one)")


def run_demo(args: argparse.Namespace, out=print) -> dict:
    import multiprocessing as mp
    import tempfile
    import time
    from pathlib import Path

    import numpy as np
    import torch

    from metagait_edge.recognition.gallery import Gallery
    from metagait_edge.runtime.camera import Recognizer, SilhouetteExtractor, load_recognition_model, silhouettes_from_frames
    from metagait_edge.runtime.capture import capture_messages, free_tcp_port
    from metagait_edge.runtime.config import CalibrationConfig, EdgeConfig, RuntimeConfig, SinksConfig, SourceConfig
    from metagait_edge.runtime.orchestrator import Runtime
    from metagait_edge.runtime.profiles import ProfileStore
    from metagait_edge.runtime.safety import SafetyConfig
    from metagait_edge.runtime.virtual_walker import (
        PtySerialLink, load_walker, render_walker_video, synthetic_walker,
    )
    from metagait_edge.runtime.zmq_output import ZmqOutputConfig

    torch.set_num_threads(1)
    t_start = time.monotonic()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="metagait-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    spec = load_walker(args.subject)
    out(f"virtual walker {spec.name}: {spec.source}, {len(spec.samples)} IMU samples at {spec.rate_hz} Hz, "
        f"{spec.height_cm:.0f} cm {spec.weight_kg:.0f} kg {spec.sex}, {spec.cadence_spm:.0f} steps/min")

    # Camera: the walker's video, and a gallery enrolled from OTHER sequences (another walk of the same
    # walker, two distractors) through the same extractor.
    video = render_walker_video(spec, work / "camera.avi", n_frames=90, seed=11)
    recognizer = Recognizer(load_recognition_model(), Gallery())
    # Two distractors: a synthetic walker of another body, and another HuGaDB walker (without the data, that is
    # the synthetic stand-in of the walker themselves, and is left out).
    others = [spec, synthetic_walker(seed=1), load_walker(1 if args.subject != 1 else 10)]
    if others[2].name == spec.name:
        others = others[:2]
    names = [s.name for s in others]
    import cv2

    held_out = []
    for k, (s, name) in enumerate(zip(others, names)):
        ev = render_walker_video(s, work / f"enroll_{k}.avi", n_frames=90, seed=100 + k)
        cap = cv2.VideoCapture(str(ev.path))
        frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
        sil = silhouettes_from_frames(frames, SilhouetteExtractor())
        recognizer.enroll(name, sil[-30:])
        held_out.append((name, recognizer.embed(sil[-60:-30])))  # another window: calibrates the threshold
    # No identity is accepted without a calibrated threshold: genuine = a held-out window of each enrolled
    # walker to its own template, impostor = to every other walker's; the largest threshold with no impostor
    # accepted on these.
    per = [(name, recognizer.gallery.distances(emb)) for name, emb in held_out]
    genuine = [d[name] for name, d in per]
    impostor = [v for name, d in per for other, v in d.items() if other != name]
    recognizer.gallery.calibrate(genuine, impostor, target_far=0.0)
    out(f"gallery: {recognizer.gallery.walkers} (model: {recognizer.model.source}), threshold "
        f"{recognizer.gallery.threshold:.4g} (genuine max {max(genuine):.4g}, impostor min {min(impostor):.4g})")

    port = args.port or free_tcp_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    sub_path = str(work / "subscriber.npz")
    sub = ctx.Process(target=capture_messages, args=(endpoint, sub_path, ready, stop), daemon=True)
    sub.start()
    if not ready.wait(30):
        raise RuntimeError("the subscriber process did not start")

    link = PtySerialLink(spec.samples, spec.rate_hz, work / "dev")
    config = EdgeConfig(
        sources=[SourceConfig(kind="serial", port=str(link.path), rate_hz=spec.rate_hz),
                 SourceConfig(kind="video", path=video.path, rate_hz=video.fps, loop=True)],
        sinks=SinksConfig(zmq=ZmqOutputConfig(endpoints=[endpoint], queue_size=256, sndhwm=1000)),
        # The default envelope: limits relative to the walker's neutral, the frame of the IMU-derived angles.
        safety=SafetyConfig(confidence_threshold=0.5, staleness_timeout_s=0.25),
        calibration=CalibrationConfig(directory=work / "profiles"),
        runtime=RuntimeConfig(recognition_every=10, recognition_window=30),
    )
    runtime = Runtime(config, store=ProfileStore(work / "profiles"), recognizer=recognizer)
    runtime.start()
    time.sleep(0.3)  # the subscriber's connection settles (PUB drops messages before it)
    link.start()
    try:
        deadline = time.monotonic() + 15
        while runtime.walker is None and time.monotonic() < deadline:
            time.sleep(0.1)
        walker_identified = runtime.walker
        out(f"identified: {walker_identified} (confidence {runtime.confidence:.2f})")
        cal_name = walker_identified or spec.name
        outcome = runtime.calibrate(cal_name, 5, lambda n, k: out(f"  calibration: {n}/{k} cycles"), timeout_s=60)
        out(f"calibration {'accepted' if outcome.success else 'rejected: ' + outcome.reason}: held-out loss "
            f"{outcome.error_before:.4f} -> {outcome.error_after:.4f}, joint RMSE {outcome.rmse_deg_before:.1f} -> "
            f"{outcome.rmse_deg_after:.1f} deg, adapt {outcome.adapt_s:.2f} s, processing {outcome.process_s:.2f} s")
        if runtime.walker is None:
            runtime.set_identity(cal_name, 1.0)
        time.sleep(args.seconds)
    finally:
        link.stop()
        time.sleep(0.3)
        runtime.stop()
        stop.set()
        sub.join(10)
    got = np.load(sub_path)
    # Latency: serial write of the frame that completed the cycle -> the subscriber's receive time.
    recv = dict(zip(got["t_ns"].tolist(), got["recv_ns"].tolist()))
    sent = [(r, link.write_time_ns(r.frame_seq)) for r in runtime.records if r.t_ns in recv]
    lat = [(recv[r.t_ns] - t) / 1e6 for r, t in sent if t is not None]
    ser = runtime.serial.stats
    pub_stats = runtime.publisher.stats
    summary = {
        "walker_true": spec.name,
        "walker_identified": walker_identified or "",
        "calibration": {"accepted": bool(outcome.success), "error_before": float(outcome.error_before),
                        "error_after": float(outcome.error_after)},
        "messages": {"published": int(runtime.stats.published), "received": int(len(got["t_ns"]))},
        "latency_ms": {"p50": float(np.percentile(lat, 50)) if lat else float("nan"),
                       "p99": float(np.percentile(lat, 99)) if lat else float("nan")},
        "serial": {"frames": int(ser.frames), "bad_frames": int(ser.bad_frames)},
        "dropped": int(runtime.stats.dropped_samples + pub_stats.dropped_queue_full + pub_stats.dropped_hwm
                       + int(ser.missing)),
    }
    extra = {"personalized_received": int(got["personalized"].sum()), "invalid": int(got["invalid"]),
             "rmse_deg": [outcome.rmse_deg_before, outcome.rmse_deg_after], "wall_s": time.monotonic() - t_start,
             "calibration_process_s": outcome.process_s, "backend": runtime.personalizer.backend,
             "source": spec.source, "personalization_model": runtime.personalizer.source,
             "recognition_model": recognizer.model.source}
    if args.plot:
        _plot(args.plot, spec, got, runtime)
    return {**summary, "_extra": extra}


def _plot(path: str, spec, got, runtime) -> None:
    import numpy as np

    from metagait_edge.plots import save_figure, subplots

    from metagait_edge.runtime.calibration import ANGLE_CHANNELS

    x = np.linspace(0, 100, 101)
    fig, axes = subplots(2, 3, figsize=(12, 6), sharex=True)
    truth = None
    if spec.true_cycles is not None and len(spec.true_cycles):
        idx = [list(spec.channels).index(c) for c in ANGLE_CHANNELS]
        truth = spec.true_cycles[:, idx]
    for j, (ax, name) in enumerate(zip(axes.ravel(), ANGLE_CHANNELS)):
        if truth is not None:
            for c in truth[:, j]:
                ax.plot(x, c, color="0.8", lw=0.6)
            ax.plot(x, truth[:, j].mean(0), color="k", lw=2, label="true cycles (offline, mean)")
        for traj, p in zip(got["traj"], got["personalized"]):
            ax.plot(x, traj[j], color="tab:red" if p else "tab:blue", lw=0.8, alpha=0.6)
        ax.set_title(name)
        ax.set_xlabel("gait cycle %")
        ax.set_ylabel("deg")
    axes[0, 0].plot([], [], color="tab:blue", label="published, generic")
    axes[0, 0].plot([], [], color="tab:red", label="published, personalized")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"metagait-edge demo: {spec.name} ({spec.source}); trajectories received by the subscriber process")
    save_figure(fig, path, dpi=90)


def run(args: argparse.Namespace) -> int:
    import json

    summary = run_demo(args)
    extra = summary.pop("_extra")
    print("\n== metagait-edge demo summary ==")
    print(f"walker: true {summary['walker_true']}, identified {summary['walker_identified'] or '(none)'}")
    c = summary["calibration"]
    print(f"calibration: {'accepted' if c['accepted'] else 'rejected'}, held-out loss {c['error_before']:.4f} -> "
          f"{c['error_after']:.4f}; joint-angle RMSE {extra['rmse_deg'][0]:.1f} -> {extra['rmse_deg'][1]:.1f} deg")
    m = summary["messages"]
    print(f"trajectories: {m['published']} published, {m['received']} received in another process "
          f"({extra['personalized_received']} personalized, {extra['invalid']} invalid)")
    print(f"latency serial write -> subscriber: p50 {summary['latency_ms']['p50']:.1f} ms, "
          f"p99 {summary['latency_ms']['p99']:.1f} ms")
    print(f"serial: {summary['serial']['frames']} frames, {summary['serial']['bad_frames']} bad; dropped {summary['dropped']}")
    print(f"models: personalization {extra['personalization_model']}; recognition {extra['recognition_model']}")
    print(f"wall time {extra['wall_s']:.1f} s; plot {args.plot}")
    if args.json:
        from metagait_edge.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(summary, indent=2) + "\n")
    ok = summary["walker_identified"] == summary["walker_true"] and summary["messages"]["received"] > 0
    return 0 if ok else 5
