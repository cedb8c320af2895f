"""ROS 2 wire-level pieces of metagait-edge, usable without a ROS 2 installation.

- :mod:`metagait_edge.ros.msgs`: the project's message definitions (the same text as the
  ``metagait_edge_interfaces`` package in ``ros2_ws``), a ``rosbags`` typestore that knows them, and
  conversions from runtime outputs (IMU samples, trajectories, identities, silhouettes) to ROS messages.
  The conversions build messages through a small factory, so the ROS 2 nodes use the very same code with
  rclpy message classes.
- :mod:`metagait_edge.ros.bag`: record and replay rosbag2 (mcap) bags with ``rosbags``.
- :mod:`metagait_edge.ros.dds`: publish / subscribe ROS 2 topics directly on DDS with ``cyclonedds``.

Nothing here imports rclpy. This module only holds the topic layout shared by nodes, bags and DDS, and
imports nothing heavy.
"""

from __future__ import annotations

#: The six IMUs (``metagait_edge.sensors``); each is also the ``frame_id`` of its ``sensor_msgs/Imu`` messages.
from metagait_edge.sensors import SENSORS

# Topic names relative to the node namespace (ROS 2 relative names).
IMU_TOPIC_PREFIX = "imu"
SILHOUETTE_TOPIC = "camera/silhouette"
IMAGE_TOPIC = "camera/image_raw"
IDENTITY_TOPIC = "walker_identity"
TRAJECTORY_TOPIC = "gait/trajectory"
JOINT_TRAJECTORY_TOPIC = "gait/joint_trajectory"
STATUS_TOPIC = "gait/status"
PHASE_TOPIC = "gait/phase"
CALIBRATE_ACTION = "calibrate"
ENROLL_ACTION = "enroll"


def check_sensor(sensor: str) -> str:
    if sensor not in SENSORS:
        raise ValueError(f"unknown IMU sensor {sensor!r}; expected one of {', '.join(SENSORS)}")
    return sensor


def imu_topic(sensor: str) -> str:
    """Relative topic of one IMU, e.g. ``imu/rf``."""
    return f"{IMU_TOPIC_PREFIX}/{check_sensor(sensor)}"


def resolve(topic: str, namespace: str = "") -> str:
    """Absolute ROS 2 name of a relative ``topic`` in ``namespace`` (``"" `` or ``"/"`` is the root)."""
    if topic.startswith("/"):
        return topic
    ns = namespace.strip("/")
    return f"/{ns}/{topic}" if ns else f"/{topic}"


def dds_topic(topic: str, namespace: str = "") -> str:
    """The DDS topic name ROS 2 uses on the wire for a topic: ``rt`` + the absolute ROS name."""
    return "rt" + resolve(topic, namespace)
