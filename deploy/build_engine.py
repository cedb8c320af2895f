#!/usr/bin/env python3
"""Thin wrapper: ``python deploy/build_engine.py ARGS`` == ``metagait-edge build-engine ARGS``.

For Jetson setups where the package is installed but the console script is not on PATH (e.g. run from
a systemd ExecStartPre or a container entry point).
"""

from __future__ import annotations

import sys

from metagait_edge.cli import main

if __name__ == "__main__":
    sys.exit(main(["build-engine", *sys.argv[1:]]))
