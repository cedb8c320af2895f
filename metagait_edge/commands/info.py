"""``metagait-edge info``: versions, data root, optional back-ends available here."""

from __future__ import annotations

import argparse
import importlib.util

NAME = "info"
HELP = "show versions, the data root and which optional back-ends are importable"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def run(args: argparse.Namespace) -> int:
    from metagait_edge import __version__, paths

    print(f"metagait-edge {__version__}")
    root = paths.data_root(required=False)
    print(f"data root : {root} ({'present' if root.is_dir() else 'missing'})")
    print(f"cache     : {paths.cache_dir()}")
    for name in ("torch", "onnxruntime", "tensorrt", "rclpy", "cv2", "zmq", "rosbags", "cyclonedds"):
        print(f"{name:11s}: {'available' if importlib.util.find_spec(name) else 'not installed'}")
    return 0
