"""``metagait-edge record``: write a rosbag2 (mcap) bag of IMU, silhouette and trajectory topics."""

from __future__ import annotations

import argparse

NAME = "record"
HELP = "record a rosbag2 (mcap) bag of sensor_msgs/Imu (and images, trajectories) from HuGaDB files or a synthetic session"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="bag folder to create (must not exist unless --overwrite)")
    parser.add_argument("--source", choices=("hugadb", "synthetic"), required=True,
                        help="hugadb: IMU rows of HuGaDB text files; synthetic: IMU, silhouettes and trajectories")
    parser.add_argument("files", nargs="*", metavar="FILE",
                        help="HuGaDB .txt files: paths, or names inside the HuGaDB archive of $METAGAIT_DATA "
                             "(e.g. HuGaDB_v1_walking_01_00); files follow each other in time")
    parser.add_argument("--rate", type=float, default=58.8, help="IMU sample rate in Hz (HuGaDB: 58.8)")
    parser.add_argument("--frames", type=int, default=600, help="synthetic: number of IMU frames")
    parser.add_argument("--namespace", default="", help="ROS namespace of the topics (e.g. robot1)")
    parser.add_argument("--start-ns", type=int, default=0, help="stamp of the first sample, ns since epoch")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bag at --out")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from metagait_edge.ros import bag

    if args.source == "hugadb" and not args.files:
        raise ValueError("--source hugadb needs at least one FILE")
    if args.source == "synthetic" and args.files:
        raise ValueError("--source synthetic takes no FILE arguments")
    if args.rate <= 0:
        raise ValueError(f"--rate must be > 0, got {args.rate}")
    if args.start_ns < 0:
        raise ValueError(f"--start-ns must be >= 0, got {args.start_ns}")

    with bag.BagWriter(args.out, namespace=args.namespace, overwrite=args.overwrite) as writer:
        if args.source == "hugadb":
            stamp = args.start_ns
            period = int(round(1e9 / args.rate))
            for name in args.files:
                path = bag.resolve_hugadb_file(name)
                parsed = bag.read_hugadb_rows(path)
                if parsed.skipped:
                    print(f"{path.name}: skipped {parsed.skipped} glitch row(s)")
                for i in tqdm(range(len(parsed.rows)), desc=path.name, unit="frame", leave=False):
                    writer.write_imu_frame(parsed.rows[i], stamp + int(round(i * 1e9 / args.rate)))
                stamp += int(round(len(parsed.rows) * 1e9 / args.rate)) + period
        else:
            if args.frames < 1:
                raise ValueError(f"--frames must be >= 1, got {args.frames}")
            session = bag.synthetic_session(args.frames, rate_hz=args.rate)
            for raw, stamp in tqdm(list(zip(session["rows"], session["stamps"])), desc="imu", unit="frame",
                                   leave=False):
                writer.write_imu_frame(raw, args.start_ns + int(stamp))
            for stamp, image in session["images"]:
                writer.write_image(image, args.start_ns + stamp)
            for traj in session["trajectories"]:
                traj.stamp_ns += args.start_ns
                writer.write_trajectory(traj)

    with bag.BagReader(args.out) as reader:
        print(reader.summary().format())
    return 0
