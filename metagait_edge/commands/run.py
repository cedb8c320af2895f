"""``metagait-edge run --config edge.yaml``: the edge runtime until SIGINT/SIGTERM, then a clean shutdown.

Exit status 0; 1 when an IMU source was configured but not one sample arrived (e.g. a serial port that
does not exist: the runtime keeps retrying it, logs a WARNING naming it and HOLDs with the error as reason).
"""

from __future__ import annotations

import argparse
import sys

NAME = "run"
HELP = "run the edge runtime (IMU + camera -> personalized, bounded trajectories over ZeroMQ)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="EdgeConfig YAML (example: deploy/edge.yaml)")
    parser.add_argument("--walker", default=None, help="declared walker (overrides runtime.walker)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--silhouette-method", choices=("mog2", "knn", "segmentation"), default=None,
                        help="camera front end (overrides camera.silhouette_method)")
    parser.add_argument("--detector", choices=("motion", "hog"), default=None,
                        help="camera person boxes (overrides camera.detector)")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import signal
    import threading

    from metagait_edge.config import load_config
    from metagait_edge.ros import bag  # noqa: F401  (the reader of rosbag IMU sources registers itself)
    from metagait_edge.runtime.config import EdgeConfig
    from metagait_edge.runtime.orchestrator import Runtime

    config = load_config(EdgeConfig, args.config)
    if args.walker is not None:
        config.runtime = dataclasses.replace(config.runtime, walker=args.walker)
    overrides = {k: v for k, v in (("silhouette_method", args.silhouette_method), ("detector", args.detector))
                 if v is not None}
    if overrides:
        try:
            config.camera = dataclasses.replace(config.camera, **overrides)
        except ValueError as exc:
            print(f"metagait-edge run: {exc}", file=sys.stderr)
            return 2
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    runtime = Runtime(config).start()
    try:
        stop.wait(args.duration)
    finally:
        runtime.stop()
        for s, h in old.items():
            signal.signal(s, h)
    print(f"metagait-edge run: stopped. {runtime.status_line()}")
    src = config.imu_source
    if src is not None and runtime.stats.samples == 0:  # the run never had input: not a success
        error = getattr(getattr(runtime.serial, "stats", None), "last_error", "")
        where = src.port if src.kind == "serial" else src.path
        print(f"metagait-edge run: no IMU sample received from {src.kind} {where}" + (f": {error}" if error else ""),
              file=sys.stderr)
        return 1
    return 0
