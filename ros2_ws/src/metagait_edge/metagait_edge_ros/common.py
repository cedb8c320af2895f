"""rclpy glue shared by the nodes: message factory, parameter declaration, QoS, clock conversion."""

from __future__ import annotations

import array
import importlib
import time
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data

from metagait_edge.config import from_dict
from metagait_edge_ros.params import GaitParams, defaults

SENSOR_QOS: QoSProfile = qos_profile_sensor_data
DEFAULT_QOS = QoSProfile(depth=10)


class RclpyFactory:
    """The ``MessageFactory`` of ``metagait_edge.ros.msgs`` backed by rclpy's generated message classes."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def _cls(self, typename: str) -> type:
        cls = self._classes.get(typename)
        if cls is None:
            pkg, kind, name = typename.split("/")
            cls = getattr(importlib.import_module(f"{pkg}.{kind}"), name)
            self._classes[typename] = cls
        return cls

    def new(self, typename: str, **fields: Any) -> Any:
        return self._cls(typename)(**fields)

    # rclpy wants array.array (or lists) for unbounded numeric sequences, numpy for fixed-size arrays.
    def float32_seq(self, values: Any) -> array.array:
        return array.array("f", np.asarray(values, dtype=np.float32).reshape(-1).tobytes())

    def float64_seq(self, values: Any) -> array.array:
        return array.array("d", np.asarray(values, dtype=np.float64).reshape(-1).tobytes())

    def float64_array(self, values: Any) -> np.ndarray:
        return np.asarray(values, dtype=np.float64).reshape(-1)

    def uint8_seq(self, values: Any) -> array.array:
        return array.array("B", np.ascontiguousarray(values, dtype=np.uint8).tobytes())


def declare_gait_params(node: Node) -> GaitParams:
    """Declare every GaitParams field on ``node`` (defaults from the schema) and return the checked values."""
    values: dict[str, Any] = {}
    for name, default in defaults().items():
        if isinstance(default, list):
            # An empty list has no inferable parameter type; declare the type instead of a value.
            node.declare_parameter(name, Parameter.Type.STRING_ARRAY)
        else:
            node.declare_parameter(name, default)
        value = node.get_parameter(name).value
        values[name] = default if value is None else (list(value) if isinstance(default, list) else value)
    return from_dict(GaitParams, values)


def ros_stamp_ns(node: Node, monotonic_s: float | None = None) -> int:
    """ROS time (ns) of an event that happened at host ``time.monotonic()`` ``monotonic_s`` (default: now)."""
    now = node.get_clock().now().nanoseconds
    if monotonic_s is None:
        return now
    return now - int((time.monotonic() - monotonic_s) * 1e9)
