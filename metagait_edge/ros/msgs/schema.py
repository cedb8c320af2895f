"""The metagait-edge ROS 2 message and action definitions, and a ``rosbags`` typestore that knows them.

The definitions are the ones of the ``metagait_edge_interfaces`` ROS 2 package
(``ros2_ws/src/metagait_edge_interfaces``), without comments; a test checks both parse to the same types.
They are registered, together with the standard ROS 2 Humble types, in :func:`typestore`, which
(de)serializes CDR exactly as ROS 2 does (``serialize_cdr`` / ``deserialize_cdr``).
"""

from __future__ import annotations

import functools
from typing import Any

IMU = "sensor_msgs/msg/Imu"
IMAGE = "sensor_msgs/msg/Image"
JOINT_TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
JOINT_TRAJECTORY_POINT = "trajectory_msgs/msg/JointTrajectoryPoint"
GAIT_TRAJECTORY = "metagait_edge_interfaces/msg/GaitTrajectory"
WALKER_IDENTITY = "metagait_edge_interfaces/msg/WalkerIdentity"
GAIT_STATUS = "metagait_edge_interfaces/msg/GaitStatus"
CALIBRATE = "metagait_edge_interfaces/action/Calibrate"

STATUS_OK, STATUS_CLAMPED, STATUS_FALLBACK, STATUS_STALE = 0, 1, 2, 3
STATE_IDLE, STATE_RUNNING, STATE_CALIBRATING, STATE_FAULT = 0, 1, 2, 3

# Message definitions (ROS 2 .msg syntax), identical in meaning to the files in ros2_ws.
MSG_DEFINITIONS: dict[str, str] = {
    WALKER_IDENTITY: """\
std_msgs/Header header
string walker_id
bool known
float32 score
float32 threshold
string best_match
uint32 num_frames
float32[] embedding
""",
    GAIT_TRAJECTORY: """\
uint8 STATUS_OK=0
uint8 STATUS_CLAMPED=1
uint8 STATUS_FALLBACK=2
uint8 STATUS_STALE=3
std_msgs/Header header
string walker_id
bool personalized
float32 phase
float32 cycle_duration
string[] channel_names
uint32 num_channels
uint32 num_points
float32[] data
uint8 status
""",
    GAIT_STATUS: """\
uint8 STATE_IDLE=0
uint8 STATE_RUNNING=1
uint8 STATE_CALIBRATING=2
uint8 STATE_FAULT=3
std_msgs/Header header
uint8 state
string walker_id
bool personalized
float32 imu_rate_hz
uint64 dropped_samples
float32 latency_ms
string backend
string message
""",
}

ACTION_DEFINITIONS: dict[str, str] = {
    CALIBRATE: """\
string walker
uint32 shots
---
bool success
float32 error_before
float32 error_after
string reason
---
uint32 cycles_collected
uint32 cycles_required
""",
}


def split_action(text: str, where: str = "action") -> tuple[str, str, str]:
    """Goal, result and feedback sections of an ``.action`` definition."""
    parts: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip() == "---":
            parts.append([])
        else:
            parts[-1].append(line)
    if len(parts) != 3:
        raise ValueError(f"{where}: an action needs goal, result and feedback separated by '---', "
                         f"found {len(parts)} section(s)")
    goal, result, feedback = ("\n".join(p) + "\n" for p in parts)
    return goal, result, feedback


def action_types(name: str, text: str) -> dict[str, Any]:
    """rosbags types for an action ``pkg/action/Name``: its goal, result and feedback, and the wire types.

    Besides ``_Goal``, ``_Result`` and ``_Feedback`` this registers what rosidl generates for the action's
    hidden topics and services: ``_FeedbackMessage`` (on ``<action>/_action/feedback``) and the
    ``_SendGoal`` / ``_GetResult`` request and response.
    """
    from rosbags.typesys import get_types_from_msg

    goal, result, feedback = split_action(text, name)
    types: dict[str, Any] = {}
    types.update(get_types_from_msg(goal, f"{name}_Goal"))
    types.update(get_types_from_msg(result, f"{name}_Result"))
    types.update(get_types_from_msg(feedback, f"{name}_Feedback"))
    wire = {
        "_FeedbackMessage": f"unique_identifier_msgs/UUID goal_id\n{name}_Feedback feedback\n",
        "_SendGoal_Request": f"unique_identifier_msgs/UUID goal_id\n{name}_Goal goal\n",
        "_SendGoal_Response": "bool accepted\nbuiltin_interfaces/Time stamp\n",
        "_GetResult_Request": "unique_identifier_msgs/UUID goal_id\n",
        "_GetResult_Response": f"int8 status\n{name}_Result result\n",
    }
    for suffix, definition in wire.items():
        types.update(get_types_from_msg(definition, f"{name}{suffix}"))
    return types


@functools.lru_cache(maxsize=None)
def typestore():
    """A ROS 2 Humble ``rosbags`` typestore with the metagait-edge messages and actions registered."""
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg

    store = get_typestore(Stores.ROS2_HUMBLE)
    types: dict[str, Any] = {}
    for name, text in MSG_DEFINITIONS.items():
        types.update(get_types_from_msg(text, name))
    for name, text in ACTION_DEFINITIONS.items():
        types.update(action_types(name, text))
    store.register(types)
    return store


def serialize(message: Any, typename: str) -> bytes:
    """CDR bytes (with the 4-byte encapsulation header) of a rosbags message, as ROS 2 puts on the wire."""
    return bytes(typestore().serialize_cdr(message, typename))


def deserialize(data: bytes | memoryview, typename: str) -> Any:
    return typestore().deserialize_cdr(data, typename)
