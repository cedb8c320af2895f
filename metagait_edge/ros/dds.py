"""Optional DDS transport: talk to ROS 2 topics directly with Eclipse Cyclone DDS, without rclpy.

ROS 2 maps a topic ``/robot1/imu/rf`` of type ``sensor_msgs/msg/Imu`` to the DDS topic
``rt/robot1/imu/rf`` of DDS type ``sensor_msgs::msg::dds_::Imu_``, serialized as plain (XCDR1) CDR. The
IDL structs below declare exactly those types (the project's own messages are made from their ``.msg``
files, :func:`idl_struct`), so a ROS 2 node using ``rmw_cyclonedds_cpp`` on the same
domain sees what :class:`DdsTransport` publishes, and vice versa; the serialized bytes equal those of
``rosbags`` (:mod:`metagait_edge.ros.msgs`), which a test checks on bytes received over the wire.

This lets a controller PC without ROS 2 consume the gait topics, and lets CI exercise the wire format.
``cyclonedds`` is imported when this module is imported: import it only where DDS is wanted.

Cyclone's string-annotation resolver looks names up as attributes of the module, so the struct
annotations are resolved to real types right after each class is defined (:func:`_resolved`).
"""

from __future__ import annotations

import random
import time
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Iterator

from cyclonedds.core import Policy, Qos
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.idl import IdlStruct
from cyclonedds.idl.types import array, float32, float64, int8, int32, sequence, uint8, uint32, uint64
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from rosbags.interfaces import Nodetype

from metagait_edge import ros
from metagait_edge.ros import msgs


def _resolved(cls: type) -> type:
    cls.__annotations__ = typing.get_type_hints(cls, include_extras=True)
    return cls


@_resolved
@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: int32 = 0
    nanosec: uint32 = 0


@_resolved
@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time = field(default_factory=Time)
    frame_id: str = ""


@_resolved
@dataclass
class Quaternion(IdlStruct, typename="geometry_msgs::msg::dds_::Quaternion_"):
    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0
    w: float64 = 1.0


@_resolved
@dataclass
class Vector3(IdlStruct, typename="geometry_msgs::msg::dds_::Vector3_"):
    x: float64 = 0.0
    y: float64 = 0.0
    z: float64 = 0.0


def _zeros9() -> list[float]:
    return [0.0] * 9


@_resolved
@dataclass
class Imu(IdlStruct, typename="sensor_msgs::msg::dds_::Imu_"):
    header: Header = field(default_factory=Header)
    orientation: Quaternion = field(default_factory=Quaternion)
    orientation_covariance: array[float64, 9] = field(default_factory=_zeros9)
    angular_velocity: Vector3 = field(default_factory=Vector3)
    angular_velocity_covariance: array[float64, 9] = field(default_factory=_zeros9)
    linear_acceleration: Vector3 = field(default_factory=Vector3)
    linear_acceleration_covariance: array[float64, 9] = field(default_factory=_zeros9)


# The project's own messages: IDL structs made from their .msg definitions (ros.msgs.schema reads the
# interface files), so the fields are written once, in ros2_ws/src/metagait_edge_interfaces.
_IDL_BASE = {"bool": (bool, False), "string": (str, ""), "float32": (float32, 0.0), "float64": (float64, 0.0),
             "int8": (int8, 0), "int32": (int32, 0), "uint8": (uint8, 0), "uint32": (uint32, 0), "uint64": (uint64, 0)}
_IDL_NAMED = {"std_msgs/msg/Header": Header, "builtin_interfaces/msg/Time": Time}


def _idl_field(desc: tuple) -> tuple[Any, Any]:
    """(IDL type, dataclass field) of one rosbags field description."""
    kind, spec = desc
    if kind == Nodetype.BASE and spec[0] in _IDL_BASE:
        tp, default = _IDL_BASE[spec[0]]
        return tp, field(default=default)
    if kind == Nodetype.NAME and spec in _IDL_NAMED:
        return _IDL_NAMED[spec], field(default_factory=_IDL_NAMED[spec])
    if kind == Nodetype.SEQUENCE and spec[1] == 0:
        return sequence[_idl_field(spec[0])[0]], field(default_factory=list)
    raise ValueError(f"no IDL mapping for the field type {desc!r}")


def idl_struct(ros_type: str) -> type:
    """The Cyclone IDL struct of a project message, field for field from its ``.msg`` definition."""
    _, fields = msgs.typestore().fielddefs[ros_type]
    made = [(name, *_idl_field(desc)) for name, desc in fields]

    def body(ns: dict) -> None:
        ns["__module__"] = __name__
        ns["__annotations__"] = {name: tp for name, tp, _ in made}
        ns.update({name: default for name, _, default in made})

    cls = types.new_class(ros_type.rsplit("/", 1)[1], (IdlStruct,), {"typename": dds_type_name(ros_type)}, body)
    return dataclass(cls)


def dds_type_name(ros_type: str) -> str:
    """``sensor_msgs/msg/Imu`` -> ``sensor_msgs::msg::dds_::Imu_`` (the name rmw_cyclonedds registers)."""
    parts = ros_type.split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"not a ROS 2 type name of the form pkg/msg/Name: {ros_type!r}")
    pkg, kind, name = parts
    return f"{pkg}::{kind}::dds_::{name}_"


GaitTrajectory = idl_struct(msgs.GAIT_TRAJECTORY)
WalkerIdentity = idl_struct(msgs.WALKER_IDENTITY)


#: ROS 2 type name -> IDL struct.
IDL_TYPES: dict[str, type] = {
    msgs.IMU: Imu,
    msgs.GAIT_TRAJECTORY: GaitTrajectory,
    msgs.WALKER_IDENTITY: WalkerIdentity,
}


def idl_type(ros_type: str) -> type:
    try:
        return IDL_TYPES[ros_type]
    except KeyError:
        raise ValueError(f"no DDS (IDL) type for {ros_type!r}; known: {', '.join(sorted(IDL_TYPES))}") from None


def to_idl(message: Any, ros_type: str) -> IdlStruct:
    """The IDL struct of a rosbags message, converted through its CDR bytes (same wire representation)."""
    return idl_type(ros_type).deserialize(msgs.serialize(message, ros_type))


def from_idl(sample: IdlStruct, ros_type: str) -> Any:
    """The rosbags message of an IDL struct."""
    return msgs.deserialize(sample.serialize(use_version_2=False), ros_type)


def loopback_config(max_participants: int = 32) -> str:
    """Cyclone DDS XML for one host: loopback interface only, no multicast, unicast discovery on 127.0.0.1.

    Without multicast, discovery probes the unicast ports of participant indices 0..max_participants on
    the peers, so every participant needs an index (``ParticipantIndex auto``).
    """
    return (
        '<CycloneDDS xmlns="https://cdds.io/config"><Domain Id="any">'
        '<General><Interfaces><NetworkInterface name="lo"/></Interfaces>'
        "<AllowMulticast>false</AllowMulticast></General>"
        "<Discovery><ParticipantIndex>auto</ParticipantIndex>"
        f"<MaxAutoParticipantIndex>{int(max_participants)}</MaxAutoParticipantIndex>"
        '<Peers><Peer address="127.0.0.1"/></Peers></Discovery>'
        "</Domain></CycloneDDS>"
    )


def random_domain_id() -> int:
    # Domain ids above ~232 overflow the default port mapping; stay in a quiet middle range.
    return random.randint(100, 200)


def sensor_data_qos(depth: int = 5) -> Qos:
    """ROS 2's ``qos_profile_sensor_data``: best effort, keep last ``depth``, volatile."""
    return Qos(
        Policy.Reliability.BestEffort,
        Policy.History.KeepLast(depth),
        Policy.Durability.Volatile,
        Policy.DataRepresentation(use_cdrv0_representation=True),
    )


def reliable_qos(depth: int = 10) -> Qos:
    """ROS 2's default QoS: reliable, keep last ``depth``, volatile."""
    return Qos(
        Policy.Reliability.Reliable(max_blocking_time=100_000_000),  # ns
        Policy.History.KeepLast(depth),
        Policy.Durability.Volatile,
        Policy.DataRepresentation(use_cdrv0_representation=True),
    )


class DdsPublisher:
    def __init__(self, writer: DataWriter, ros_type: str, topic: str) -> None:
        self.writer, self.ros_type, self.topic = writer, ros_type, topic

    def publish(self, message: Any) -> None:
        """Publish a rosbags message (or an IDL struct of the topic's type)."""
        sample = message if isinstance(message, IdlStruct) else to_idl(message, self.ros_type)
        self.writer.write(sample)

    def matched(self) -> int:
        """Number of subscriptions (any process) currently matched with this publisher."""
        return len(self.writer.get_matched_subscriptions())


class DdsSubscriber:
    def __init__(self, reader: DataReader, ros_type: str, topic: str) -> None:
        self.reader, self.ros_type, self.topic = reader, ros_type, topic

    def take(self, max_samples: int = 64) -> list[Any]:
        """Received messages as rosbags objects (non-blocking)."""
        return [from_idl(s, self.ros_type) for s in self.reader.take(N=max_samples)]

    def take_raw(self, max_samples: int = 64) -> list[bytes]:
        """The serialized CDR bytes of received samples, as they came off the wire (non-blocking)."""
        from cyclonedds._clayer import ddspy_take
        from cyclonedds.core import InstanceState, SampleState, ViewState

        ret = ddspy_take(self.reader._ref, SampleState.Any | ViewState.Any | InstanceState.Any, max_samples)
        if isinstance(ret, int):
            raise RuntimeError(f"DDS take on {self.topic} failed with code {ret}")
        return [bytes(data) for data, info in ret if info.valid_data]

    def wait(self, count: int, timeout_s: float, raw: bool = False, poll_s: float = 0.01) -> list[Any]:
        """Collect ``count`` messages (or raw samples), waiting at most ``timeout_s``; returns what arrived."""
        got: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            batch = self.take_raw(count - len(got)) if raw else self.take(count - len(got))
            if batch:
                got.extend(batch)
            else:
                time.sleep(poll_s)
        return got

    def __iter__(self) -> Iterator[Any]:
        for sample in self.reader.take_iter():
            yield from_idl(sample, self.ros_type)


class DdsTransport:
    """One DDS participant on ``domain_id`` that publishes and subscribes ROS 2 topics of ``namespace``.

    ``config`` is Cyclone XML (e.g. :func:`loopback_config`); without it Cyclone uses ``CYCLONEDDS_URI`` or
    its defaults. A domain's configuration is fixed by the first participant a process creates on it.
    """

    def __init__(self, domain_id: int = 0, namespace: str = "", config: str | None = None) -> None:
        if not 0 <= int(domain_id) <= 232:
            raise ValueError(f"DDS domain id must be in 0..232, got {domain_id}")
        self.domain_id = int(domain_id)
        self.namespace = namespace
        self._domain = Domain(self.domain_id, config) if config is not None else None
        self.participant = DomainParticipant(self.domain_id)
        self._topics: dict[str, Topic] = {}

    def _topic(self, topic: str, ros_type: str) -> tuple[Topic, str]:
        name = ros.dds_topic(topic, self.namespace)
        existing = self._topics.get(name)
        if existing is None:
            existing = Topic(self.participant, name, idl_type(ros_type))
            self._topics[name] = existing
        return existing, name

    def publisher(self, topic: str, ros_type: str, qos: Qos | None = None) -> DdsPublisher:
        """Publisher of ``ros_type`` on the ROS topic ``topic`` (relative names resolve in the namespace)."""
        t, name = self._topic(topic, ros_type)
        return DdsPublisher(DataWriter(self.participant, t, qos=qos or reliable_qos()), ros_type, name)

    def subscriber(self, topic: str, ros_type: str, qos: Qos | None = None) -> DdsSubscriber:
        t, name = self._topic(topic, ros_type)
        return DdsSubscriber(DataReader(self.participant, t, qos=qos or reliable_qos()), ros_type, name)

    def imu_publishers(self) -> dict[str, DdsPublisher]:
        """One sensor-data-QoS ``Imu`` publisher per IMU (``imu/rf`` ... ``imu/lt``)."""
        return {s: self.publisher(ros.imu_topic(s), msgs.IMU, sensor_data_qos()) for s in ros.SENSORS}

    def close(self) -> None:
        # Deleting the participant deletes its readers, writers and topics.
        self._topics.clear()
        self.participant = None  # type: ignore[assignment]
        self._domain = None

    def __enter__(self) -> DdsTransport:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
