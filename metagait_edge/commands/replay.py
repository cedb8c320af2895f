"""``metagait-edge replay``: read a rosbag2 bag back and summarize what the runtime would get from it."""

from __future__ import annotations

import argparse

NAME = "replay"
HELP = "read a rosbag2 bag (mcap or sqlite3): topics, counts, IMU frames and rate, trajectories"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="bag folder (as written by `metagait-edge record` or `ros2 bag record`)")
    parser.add_argument("--lenient", action="store_true",
                        help="skip IMU frames that lack a sensor instead of failing on them")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from metagait_edge.ros import bag, msgs

    with bag.BagReader(args.bag) as reader:
        summary = reader.summary()
        print(summary.format())
        stamps = []
        if reader.imu_topics():
            total = min(t.count for t in summary.topics if t.msgtype == msgs.IMU)
            for frame in tqdm(reader.imu_frames(strict=not args.lenient), total=total, unit="frame", leave=False):
                stamps.append(frame.t_us)
            if len(stamps) > 1:
                rate = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e6)
                print(f"IMU frames: {len(stamps)} at {rate:.2f} Hz "
                      f"({getattr(reader, 'incomplete_frames', 0)} incomplete skipped)")
            else:
                print(f"IMU frames: {len(stamps)}")
        trajectory_topics = [t.topic for t in summary.topics if t.msgtype == msgs.GAIT_TRAJECTORY]
        for topic in trajectory_topics:
            shapes = set()
            n = 0
            for _, _, message in reader.messages([topic]):
                out = msgs.trajectory_from_message(message)
                shapes.add(out.trajectory.shape)
                n += 1
            print(f"trajectories on {topic}: {n}, shape(s) {sorted(shapes)}")
    return 0
