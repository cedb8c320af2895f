"""Runtime records <-> ROS 2 messages, built through a message *factory*.

Conversions build messages through a factory (:class:`RosbagsFactory` here; the ROS 2 nodes pass an
rclpy-backed one), so bags, DDS and the live nodes all produce the same message contents.

Units follow REP 103 / REP 145: accelerations in m/s^2, angular velocities in rad/s, an orientation
covariance of ``[-1, 0, ...]`` meaning "no orientation estimate".
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol, Sequence

import numpy as np

from metagait_edge.ros import SENSORS
from metagait_edge.ros.msgs.records import IdentityOutput, ImuReading, TrajectoryOutput
from metagait_edge.ros.msgs.schema import (
    GAIT_PHASE, GAIT_STATUS, GAIT_TRAJECTORY, IMAGE, IMU, JOINT_TRAJECTORY, JOINT_TRAJECTORY_POINT, PHASE_STATUS,
    STATE_CALIBRATING, STATE_FAULT, STATE_IDLE, STATE_RUNNING, WALKER_IDENTITY, typestore,
)


class MessageFactory(Protocol):
    """How conversions build messages; one implementation per message library (rosbags, rclpy)."""

    def new(self, typename: str, **fields: Any) -> Any: ...

    def float32_seq(self, values: Any) -> Any: ...

    def float64_seq(self, values: Any) -> Any: ...

    def float64_array(self, values: Any) -> Any: ...

    def uint8_seq(self, values: Any) -> Any: ...


class RosbagsFactory:
    """Builds ``rosbags`` message objects (numpy arrays for numeric sequences)."""

    def __init__(self, store: Any = None) -> None:
        self.store = store if store is not None else typestore()

    def new(self, typename: str, **fields: Any) -> Any:
        return self.store.types[typename](**fields)

    def float32_seq(self, values: Any) -> np.ndarray:
        return np.ascontiguousarray(values, dtype=np.float32).reshape(-1)

    def float64_seq(self, values: Any) -> np.ndarray:
        return np.ascontiguousarray(values, dtype=np.float64).reshape(-1)

    float64_array = float64_seq

    def uint8_seq(self, values: Any) -> np.ndarray:
        return np.ascontiguousarray(values, dtype=np.uint8).reshape(-1)


def default_factory(factory: MessageFactory | None) -> MessageFactory:
    return factory if factory is not None else RosbagsFactory()


def stamp_message(stamp_ns: int, factory: MessageFactory | None = None) -> Any:
    factory = default_factory(factory)
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise ValueError(f"negative timestamp {stamp_ns} ns")
    return factory.new("builtin_interfaces/msg/Time", sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header_message(stamp_ns: int, frame_id: str, factory: MessageFactory | None = None) -> Any:
    factory = default_factory(factory)
    return factory.new("std_msgs/msg/Header", stamp=stamp_message(stamp_ns, factory), frame_id=str(frame_id))


def imu_message(reading: ImuReading, factory: MessageFactory | None = None, frame_prefix: str = "") -> Any:
    """``sensor_msgs/Imu`` for one reading; ``frame_id`` is ``frame_prefix + sensor`` (e.g. ``rf``)."""
    factory = default_factory(factory)
    vec = "geometry_msgs/msg/Vector3"
    no_orientation = np.zeros(9)
    no_orientation[0] = -1.0  # REP 145: this IMU gives no orientation estimate
    return factory.new(
        IMU,
        header=header_message(reading.stamp_ns, frame_prefix + reading.sensor, factory),
        orientation=factory.new("geometry_msgs/msg/Quaternion", x=0.0, y=0.0, z=0.0, w=1.0),
        orientation_covariance=factory.float64_array(no_orientation),
        angular_velocity=factory.new(vec, x=reading.gyro[0], y=reading.gyro[1], z=reading.gyro[2]),
        angular_velocity_covariance=factory.float64_array(np.zeros(9)),
        linear_acceleration=factory.new(vec, x=reading.accel[0], y=reading.accel[1], z=reading.accel[2]),
        linear_acceleration_covariance=factory.float64_array(np.zeros(9)),
    )


def imu_from_message(msg: Any, frame_prefix: str = "") -> ImuReading:
    frame = str(msg.header.frame_id)
    sensor = frame[len(frame_prefix):] if frame_prefix and frame.startswith(frame_prefix) else frame
    if sensor not in SENSORS:
        raise ValueError(f"Imu message: frame_id {frame!r} is not one of the sensors {', '.join(SENSORS)}")
    av, la = msg.angular_velocity, msg.linear_acceleration
    return ImuReading(sensor, stamp_ns(msg.header.stamp), (la.x, la.y, la.z), (av.x, av.y, av.z))


def trajectory_message(out: TrajectoryOutput, factory: MessageFactory | None = None) -> Any:
    """``metagait_edge_interfaces/GaitTrajectory``: the [C, P] array row-major in ``data``."""
    factory = default_factory(factory)
    channels, points = out.trajectory.shape
    return factory.new(
        GAIT_TRAJECTORY,
        header=header_message(out.stamp_ns, out.frame_id, factory),
        walker_id=out.walker_id,
        personalized=bool(out.personalized),
        phase=float(out.phase),
        cycle_duration=float(out.cycle_duration),
        channel_names=list(out.channel_names),
        num_channels=int(channels),
        num_points=int(points),
        data=factory.float32_seq(out.trajectory),
        status=int(out.status),
    )


def trajectory_from_message(msg: Any) -> TrajectoryOutput:
    channels, points = int(msg.num_channels), int(msg.num_points)
    data = np.asarray(msg.data, dtype=np.float32)
    if data.size != channels * points:
        raise ValueError(
            f"GaitTrajectory: data has {data.size} values, expected num_channels*num_points = {channels}*{points}"
        )
    return TrajectoryOutput(
        trajectory=data.reshape(channels, points).copy(),
        channel_names=list(msg.channel_names),
        stamp_ns=stamp_ns(msg.header.stamp),
        walker_id=str(msg.walker_id),
        personalized=bool(msg.personalized),
        phase=float(msg.phase),
        cycle_duration=float(msg.cycle_duration),
        status=int(msg.status),
        frame_id=str(msg.header.frame_id),
    )


def joint_trajectory_message(
    out: TrajectoryOutput, factory: MessageFactory | None = None, joint_names: Sequence[str] | None = None
) -> Any:
    """``trajectory_msgs/JointTrajectory``: one point per sample, ``positions`` = the channels at that sample.

    The cycle's points are spread evenly over ``cycle_duration`` (``time_from_start``). ``joint_names``
    renames the channels for the controller (default: the channel names). Only meaningful when the
    channels are joint angles (radians) a position controller can track.
    """
    factory = default_factory(factory)
    names = list(joint_names) if joint_names is not None else list(out.channel_names)
    channels, points = out.trajectory.shape
    if len(names) != channels:
        raise ValueError(f"joint_trajectory_message: {len(names)} joint name(s) for {channels} channel(s)")
    if out.cycle_duration <= 0:
        raise ValueError("joint_trajectory_message: cycle_duration must be > 0 to time the points")
    step = out.cycle_duration / max(points - 1, 1)
    pts = []
    for i in range(points):
        t_ns = int(round(i * step * 1e9))
        pts.append(
            factory.new(
                JOINT_TRAJECTORY_POINT,
                positions=factory.float64_seq(out.trajectory[:, i]),
                velocities=factory.float64_seq(np.zeros(0)),
                accelerations=factory.float64_seq(np.zeros(0)),
                effort=factory.float64_seq(np.zeros(0)),
                time_from_start=factory.new(
                    "builtin_interfaces/msg/Duration", sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000
                ),
            )
        )
    return factory.new(
        JOINT_TRAJECTORY,
        header=header_message(out.stamp_ns, out.frame_id, factory),
        joint_names=names,
        points=pts,
    )


def identity_message(out: IdentityOutput, factory: MessageFactory | None = None) -> Any:
    factory = default_factory(factory)
    return factory.new(
        WALKER_IDENTITY,
        header=header_message(out.stamp_ns, out.frame_id, factory),
        walker_id=out.walker_id,
        known=bool(out.known),
        score=float(out.score),
        threshold=float(out.threshold),
        best_match=out.best_match,
        num_frames=int(out.num_frames),
        embedding=factory.float32_seq(out.embedding),
        reason=out.reason,
    )


def identity_from_message(msg: Any) -> IdentityOutput:
    return IdentityOutput(
        walker_id=str(msg.walker_id),
        known=bool(msg.known),
        score=float(msg.score),
        threshold=float(msg.threshold),
        stamp_ns=stamp_ns(msg.header.stamp),
        best_match=str(msg.best_match),
        num_frames=int(msg.num_frames),
        embedding=np.asarray(msg.embedding, dtype=np.float32).copy(),
        frame_id=str(msg.header.frame_id),
        reason=str(msg.reason),
    )


_ENCODINGS = {"mono8": (np.uint8, 1), "bgr8": (np.uint8, 3), "rgb8": (np.uint8, 3), "mono16": (np.uint16, 2)}


def image_message(
    image: np.ndarray, stamp_ns: int, frame_id: str = "camera", factory: MessageFactory | None = None,
    encoding: str | None = None,
) -> Any:
    """``sensor_msgs/Image`` of a uint8 ``[H, W]`` (mono8, e.g. a silhouette) or ``[H, W, 3]`` (bgr8) array."""
    factory = default_factory(factory)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"image_message: expected uint8 [H, W] or [H, W, 3], got {image.dtype} {image.shape}")
    encoding = encoding or ("mono8" if image.ndim == 2 else "bgr8")
    channels = 1 if image.ndim == 2 else 3
    if _ENCODINGS.get(encoding, (None, -1))[1] != channels:
        raise ValueError(f"image_message: encoding {encoding!r} does not fit an image of shape {image.shape}")
    height, width = image.shape[:2]
    return factory.new(
        IMAGE,
        header=header_message(stamp_ns, frame_id, factory),
        height=int(height),
        width=int(width),
        encoding=encoding,
        is_bigendian=0,
        step=int(width * channels),
        data=factory.uint8_seq(np.ascontiguousarray(image)),
    )


def image_from_message(msg: Any) -> np.ndarray:
    """The pixels of a ``sensor_msgs/Image`` (mono8, mono16, bgr8, rgb8) as ``[H, W]`` or ``[H, W, C]``."""
    encoding = str(msg.encoding)
    if encoding not in _ENCODINGS:
        raise ValueError(f"Image: unsupported encoding {encoding!r}; supported: {', '.join(_ENCODINGS)}")
    dtype, bytes_per_pixel = _ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    raw = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, np.ndarray) else msg.data.tobytes(), np.uint8)
    if step < width * bytes_per_pixel or raw.size < height * step:
        raise ValueError(f"Image: {raw.size} bytes do not hold {height} rows of step {step} for {width}x{encoding}")
    rows = raw[: height * step].reshape(height, step)[:, : width * bytes_per_pixel]
    pixels = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<"))
    if encoding.startswith("mono"):
        return pixels.reshape(height, width).astype(dtype)
    return pixels.reshape(height, width, 3).astype(dtype)


def status_message(
    stamp_ns: int, state: int, *, walker_id: str = "", personalized: bool = False, imu_rate_hz: float = 0.0,
    dropped_samples: int = 0, latency_ms: float = 0.0, backend: str = "", message: str = "",
    frame_id: str = "base_link", factory: MessageFactory | None = None,
) -> Any:
    factory = default_factory(factory)
    if state not in (STATE_IDLE, STATE_RUNNING, STATE_CALIBRATING, STATE_FAULT):
        raise ValueError(f"status_message: unknown state {state}")
    return factory.new(
        GAIT_STATUS,
        header=header_message(stamp_ns, frame_id, factory),
        state=int(state),
        walker_id=walker_id,
        personalized=bool(personalized),
        imu_rate_hz=float(imu_rate_hz),
        dropped_samples=int(dropped_samples),
        latency_ms=float(latency_ms),
        backend=backend,
        message=message,
    )


def phase_message(estimate: Any, stamp_ns: int, frame_id: str = "base_link",
                  factory: MessageFactory | None = None) -> Any:
    """GaitPhase from a runtime ``phase_stream.PhaseEstimate``, stamped at its IMU sample's time."""
    factory = default_factory(factory)
    if estimate.status not in PHASE_STATUS:
        raise ValueError(f"phase_message: unknown status {estimate.status!r}; expected one of {sorted(PHASE_STATUS)}")
    return factory.new(
        GAIT_PHASE,
        header=header_message(stamp_ns, frame_id, factory),
        phase_right=float(estimate.phase[0]),
        phase_left=float(estimate.phase[1]),
        phase_rate=float(estimate.rate_hz),
        mode=str(estimate.mode),
        mode_index=int(estimate.mode_index),
        confidence=float(estimate.confidence),
        status=PHASE_STATUS[estimate.status],
        reason=str(estimate.reason),
        source=str(estimate.source),
    )


def imu_readings(messages: Iterable[Any], frame_prefix: str = "") -> Iterable[ImuReading]:
    for msg in messages:
        yield imu_from_message(msg, frame_prefix)
