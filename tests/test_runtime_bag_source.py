"""The runtime takes a rosbag2 bag (as ``metagait-edge record`` writes it) as its IMU input."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="bags need rosbags (dev extra)")

from metagait_edge.cli import main  # noqa: E402
from metagait_edge.imu.replay import FileImuSource  # noqa: E402
from metagait_edge.ros.bag import BagReader  # noqa: E402
from metagait_edge.runtime.config import SourceConfig  # noqa: E402


class _Sink:
    def __init__(self) -> None:
        self.rows = []

    def push_imu(self, raw, t, seq) -> None:
        self.rows.append(np.array(raw, copy=True))


def test_recorded_bag_replays_every_imu_frame_into_the_runtime(tmp_path):
    bag = tmp_path / "session"
    assert main(["record", "--out", str(bag), "--source", "synthetic", "--frames", "120"]) == 0
    with BagReader(bag) as reader:
        expected = np.stack([f.raw for f in reader.imu_frames(strict=False)])
    sink = _Sink()
    source = FileImuSource(SourceConfig(kind="rosbag", path=bag, rate_hz=2000.0), sink)
    source.start()
    deadline = time.monotonic() + 10
    while len(sink.rows) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.01)
    source.stop()
    assert len(expected) == 120
    assert np.array_equal(np.stack(sink.rows), expected)
