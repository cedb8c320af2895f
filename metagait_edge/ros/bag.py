"""Record and replay rosbag2 bags (mcap storage) of the gait pipeline with ``rosbags``, no ROS needed.

A bag holds ``sensor_msgs/Imu`` on ``/<ns>/imu/<sensor>`` (one message per IMU per sample, all six with
the same header stamp), ``sensor_msgs/Image`` silhouettes, ``metagait_edge_interfaces/GaitTrajectory``,
``trajectory_msgs/JointTrajectory`` and ``WalkerIdentity``. Bags written here open with
``ros2 bag info|play`` (rosbag2 metadata version 8, mcap storage) and with any mcap tool.

:class:`BagReader` is also an input source for the runtime: :meth:`BagReader.imu_frames` regroups the six
per-sensor messages of each stamp into the runtime's :class:`~metagait_edge.imu.protocol.ImuFrame`
(raw int16 counts), so a recorded session replays through the same decoder-free path as a serial port.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from metagait_edge import ros
from metagait_edge.data import hugadb
from metagait_edge.imu.replay import register_row_reader
from metagait_edge.ros import msgs
from metagait_edge.sensors import HUGADB_RATE_HZ

BAG_VERSION = 8  # rosbag2 metadata version; 8 is read by ROS 2 Iron and newer, 9 adds nothing we use


class BagError(ValueError):
    """A bag is missing, malformed, or holds messages the pipeline cannot use; the message names the bag."""


def storage_plugin():
    """The mcap storage plugin of this rosbags version (sqlite3 only where mcap is unavailable)."""
    from rosbags.rosbag2 import StoragePlugin

    return getattr(StoragePlugin, "MCAP", StoragePlugin.SQLITE3)


class BagWriter:
    """Writes a new rosbag2 bag at ``path``; the bag appears only once it is complete.

    Use as a context manager. Messages go to ``<path>.partial`` inside a private temporary folder beside
    ``path`` and the finished bag is renamed into place, so a crash never leaves a half bag at ``path``.
    """

    def __init__(self, path: str | os.PathLike, namespace: str = "", overwrite: bool = False) -> None:
        self.path = Path(path)
        self.namespace = namespace
        self.overwrite = overwrite
        self.counts: dict[str, int] = {}
        self._writer: Any = None
        self._connections: dict[str, Any] = {}
        self._tmpdir: Path | None = None

    def __enter__(self) -> BagWriter:
        from rosbags.rosbag2 import Writer

        if self.path.exists() and not self.overwrite:
            raise BagError(f"{self.path} exists already; choose another path or overwrite it (record --overwrite)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmpdir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        # The storage file takes the bag folder's name, so build it under the final name.
        self._writer = Writer(self._tmpdir / self.path.name, version=BAG_VERSION, storage_plugin=storage_plugin())
        self._writer.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._tmpdir is not None
        try:
            if self._writer is not None:
                self._writer.close()
            if exc_type is None:
                if self.path.exists():
                    shutil.rmtree(self.path)
                os.replace(self._tmpdir / self.path.name, self.path)
        finally:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._writer = None

    # -- generic --------------------------------------------------------------------------------------
    def write(self, topic: str, typename: str, message: Any, stamp_ns: int) -> None:
        """Serialize ``message`` (a rosbags object of ``typename``) onto ``topic`` at bag time ``stamp_ns``."""
        if self._writer is None:
            raise BagError("BagWriter is not open; use it as a context manager")
        name = ros.resolve(topic, self.namespace)
        conn = self._connections.get(name)
        if conn is None:
            conn = self._writer.add_connection(name, typename, typestore=msgs.typestore())
            self._connections[name] = conn
        elif conn.msgtype != typename:
            raise BagError(f"{self.path}: topic {name} already carries {conn.msgtype}, not {typename}")
        self._writer.write(conn, int(stamp_ns), msgs.serialize(message, typename))
        self.counts[name] = self.counts.get(name, 0) + 1

    # -- typed helpers --------------------------------------------------------------------------------
    def write_imu(self, reading: msgs.ImuReading) -> None:
        self.write(ros.imu_topic(reading.sensor), msgs.IMU, msgs.imu_message(reading), reading.stamp_ns)

    def write_imu_frame(self, raw: Any, stamp_ns: int) -> None:
        """One runtime frame (36 raw counts) as six ``Imu`` messages sharing ``stamp_ns``."""
        for reading in msgs.readings_from_raw(raw, stamp_ns):
            self.write_imu(reading)

    def write_image(self, image: np.ndarray, stamp_ns: int, topic: str = ros.SILHOUETTE_TOPIC,
                    frame_id: str = "camera") -> None:
        self.write(topic, msgs.IMAGE, msgs.image_message(image, stamp_ns, frame_id), stamp_ns)

    def write_trajectory(self, out: msgs.TrajectoryOutput, joint_names: Sequence[str] | None = None,
                         joint_trajectory: bool = True) -> None:
        """The ``GaitTrajectory`` and, when ``cycle_duration`` > 0, its ``JointTrajectory`` form."""
        self.write(ros.TRAJECTORY_TOPIC, msgs.GAIT_TRAJECTORY, msgs.trajectory_message(out), out.stamp_ns)
        if joint_trajectory and out.cycle_duration > 0:
            self.write(ros.JOINT_TRAJECTORY_TOPIC, msgs.JOINT_TRAJECTORY,
                       msgs.joint_trajectory_message(out, joint_names=joint_names), out.stamp_ns)

    def write_identity(self, out: msgs.IdentityOutput) -> None:
        self.write(ros.IDENTITY_TOPIC, msgs.WALKER_IDENTITY, msgs.identity_message(out), out.stamp_ns)


@dataclasses.dataclass(frozen=True)
class TopicSummary:
    topic: str
    msgtype: str
    count: int


@dataclasses.dataclass(frozen=True)
class BagSummary:
    path: Path
    storage: str
    start_ns: int
    end_ns: int
    topics: tuple[TopicSummary, ...]

    @property
    def duration_s(self) -> float:
        return max(self.end_ns - self.start_ns, 0) / 1e9

    @property
    def message_count(self) -> int:
        return sum(t.count for t in self.topics)

    def format(self) -> str:
        lines = [
            f"bag       : {self.path}",
            f"storage   : {self.storage}",
            f"duration  : {self.duration_s:.3f} s",
            f"messages  : {self.message_count}",
        ]
        width = max((len(t.topic) for t in self.topics), default=5)
        for t in self.topics:
            lines.append(f"  {t.topic:<{width}}  {t.count:>8d}  {t.msgtype}")
        return "\n".join(lines)


class BagReader:
    """Reads a rosbag2 bag (mcap or sqlite3) written by :class:`BagWriter` or by ``ros2 bag record``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._reader: Any = None

    def __enter__(self) -> BagReader:
        from rosbags.rosbag2 import Reader, ReaderError

        if not self.path.exists():
            raise BagError(f"bag not found: {self.path}")
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except ReaderError as exc:
            raise BagError(f"{self.path}: not a readable rosbag2 bag: {exc}") from exc
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _open(self) -> Any:
        if self._reader is None:
            raise BagError("BagReader is not open; use it as a context manager")
        return self._reader

    def summary(self) -> BagSummary:
        reader = self._open()
        counts: dict[tuple[str, str], int] = {}
        for conn in reader.connections:
            key = (conn.topic, conn.msgtype)
            counts[key] = counts.get(key, 0) + conn.msgcount
        storage = {p.suffix.lstrip(".") for p in self.path.iterdir() if p.suffix in (".mcap", ".db3")}
        return BagSummary(
            path=self.path,
            storage=",".join(sorted(storage)) or "unknown",
            start_ns=reader.start_time if reader.message_count else 0,
            end_ns=reader.end_time if reader.message_count else 0,
            topics=tuple(TopicSummary(t, m, c) for (t, m), c in sorted(counts.items())),
        )

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, int, Any]]:
        """``(topic, bag timestamp ns, deserialized message)`` in bag-time order; ``topics`` filters."""
        reader = self._open()
        wanted = set(topics) if topics is not None else None
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if wanted is not None:
            unknown = wanted - {c.topic for c in reader.connections}
            if unknown:
                raise BagError(f"{self.path}: no topic(s) {', '.join(sorted(unknown))} in this bag")
        store = msgs.typestore()
        for conn, timestamp, raw in reader.messages(connections=conns):
            try:
                message = store.deserialize_cdr(raw, conn.msgtype)
            except Exception as exc:  # rosbags raises several types for unknown or corrupt data
                raise BagError(f"{self.path}: cannot decode a {conn.msgtype} message on {conn.topic} "
                               f"at {timestamp} ns: {exc}") from exc
            yield conn.topic, int(timestamp), message

    def imu_topics(self) -> list[str]:
        reader = self._open()
        return sorted({c.topic for c in reader.connections if c.msgtype == msgs.IMU})

    def imu_readings(self) -> Iterator[msgs.ImuReading]:
        """Every ``Imu`` message as an SI :class:`~metagait_edge.ros.msgs.ImuReading`."""
        for topic, _, message in self.messages(self.imu_topics()):
            try:
                yield msgs.imu_from_message(message)
            except ValueError as exc:
                raise BagError(f"{self.path}: topic {topic}: {exc}") from exc

    def imu_frames(self, strict: bool = True) -> Iterator[Any]:
        """Runtime ``ImuFrame``s (raw counts of all six IMUs) from the six ``Imu`` messages of each stamp.

        ``seq`` counts frames from 0 and ``t_us`` is the header stamp in microseconds. A stamp missing
        some sensor raises :class:`BagError` naming it; with ``strict=False`` it is skipped and counted
        in ``self.incomplete_frames``.
        """
        from metagait_edge.imu.protocol import ImuFrame

        self.incomplete_frames = 0
        pending: dict[int, dict[str, msgs.ImuReading]] = {}
        seq = 0
        # Messages of one stamp are written together, so a stamp is complete once all six arrived;
        # anything still pending when a later stamp completes is incomplete.
        for reading in self.imu_readings():
            group = pending.setdefault(reading.stamp_ns, {})
            if reading.sensor in group:
                raise BagError(f"{self.path}: two {reading.sensor} IMU messages with stamp {reading.stamp_ns} ns")
            group[reading.sensor] = reading
            if len(group) < len(ros.SENSORS):
                continue
            for stamp in sorted(s for s in pending if s < reading.stamp_ns):
                self._incomplete(stamp, pending.pop(stamp), strict)
            del pending[reading.stamp_ns]
            raw = msgs.raw_from_readings(group.values())
            yield ImuFrame(seq=seq, t_us=reading.stamp_ns // 1000, raw=raw)
            seq += 1
        for stamp in sorted(pending):
            self._incomplete(stamp, pending[stamp], strict)

    def _incomplete(self, stamp: int, group: dict[str, msgs.ImuReading], strict: bool) -> None:
        missing = [s for s in ros.SENSORS if s not in group]
        if strict:
            raise BagError(f"{self.path}: IMU frame at stamp {stamp} ns lacks sensor(s) {', '.join(missing)}")
        self.incomplete_frames += 1


def read_imu_rows(path: str | os.PathLike) -> np.ndarray:
    """Raw int16 [N, 36] counts of every complete IMU frame of a bag (the runtime's ``rosbag`` source)."""
    with BagReader(path) as reader:
        return np.stack([f.raw for f in reader.imu_frames(strict=False)])


register_row_reader("rosbag", read_imu_rows)


# ---------------------------------------------------------------------------------------------------
# Sources for `metagait-edge record`
# ---------------------------------------------------------------------------------------------------


def resolve_hugadb_file(name: str) -> Path:
    """A HuGaDB text file: a path, or a file name / stem inside the (verified, extracted) HuGaDB archive."""
    path = Path(name)
    if path.is_file():
        return path
    if os.sep in name or path.suffix not in ("", ".txt"):
        raise FileNotFoundError(f"HuGaDB file not found: {path}")
    from metagait_edge.data.archive import prepare_hugadb

    data_dir = prepare_hugadb().data_dir
    candidate = data_dir / (name if name.endswith(".txt") else f"{name}.txt")
    if not candidate.is_file():
        raise FileNotFoundError(f"HuGaDB file {name!r} is neither a path nor a file in {data_dir}")
    return candidate


def read_hugadb_rows(path: str | os.PathLike) -> hugadb.ImuRows:
    """The 36 IMU columns of a HuGaDB text file (``data.hugadb.parse_file_lenient``); no data row is a BagError."""
    try:
        return hugadb.parse_file_lenient(path)
    except hugadb.HuGaDBFormatError as exc:
        raise BagError(str(exc)) from None


def synthetic_session(num_frames: int, rate_hz: float = HUGADB_RATE_HZ, seed: int = 0,
                      image_every: int = 4, cycle_frames: int = 54) -> dict[str, Any]:
    """A short synthetic gait session: raw IMU frames, silhouettes and one trajectory per gait cycle.

    The IMU is the library's synthetic walker (``imu.synthetic.synthetic_imu``: HuGaDB's mean cycle, one
    stride every ``cycle_frames`` samples), a moving ellipse silhouette (64x44 mono8), and, for each
    completed cycle, the cycle of the shin gyros resampled to 101 points as a trajectory. This is test and
    demo data for the transport, not a gait model.
    """
    from metagait_edge.imu.synthetic import synthetic_imu

    t = np.arange(num_frames)
    phase = 2 * np.pi * t / cycle_frames
    rows = synthetic_imu(num_frames, rate_hz, seed, cadence_hz=rate_hz / cycle_frames, stride_jitter=0.0)
    stamps = (np.rint(t * 1e9 / rate_hz)).astype(np.int64)
    images = []
    for i in range(0, num_frames, max(image_every, 1)):
        yy, xx = np.mgrid[0:64, 0:44]
        cx = 22 + 6 * np.sin(phase[i])
        mask = ((xx - cx) / 9.0) ** 2 + ((yy - 32) / 28.0) ** 2 <= 1.0
        images.append((int(stamps[i]), (mask * 255).astype(np.uint8)))
    channels = ["gyro_rs_y", "gyro_ls_y"]
    cols = [1 * 6 + 4, 4 * 6 + 4]
    trajectories = []
    for end in range(cycle_frames, num_frames + 1, cycle_frames):
        cycle = rows[end - cycle_frames:end, cols].T.astype(np.float64) / 16.4  # deg/s
        grid = np.linspace(0, cycle_frames - 1, 101)
        traj = np.stack([np.interp(grid, np.arange(cycle_frames), c) for c in cycle])
        trajectories.append(msgs.TrajectoryOutput(
            trajectory=traj, channel_names=channels, stamp_ns=int(stamps[end - 1]), walker_id="synthetic",
            personalized=False, phase=0.0, cycle_duration=cycle_frames / rate_hz,
        ))
    return {"rows": rows, "stamps": stamps, "images": images, "trajectories": trajectories}
