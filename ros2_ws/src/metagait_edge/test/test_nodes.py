"""rclpy unit tests of the nodes' glue (run with colcon test where ROS 2 is installed)."""

from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="needs a ROS 2 installation (rclpy)")

from metagait_edge.ros import msgs  # noqa: E402
from metagait_edge_ros.common import RclpyFactory, declare_gait_params  # noqa: E402
from metagait_edge_ros.params import GaitParams  # noqa: E402


@pytest.fixture
def node():
    rclpy.init()
    n = rclpy.create_node("metagait_params_probe")
    yield n
    n.destroy_node()
    rclpy.shutdown()


def test_declared_params_match_schema(node):
    params = declare_gait_params(node)
    assert params == GaitParams()


def test_rclpy_messages_equal_rosbags_bytes():
    from rclpy.serialization import serialize_message

    out = msgs.TrajectoryOutput(np.arange(2 * 101, dtype=np.float32).reshape(2, 101), ["a", "b"], 42_000_000_123,
                                "w", True, 0.5, 1.0, msgs.STATUS_CLAMPED)
    live = msgs.trajectory_message(out, RclpyFactory())
    assert serialize_message(live) == msgs.serialize(msgs.trajectory_message(out), msgs.GAIT_TRAJECTORY)
    reading = msgs.ImuReading("ls", 7, (1.0, 2.0, 3.0), (0.1, 0.2, 0.3))
    assert serialize_message(msgs.imu_message(reading, RclpyFactory())) == msgs.serialize(
        msgs.imu_message(reading), msgs.IMU)
