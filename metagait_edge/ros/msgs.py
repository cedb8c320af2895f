"""ROS 2 messages of metagait-edge: definitions, a ``rosbags`` typestore, and runtime conversions.

The message and action definitions below are the ones of the ``metagait_edge_interfaces`` ROS 2 package
(``ros2_ws/src/metagait_edge_interfaces``), without comments; a test checks both parse to the same types.
They are registered, together with the standard ROS 2 Humble types, in :func:`typestore`, which
(de)serializes CDR exactly as ROS 2 does (``serialize_cdr`` / ``deserialize_cdr``).

Runtime outputs are plain dataclasses (:class:`ImuReading`, :class:`TrajectoryOutput`,
:class:`IdentityOutput`) so this module does not depend on the runtime's internals. Conversions build
messages through a *factory* (:class:`RosbagsFactory` here; the ROS 2 nodes pass an rclpy-backed one), so
bags, DDS and the live nodes all produce the same message contents.

Units follow REP 103 / REP 145: accelerations in m/s^2, angular velocities in rad/s, an orientation
covariance of ``[-1, 0, ...]`` meaning "no orientation estimate".
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterable, Protocol, Sequence

import numpy as np

from metagait_edge.ros import SENSORS

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


# ---------------------------------------------------------------------------------------------------
# Message factories
# ---------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------
# Runtime-side records (the thin interface between the runtime and ROS)
# ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImuReading:
    """One sample of one IMU in SI units: ``accel`` in m/s^2, ``gyro`` in rad/s, ``stamp_ns`` since epoch."""

    sensor: str
    stamp_ns: int
    accel: tuple[float, float, float]
    gyro: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.sensor not in SENSORS:
            raise ValueError(f"ImuReading: unknown sensor {self.sensor!r}; expected one of {', '.join(SENSORS)}")
        for name in ("accel", "gyro"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3:
                raise ValueError(f"ImuReading({self.sensor}): {name} needs 3 values, got {len(value)}")
            object.__setattr__(self, name, value)
        if int(self.stamp_ns) < 0:
            raise ValueError(f"ImuReading({self.sensor}): negative stamp_ns {self.stamp_ns}")
        object.__setattr__(self, "stamp_ns", int(self.stamp_ns))


@dataclasses.dataclass
class TrajectoryOutput:
    """A predicted gait cycle per channel: ``trajectory`` is ``[num_channels, num_points]`` (e.g. [C, 101])."""

    trajectory: np.ndarray
    channel_names: list[str]
    stamp_ns: int
    walker_id: str = ""
    personalized: bool = False
    phase: float = 0.0
    cycle_duration: float = 0.0
    status: int = STATUS_OK
    frame_id: str = "base_link"

    def __post_init__(self) -> None:
        traj = np.asarray(self.trajectory, dtype=np.float32)
        if traj.ndim != 2:
            raise ValueError(f"TrajectoryOutput: trajectory must be [channels, points], got shape {traj.shape}")
        if len(self.channel_names) != traj.shape[0]:
            raise ValueError(
                f"TrajectoryOutput: {len(self.channel_names)} channel name(s) for {traj.shape[0]} channel(s)"
            )
        if not np.all(np.isfinite(traj)):
            raise ValueError("TrajectoryOutput: trajectory holds NaN or infinite values")
        if self.status not in (STATUS_OK, STATUS_CLAMPED, STATUS_FALLBACK, STATUS_STALE):
            raise ValueError(f"TrajectoryOutput: unknown status {self.status}")
        self.trajectory = traj
        self.channel_names = [str(n) for n in self.channel_names]


@dataclasses.dataclass
class IdentityOutput:
    """Result of matching a silhouette sequence against the walker gallery."""

    walker_id: str
    known: bool
    score: float
    threshold: float
    stamp_ns: int
    best_match: str = ""
    num_frames: int = 0
    embedding: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    frame_id: str = "camera"

    def __post_init__(self) -> None:
        self.embedding = np.asarray(self.embedding, dtype=np.float32).reshape(-1)
        if self.known and not self.walker_id:
            raise ValueError("IdentityOutput: a known walker needs a walker_id")


# ---------------------------------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------------------------------


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


def imu_readings(messages: Iterable[Any], frame_prefix: str = "") -> Iterable[ImuReading]:
    for msg in messages:
        yield imu_from_message(msg, frame_prefix)


# ---------------------------------------------------------------------------------------------------
# Runtime IMU frames (raw int16 counts of all six IMUs, metagait_edge.imu.protocol) <-> readings
# ---------------------------------------------------------------------------------------------------

STANDARD_GRAVITY = 9.80665  # m/s^2 per g


def _scales() -> tuple[float, float]:
    from metagait_edge.imu.protocol import ACC_LSB_PER_G, GYRO_LSB_PER_DPS

    return STANDARD_GRAVITY / ACC_LSB_PER_G, np.deg2rad(1.0) / GYRO_LSB_PER_DPS


def readings_from_raw(raw: Any, stamp_ns: int) -> list[ImuReading]:
    """Six SI readings (rf, rs, rt, lf, ls, lt) from one runtime frame of 36 raw counts
    (per IMU: acc x y z, gyro x y z; accelerometer 16384 LSB/g, gyroscope 16.4 LSB per deg/s)."""
    arr = np.asarray(raw, dtype=np.float64)
    if arr.shape != (6 * len(SENSORS),):
        raise ValueError(f"readings_from_raw: expected 36 raw values, got shape {arr.shape}")
    acc_scale, gyro_scale = _scales()
    per = arr.reshape(len(SENSORS), 6)
    return [
        ImuReading(sensor, stamp_ns, tuple(per[i, :3] * acc_scale), tuple(per[i, 3:] * gyro_scale))
        for i, sensor in enumerate(SENSORS)
    ]


def raw_from_readings(readings: Iterable[ImuReading]) -> np.ndarray:
    """The 36 raw int16 counts of a frame from its six readings (any order; each sensor exactly once)."""
    acc_scale, gyro_scale = _scales()
    by_sensor: dict[str, ImuReading] = {}
    for r in readings:
        if r.sensor in by_sensor:
            raise ValueError(f"raw_from_readings: sensor {r.sensor!r} appears twice in one frame")
        by_sensor[r.sensor] = r
    missing = [s for s in SENSORS if s not in by_sensor]
    if missing:
        raise ValueError(f"raw_from_readings: frame lacks sensor(s) {', '.join(missing)}")
    values = []
    for s in SENSORS:
        r = by_sensor[s]
        values.extend(np.asarray(r.accel) / acc_scale)
        values.extend(np.asarray(r.gyro) / gyro_scale)
    counts = np.rint(np.asarray(values))
    if counts.min() < -32768 or counts.max() > 32767:
        raise ValueError("raw_from_readings: values exceed the int16 range of the IMU counts")
    return counts.astype(np.int16)


class FrameAssembler:
    """Regroups per-sensor readings (e.g. six ``Imu`` subscriptions) into whole frames by header stamp.

    ``add`` returns ``(stamp_ns, raw int16[36])`` when the last of the six readings of a stamp arrives,
    else None. Stamps older than the newest completed one can no longer complete; they are dropped and
    counted in ``incomplete`` (a lost message must not stall the stream).
    """

    def __init__(self, max_pending: int = 64) -> None:
        self.max_pending = max_pending
        self.pending: dict[int, dict[str, ImuReading]] = {}
        self.incomplete = 0
        self.last_complete = -1

    def add(self, reading: ImuReading) -> tuple[int, np.ndarray] | None:
        if reading.stamp_ns <= self.last_complete:
            self.incomplete += 1 if reading.stamp_ns < self.last_complete else 0
            return None
        group = self.pending.setdefault(reading.stamp_ns, {})
        group[reading.sensor] = reading
        if len(group) < len(SENSORS):
            if len(self.pending) > self.max_pending:
                oldest = min(self.pending)
                del self.pending[oldest]
                self.incomplete += 1
            return None
        for stamp in [s for s in self.pending if s < reading.stamp_ns]:
            del self.pending[stamp]
            self.incomplete += 1
        del self.pending[reading.stamp_ns]
        self.last_complete = reading.stamp_ns
        return reading.stamp_ns, raw_from_readings(group.values())
