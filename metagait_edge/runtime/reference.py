"""What a pull-style consumer of the runtime (the ROS 2 trajectory node) reads: the current reference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Reference:
    """The bounded gait reference the runtime stands behind now (never produced while status is HOLD)."""

    trajectory: np.ndarray  # [C, 101] one gait cycle per channel, inside the safety envelope
    channel_names: list[str]
    walker: str  # "" for the generic model
    personalized: bool
    phase: float  # estimated gait phase in [0, 1) at input_time_s
    cycle_s: float  # duration of the cycle the trajectory spans
    status: str  # "OK" or "DEGRADED" (runtime.zmq_schema.STATUSES)
    reason: str  # why DEGRADED; "" when OK
    clamped: bool  # the safety envelope clamped or rate-limited at least one point
    serial: int  # running number of the trajectory: a new value means a newly computed cycle
    input_time_s: float  # host monotonic time of the newest IMU sample the runtime had processed
