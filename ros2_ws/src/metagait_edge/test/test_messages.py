"""Messages built by the nodes (rclpy) and by the library's rosbags encoding (bags, DDS without ROS) are the
same bytes, both ways, for every message type the package publishes; the parameter schema is what the
nodes declare; and stamps keep the order and spacing of the host times they come from."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
from rclpy.serialization import deserialize_message, serialize_message

from metagait_edge.ros import msgs
from metagait_edge_ros.common import HostClock, RclpyFactory, declare_gait_params, read_gait_params
from metagait_edge_ros.params import GaitParams

TRAJ = msgs.TrajectoryOutput(np.arange(2 * 101, dtype=np.float32).reshape(2, 101) / 7, ["hip_r", "knee_r"],
                             42_000_000_123, "ana", True, 0.25, 1.05, msgs.STATUS_CLAMPED, "pelvis")
IDENT = msgs.IdentityOutput(walker_id="", known=False, score=0.0, threshold=0.6, stamp_ns=7_000_000_001,
                            best_match="ana", num_frames=30, embedding=np.linspace(-1, 1, 16, dtype=np.float32),
                            reason="unknown: nearest ana at 0.9 > threshold 0.6")
READING = msgs.ImuReading("ls", 9_000_000_007, (1.0, -2.5, 9.81), (0.1, 0.2, -0.3))


def builders():
    image = np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)
    return {
        msgs.IMU: lambda f: msgs.imu_message(READING, f, "w/"),
        msgs.GAIT_TRAJECTORY: lambda f: msgs.trajectory_message(TRAJ, f),
        msgs.JOINT_TRAJECTORY: lambda f: msgs.joint_trajectory_message(TRAJ, f, ["hip", "knee"]),
        msgs.WALKER_IDENTITY: lambda f: msgs.identity_message(IDENT, f),
        msgs.GAIT_STATUS: lambda f: msgs.status_message(5_000_000_000, msgs.STATE_FAULT, walker_id="ana",
                                                        personalized=True, imu_rate_hz=58.8, dropped_samples=3,
                                                        latency_ms=1.5, backend="onnxruntime",
                                                        message="IMU stale", factory=f),
        msgs.IMAGE: lambda f: msgs.image_message(image, 3_000_000_000, "camera", f, "mono8"),
    }


@pytest.mark.parametrize("typename", list(builders()))
def test_rclpy_and_rosbags_bytes_are_identical_both_ways(typename):
    build = builders()[typename]
    live = build(RclpyFactory())
    offline = build(None)
    wire = serialize_message(live)
    assert wire == msgs.serialize(offline, typename)
    # rosbags bytes -> an rclpy message that serializes to the same bytes (compared as bytes: rclpy keeps the
    # Python float it was given in a float32 field until the message is serialized)
    assert serialize_message(deserialize_message(msgs.serialize(offline, typename), type(live))) == wire
    # rclpy bytes -> rosbags message that serializes back to the same bytes
    assert msgs.serialize(msgs.deserialize(wire, typename), typename) == wire


def test_records_survive_the_rclpy_round_trip():
    live = msgs.trajectory_message(TRAJ, RclpyFactory())
    back = msgs.trajectory_from_message(deserialize_message(serialize_message(live), type(live)))
    assert np.array_equal(back.trajectory, TRAJ.trajectory) and back.channel_names == TRAJ.channel_names
    assert (back.stamp_ns, back.walker_id, back.status) == (TRAJ.stamp_ns, TRAJ.walker_id, TRAJ.status)
    reading = msgs.imu_from_message(deserialize_message(serialize_message(msgs.imu_message(READING, RclpyFactory())),
                                                        type(msgs.imu_message(READING, RclpyFactory()))))
    assert reading == READING
    live = msgs.identity_message(IDENT, RclpyFactory())
    back = msgs.identity_from_message(deserialize_message(serialize_message(live), type(live)))
    assert (back.known, back.best_match, back.reason) == (False, "ana", IDENT.reason)


@pytest.fixture
def node(ros):
    n = rclpy.create_node("metagait_params_probe")
    yield n
    n.destroy_node()


def test_declared_params_match_schema(node):
    declare_gait_params(node)
    assert read_gait_params(node) == GaitParams()
    names = {name for name in GaitParams.__dataclass_fields__}
    assert names <= set(node._parameters)


def test_host_clock_stamps_keep_order_and_spacing_of_host_times(node):
    clock = HostClock(node)
    start = time.monotonic()
    host_times = start + np.arange(2000) * 1e-4  # 0.1 ms apart: far below any jitter between two clock reads
    stamps = np.array([clock.ns(t) for t in host_times])
    assert (np.diff(stamps) > 0).all()
    assert np.abs(np.diff(stamps) - 100_000).max() <= 1  # the host spacing, to the nanosecond's rounding
    # ... and they are this node's ROS time: an event now is stamped now
    before = node.get_clock().now().nanoseconds
    stamp_now = clock.ns(time.monotonic())
    after = node.get_clock().now().nanoseconds
    assert before - 2_000_000 <= stamp_now <= after + 2_000_000
