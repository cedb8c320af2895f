"""Runtime-side records, the thin interface between the runtime and ROS, and IMU frames <-> readings.

:class:`ImuReading`, :class:`TrajectoryOutput` and :class:`IdentityOutput` are plain dataclasses, so
nothing here depends on the runtime's internals. A runtime IMU frame (raw int16 counts of all six IMUs,
``metagait_edge.imu.protocol``) becomes six SI readings and back; :class:`FrameAssembler` regroups readings
that arrive one sensor at a time.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import numpy as np

from metagait_edge.ros.msgs.schema import STATUS_CLAMPED, STATUS_FALLBACK, STATUS_OK, STATUS_STALE
from metagait_edge.sensors import ACC_LSB_PER_G, GYRO_LSB_PER_DPS, SENSORS


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
    reason: str = ""  # why the walker is not known ("" when known)

    def __post_init__(self) -> None:
        self.embedding = np.asarray(self.embedding, dtype=np.float32).reshape(-1)
        if self.known and not self.walker_id:
            raise ValueError("IdentityOutput: a known walker needs a walker_id")


STANDARD_GRAVITY = 9.80665  # m/s^2 per g


def _scales() -> tuple[float, float]:
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
