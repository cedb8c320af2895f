"""``metagait-edge calibrate --walker NAME``: on-device 5-shot calibration of one walker, then exit."""

from __future__ import annotations

import argparse

NAME = "calibrate"
HELP = "collect a walker's gait cycles, adapt the personalization model and commit their profile"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--walker", required=True, help="walker name (letters, digits, _ - .)")
    parser.add_argument("--config", default=None, help="EdgeConfig YAML (IMU source, calibration settings)")
    parser.add_argument("--port", default=None, help="serial port (overrides the config's IMU source)")
    parser.add_argument("--rate", type=float, default=None, help="IMU sample rate in Hz")
    parser.add_argument("--shots", type=int, default=None, help="cycles to adapt on (default: config, 5)")
    parser.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    parser.add_argument("--profiles", default=None, help="profile folder (default: config or $METAGAIT_CACHE/walkers)")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from tqdm import tqdm

    from metagait_edge.config import load_config
    from metagait_edge.ros import bag  # noqa: F401  (the reader of rosbag IMU sources registers itself)
    from metagait_edge.runtime.config import EdgeConfig, SourceConfig
    from metagait_edge.runtime.orchestrator import Runtime

    config = load_config(EdgeConfig, args.config) if args.config else EdgeConfig()
    if args.port or args.rate:
        src = config.imu_source or SourceConfig()
        src = dataclasses.replace(src, kind="serial", port=args.port or src.port, rate_hz=args.rate or src.rate_hz)
        config.sources = [src] + [s for s in config.sources if s.kind in ("camera", "video", "frames")]
    if config.imu_source is None:
        raise ValueError("calibration needs an IMU source: --port PATH or sources in --config")
    if args.profiles:
        config.calibration = dataclasses.replace(config.calibration, directory=Path(args.profiles))
    config.sinks.zmq.endpoints = list(config.sinks.zmq.endpoints)
    runtime = Runtime(config).start()
    bar = tqdm(total=args.shots or config.calibration.shots, unit="cycle", desc=f"calibrating {args.walker}")

    def feedback(n: int, k: int) -> None:
        bar.n = n
        bar.refresh()

    try:
        outcome = runtime.calibrate(args.walker, args.shots, feedback, timeout_s=args.timeout)
    finally:
        bar.close()
        runtime.stop()
    verdict = "committed" if outcome.success else f"NOT committed: {outcome.reason}"
    print(f"calibration of {args.walker}: {verdict}; held-out loss {outcome.error_before:.4f} -> "
          f"{outcome.error_after:.4f}; joint-angle RMSE {outcome.rmse_deg_before:.2f} -> {outcome.rmse_deg_after:.2f} deg; "
          f"{outcome.cycles_used} cycles, rejected {outcome.rejected or 'none'}, adapt {outcome.adapt_s:.2f} s, "
          f"processing {outcome.process_s:.2f} s, wall {outcome.wall_s:.1f} s (walking the cycles)")
    return 0 if outcome.success else 4
