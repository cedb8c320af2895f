"""The metagait-edge ROS 2 message and action definitions, and a ``rosbags`` typestore that knows them.

The definitions are read from the ``metagait_edge_interfaces`` ROS 2 package's own ``.msg`` / ``.action``
files (``ros2_ws/src/metagait_edge_interfaces``, shipped with the library as ``resources/ros_interfaces``), so
the schema is written once; the status and state constants come from those files too. They are registered,
together with the standard ROS 2 Humble types, in :func:`typestore`, which (de)serializes CDR exactly as ROS 2
does (``serialize_cdr`` / ``deserialize_cdr``).
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Any

IMU = "sensor_msgs/msg/Imu"
IMAGE = "sensor_msgs/msg/Image"
JOINT_TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
JOINT_TRAJECTORY_POINT = "trajectory_msgs/msg/JointTrajectoryPoint"
GAIT_TRAJECTORY = "metagait_edge_interfaces/msg/GaitTrajectory"
WALKER_IDENTITY = "metagait_edge_interfaces/msg/WalkerIdentity"
GAIT_STATUS = "metagait_edge_interfaces/msg/GaitStatus"
GAIT_PHASE = "metagait_edge_interfaces/msg/GaitPhase"
CALIBRATE = "metagait_edge_interfaces/action/Calibrate"

PACKAGE = "metagait_edge_interfaces"
#: The ROS 2 interface files, shipped as package data: ``resources/ros_interfaces/{msg,action}`` are links to
#: ``ros2_ws/src/metagait_edge_interfaces/{msg,action}`` (a wheel holds copies), the one source of the schema.
INTERFACES = ("ros_interfaces",)


def interface_files(kind: str) -> dict[str, Any]:
    """``pkg/<kind>/Name`` -> the shipped ``.msg`` (kind ``msg``) or ``.action`` (``action``) file, by name."""
    folder = resources.files("metagait_edge.resources").joinpath(*INTERFACES, kind)
    files = {f"{PACKAGE}/{kind}/{f.name.rsplit('.', 1)[0]}": f for f in folder.iterdir() if f.name.endswith(f".{kind}")}
    if not files:
        raise FileNotFoundError(f"no .{kind} files in {folder} (the metagait_edge_interfaces definitions)")
    return dict(sorted(files.items()))


def strip_comments(text: str) -> str:
    """A definition without its comments and blank lines (what the types are made of)."""
    lines = (line.split("#", 1)[0].rstrip() for line in text.splitlines())
    return "".join(f"{line}\n" for line in lines if line.strip())


def constants(text: str) -> dict[str, int]:
    """The integer constants of a definition (``uint8 STATUS_OK=0`` -> {"STATUS_OK": 0})."""
    found = {}
    for line in strip_comments(text).splitlines():
        m = re.fullmatch(r"\s*u?int\d+\s+([A-Z][A-Z0-9_]*)\s*=\s*(-?\d+)\s*", line)
        if m:
            found[m.group(1)] = int(m.group(2))
    return found


# Message and action definitions (ROS 2 .msg syntax), read from the interface files without comments.
MSG_DEFINITIONS: dict[str, str] = {name: strip_comments(f.read_text()) for name, f in interface_files("msg").items()}
ACTION_DEFINITIONS: dict[str, str] = {name: strip_comments(f.read_text())
                                      for name, f in interface_files("action").items()}

_STATUS = constants(MSG_DEFINITIONS[GAIT_TRAJECTORY])
_STATE = constants(MSG_DEFINITIONS[GAIT_STATUS])
STATUS_OK, STATUS_CLAMPED, STATUS_FALLBACK, STATUS_STALE = (
    _STATUS[n] for n in ("STATUS_OK", "STATUS_CLAMPED", "STATUS_FALLBACK", "STATUS_STALE"))
STATE_IDLE, STATE_RUNNING, STATE_CALIBRATING, STATE_FAULT = (
    _STATE[n] for n in ("STATE_IDLE", "STATE_RUNNING", "STATE_CALIBRATING", "STATE_FAULT"))
_PHASE = constants(MSG_DEFINITIONS[GAIT_PHASE])
#: GaitPhase.status per runtime status word (runtime.phase_stream.PhaseEstimate.status).
PHASE_STATUS = {"OK": _PHASE["STATUS_OK"], "DEGRADED": _PHASE["STATUS_DEGRADED"], "HOLD": _PHASE["STATUS_HOLD"]}


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
