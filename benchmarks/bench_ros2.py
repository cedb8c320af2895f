"""IMU frame into the ROS 2 graph -> new reference received, over ROS (/gait/trajectory) and ZeroMQ, same run.

    make ros2-ws && source ros2_ws/ros2-env.sh
    .venv/bin/python benchmarks/bench_ros2.py --seconds 120 --json ros2_latency.json

A virtual IMU board writes a real HuGaDB walk as binary frames (docs/imu_protocol.md) to a pseudo-terminal
at the recording's 58.8 Hz; `ros2 launch metagait_edge gait.launch.py serial_port:=<pty>` reads it
(imu_node -> six sensor_msgs/Imu topics -> trajectory_node -> runtime). This process subscribes to
/gait/trajectory as another ROS node and to the trajectory node's ZeroMQ output. For every newly computed
cycle, latency = arrival of its first message - the time the frame that completed the cycle was written to
the serial port. The frame is found from the message's header stamp (the newest IMU sample the reference
was computed from, stamped by imu_node on arrival): the last frame written at or before that stamp. The
ZeroMQ message of the same cycle is matched by its trajectory bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

try:
    import rclpy
    from metagait_edge_interfaces.msg import GaitTrajectory
except ImportError as exc:  # pragma: no cover - the message says what to do
    sys.exit(f"bench_ros2: {exc}. Build and source the ROS 2 workspace first: make ros2-ws && "
             "source ros2_ws/ros2-env.sh")

import zmq

from metagait_edge.runtime.zmq_schema import decode
from metagait_edge.runtime.virtual_walker import PtySerialLink
from metagait_edge.ros.bag import read_hugadb_rows, resolve_hugadb_file

WALK = "HuGaDB_v1_walking_08_02"


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="measurement time after the first reference")
    ap.add_argument("--walk", default=WALK, help="HuGaDB recording replayed as the IMU board")
    ap.add_argument("--port", type=int, default=5591, help="ZeroMQ port of the trajectory node")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    if os.environ.get("RMW_IMPLEMENTATION") is None:
        print("bench_ros2: RMW_IMPLEMENTATION unset; source ros2_ws/ros2-env.sh first", file=sys.stderr)

    board = PtySerialLink(read_hugadb_rows(resolve_hugadb_file(args.walk)).rows, 58.8,
                          tempfile.mkdtemp(prefix="bench-ros2-")).start()
    stop = threading.Event()
    endpoint = f"tcp://127.0.0.1:{args.port}"
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / "bench_ros2_launch.log", "w")
    launch = subprocess.Popen(["ros2", "launch", "metagait_edge", "gait.launch.py", f"serial_port:={os.path.realpath(board.path)}",
                               f"zmq_endpoint:={endpoint}"], stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    rclpy.init()
    node = rclpy.create_node("bench_trajectory_subscriber")
    ros_new: list[tuple[int, int, bytes]] = []  # (arrival ns, header stamp ns, data bytes) of each new cycle
    last = {"data": None}

    def on_traj(m) -> None:
        now = time.time_ns()
        if m.status == GaitTrajectory.STATUS_STALE:
            return
        data = bytes(np.asarray(m.data, np.float32).tobytes())
        if data != last["data"]:
            ros_new.append((now, stamp_ns(m), data))
            last["data"] = data

    node.create_subscription(GaitTrajectory, "/gait/trajectory", on_traj, 10)
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"gait.trajectory")
    sub.connect(endpoint)
    zmq_new: dict[bytes, int] = {}

    def zmq_reader() -> None:
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        while not stop.is_set():
            if poller.poll(100):
                frames = sub.recv_multipart()
                now = time.time_ns()
                message = decode(frames)
                if message.payload.size:
                    zmq_new.setdefault(message.payload.astype("<f4").tobytes(), now)

    reader = threading.Thread(target=zmq_reader, daemon=True)
    reader.start()
    try:
        quiet = {} if sys.stderr.isatty() else {"mininterval": 10.0}  # a log file gets a line per 10 s
        with tqdm(desc="waiting for the graph's first reference", unit="s", total=120, **quiet) as bar:
            t0 = time.monotonic()
            while not ros_new and time.monotonic() - t0 < 120:
                rclpy.spin_once(node, timeout_sec=0.5)
                bar.n = int(time.monotonic() - t0)
                bar.refresh()
        if not ros_new:
            raise SystemExit(f"no reference from the graph in 120 s; see {log.name}")
        start = len(ros_new)
        t_end = time.monotonic() + args.seconds
        with tqdm(desc="measuring", unit="s", total=int(args.seconds), **quiet) as bar:
            while time.monotonic() < t_end:
                rclpy.spin_once(node, timeout_sec=0.2)
                bar.n = int(args.seconds - max(0.0, t_end - time.monotonic()))
                bar.set_postfix(cycles=len(ros_new) - start, refresh=False)
    finally:
        launch.send_signal(signal.SIGINT)
        code = launch.wait(60)
        stop.set()
        board.stop()
        node.destroy_node()
        rclpy.try_shutdown()

    if board.written > len(board.write_times_ns):
        raise SystemExit("bench_ros2: the run wrote more frames than the link keeps write times for; use fewer --seconds")
    written = board.write_times_ns[: board.written]  # CLOCK_REALTIME of frame k, k = 0, 1, ...
    ros_ms, zmq_ms = [], []
    for arrival, stamp, data in ros_new[start:]:
        i = int(np.searchsorted(written, stamp, side="right")) - 1
        if i < 0:
            continue
        ros_ms.append((arrival - written[i]) / 1e6)
        if data in zmq_new:
            zmq_ms.append((zmq_new[data] - written[i]) / 1e6)

    def pct(values: list[float]) -> dict:
        v = np.asarray(values)
        return {"n": int(v.size), "p50_ms": float(np.median(v)) if v.size else None,
                "p99_ms": float(np.percentile(v, 99)) if v.size else None, "max_ms": float(v.max()) if v.size else None}

    result = {"walk": args.walk, "imu_rate_hz": 58.8, "seconds": args.seconds, "ros": pct(ros_ms),
              "zmq": pct(zmq_ms), "launch_exit": code, "rmw": os.environ.get("RMW_IMPLEMENTATION", "")}
    print(f"new references: {len(ros_ms)} over ROS, {len(zmq_ms)} matched over ZeroMQ; launch exit {code}")
    for path, r in (("ROS 2 /gait/trajectory", result["ros"]), ("ZeroMQ gait.trajectory", result["zmq"])):
        if r["n"]:
            print(f"  serial frame written -> {path} received: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
                  f"max {r['max_ms']:.2f} ms (n={r['n']})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if ros_ms and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
