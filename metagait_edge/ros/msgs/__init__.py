"""ROS 2 messages of metagait-edge, usable without ROS: one package, three concerns.

- :mod:`.schema`: the message and action definitions (those of ``metagait_edge_interfaces``), their type
  names and constants, and a ``rosbags`` typestore that (de)serializes CDR exactly as ROS 2 does;
- :mod:`.records`: the runtime-side records (:class:`ImuReading`, :class:`TrajectoryOutput`,
  :class:`IdentityOutput`) and runtime IMU frames <-> per-sensor readings;
- :mod:`.convert`: records <-> messages through a message factory (rosbags here, rclpy in the nodes).

``from metagait_edge.ros import msgs`` gives all three, as the nodes, bags and DDS use them.
"""

from __future__ import annotations

from metagait_edge.ros.msgs.convert import (
    MessageFactory, RosbagsFactory, default_factory, header_message, identity_from_message, identity_message,
    image_from_message, image_message, imu_from_message, imu_message, imu_readings, joint_trajectory_message,
    phase_message, stamp_message, stamp_ns, status_message, trajectory_from_message, trajectory_message,
)
from metagait_edge.ros.msgs.records import (
    STANDARD_GRAVITY, FrameAssembler, IdentityOutput, ImuReading, TrajectoryOutput, raw_from_readings,
    readings_from_raw,
)
from metagait_edge.ros.msgs.schema import (
    ACTION_DEFINITIONS, CALIBRATE, GAIT_PHASE, GAIT_STATUS, GAIT_TRAJECTORY, IMAGE, IMU, JOINT_TRAJECTORY,
    JOINT_TRAJECTORY_POINT, MSG_DEFINITIONS, PHASE_STATUS, STATE_CALIBRATING, STATE_FAULT, STATE_IDLE, STATE_RUNNING,
    STATUS_CLAMPED, STATUS_FALLBACK, STATUS_OK, STATUS_STALE, WALKER_IDENTITY, action_types, deserialize, serialize,
    split_action, typestore,
)

__all__ = [
    "ACTION_DEFINITIONS", "CALIBRATE", "GAIT_PHASE", "GAIT_STATUS", "GAIT_TRAJECTORY", "IMAGE", "IMU", "JOINT_TRAJECTORY",
    "JOINT_TRAJECTORY_POINT", "MSG_DEFINITIONS", "PHASE_STATUS", "STANDARD_GRAVITY", "STATE_CALIBRATING", "STATE_FAULT",
    "STATE_IDLE", "STATE_RUNNING", "STATUS_CLAMPED", "STATUS_FALLBACK", "STATUS_OK", "STATUS_STALE",
    "WALKER_IDENTITY", "FrameAssembler", "IdentityOutput", "ImuReading", "MessageFactory", "RosbagsFactory",
    "TrajectoryOutput", "action_types", "default_factory", "deserialize", "header_message", "identity_from_message",
    "identity_message", "image_from_message", "image_message", "imu_from_message", "imu_message", "imu_readings",
    "joint_trajectory_message", "phase_message", "raw_from_readings", "readings_from_raw", "serialize", "split_action",
    "stamp_message", "stamp_ns", "status_message", "trajectory_from_message", "trajectory_message", "typestore",
]
