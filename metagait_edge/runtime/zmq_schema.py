"""The ZeroMQ message schema (docs/zmq_protocol.md), shared by the publisher and every subscriber (the ROS messages are ``ros.msgs``).

A message is three frames: ``[topic, header, payload]``.

- ``topic``: ASCII bytes, one of ``TOPICS``; subscribers filter on it.
- ``header``: a msgpack map with string keys (``HEADER_FIELDS``), the same keys on every topic.
- ``payload``: ``prod(shape)`` little-endian IEEE-754 float32 values, C order (may be empty).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import msgpack
import numpy as np

from metagait_edge.phase.dataset import MODES
from metagait_edge.runtime.phase_stream import PHASE_CHANNELS, SOURCE_BASELINE, SOURCE_NETWORK, UNKNOWN_MODE
from metagait_edge.runtime.safety import SafetyStatus

SCHEMA_VERSION = 1
TOPIC_TRAJECTORY = b"gait.trajectory"
TOPIC_IDENTITY = b"gait.identity"
TOPIC_STATUS = b"gait.status"
TOPIC_PHASE = b"gait.phase"
TOPICS = (TOPIC_TRAJECTORY, TOPIC_IDENTITY, TOPIC_STATUS, TOPIC_PHASE)
STATUSES = tuple(s.value for s in SafetyStatus)  # the safety envelope's words: OK, DEGRADED, HOLD
DTYPE = "float32"
N_POINTS = 101

# name -> accepted Python types after msgpack decoding
HEADER_FIELDS: dict[str, tuple] = {
    "v": (int,),  # schema version
    "seq": (int,),  # per-topic counter, +1 per message the publisher accepted; gaps = lost messages
    "t_ns": (int,),  # CLOCK_REALTIME (Unix epoch) nanoseconds when the message was created
    "t_input_ns": (int,),  # CLOCK_REALTIME ns of the newest IMU sample the content rests on; 0 when none
    "walker_id": (str, type(None)),  # recognized walker, or nil when unknown
    "personalized": (bool,),  # the reference comes from a model adapted to walker_id
    "phase": (float, int),  # gait phase in [0, 1) at t_ns (0 = right heel strike)
    "cycle_s": (float, int),  # duration of the gait cycle the trajectory spans, seconds (0 if none)
    "dtype": (str,),  # always "float32"
    "shape": (list,),  # payload shape: [C, 101] trajectory, [D] identity embedding, [0] status
    "channels": (list,),  # trajectory row names (len C); [] otherwise
    "units": (str,),  # unit of payload values: "deg" for trajectories, "" otherwise
    "status": (str,),  # "OK" | "DEGRADED" | "HOLD"
    "reason": (str,),  # human-readable cause of a non-OK status; "" when OK
    "distance": (float, int),  # identity: embedding distance to walker_id's gallery entry (NaN if none)
    "confidence": (float, int),  # identity confidence in [0, 1]
    "counters": (dict,),  # status: the runtime's running counts (faults included), name -> int >= 0; {} otherwise
}

# Header fields of one topic only (``gait.phase``): name -> accepted types.
PHASE_FIELDS: dict[str, tuple] = {
    "mode": (str,),  # locomotion mode (phase.dataset.MODES) or "unknown"
    "source": (str,),  # "phasenet" (the shipped network) or "baseline" (time since heel strike)
}
PHASE_MODES = MODES + (UNKNOWN_MODE,)


class MessageError(ValueError):
    """A received message does not follow the schema; the message says which field and why."""


@dataclass(frozen=True)
class Message:
    topic: bytes
    header: dict
    payload: np.ndarray  # float32, shaped per header["shape"]


def now_ns() -> int:
    return time.time_ns()


def make_header(
    seq: int,
    *,
    t_ns: Optional[int] = None,
    t_input_ns: int = 0,
    walker_id: Optional[str] = None,
    personalized: bool = False,
    phase: float = 0.0,
    cycle_s: float = 0.0,
    shape: Sequence[int] = (0,),
    channels: Sequence[str] = (),
    units: str = "",
    status: str = "OK",
    reason: str = "",
    distance: float = float("nan"),
    confidence: float = 0.0,
    counters: Optional[Mapping[str, int]] = None,
    mode: Optional[str] = None,
    source: Optional[str] = None,
) -> dict:
    """The header of one message; ``mode`` and ``source`` only on ``gait.phase`` (``PHASE_FIELDS``)."""
    extra = {} if mode is None else {"mode": str(mode), "source": str(source or "")}
    return {
        "v": SCHEMA_VERSION,
        "seq": int(seq),
        "t_ns": int(now_ns() if t_ns is None else t_ns),
        "t_input_ns": int(t_input_ns),
        "walker_id": None if walker_id is None else str(walker_id),
        "personalized": bool(personalized),
        "phase": float(phase),
        "cycle_s": float(cycle_s),
        "dtype": DTYPE,
        "shape": [int(s) for s in shape],
        "channels": [str(c) for c in channels],
        "units": str(units),
        "status": str(status),
        "reason": str(reason),
        "distance": float(distance),
        "confidence": float(confidence),
        "counters": {str(k): int(v) for k, v in (counters or {}).items()},
        **extra,
    }


_EMPTY = np.zeros(0, dtype="<f4")


def encode(topic: bytes, header: Mapping[str, Any], payload: Optional[np.ndarray] = None) -> list[bytes]:
    """The three frames of a message. ``payload`` must match ``header['shape']``."""
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}; topics are {[t.decode() for t in TOPICS]}")
    data = _EMPTY if payload is None else np.ascontiguousarray(payload, dtype="<f4")
    if list(data.shape) != list(header["shape"]) and not (data.size == 0 and math.prod(header["shape"]) == 0):
        raise ValueError(f"payload shape {list(data.shape)} does not match header shape {header['shape']}")
    # (no numpy and no copy of a plain dict here: a gait.phase message is encoded at every IMU sample)
    return [topic, msgpack.packb(header if type(header) is dict else dict(header), use_bin_type=True), data.tobytes()]


def decode(frames: Sequence[bytes]) -> Message:
    """Parse and validate one received multipart message; raises ``MessageError`` naming the problem."""
    if len(frames) != 3:
        raise MessageError(f"expected 3 frames [topic, header, payload], got {len(frames)}")
    topic, raw_header, payload = (bytes(f) for f in frames)
    if topic not in TOPICS:
        raise MessageError(f"unknown topic {topic!r}")
    try:
        header = msgpack.unpackb(raw_header, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise MessageError(f"{topic.decode()}: header is not valid msgpack: {exc}") from None
    validate(topic, header, payload)
    data = np.frombuffer(payload, dtype="<f4").astype(np.float32, copy=False).reshape(header["shape"])
    return Message(topic, header, data)


def validate(topic: bytes, header: Any, payload: bytes) -> None:
    """Check schema version, field types, dtype, shape vs payload length, channel count, finiteness."""
    where = topic.decode(errors="replace")
    if not isinstance(header, dict):
        raise MessageError(f"{where}: header must be a map, got {type(header).__name__}")
    if header.get("v") != SCHEMA_VERSION:
        raise MessageError(f"{where}: schema version {header.get('v')!r} is not {SCHEMA_VERSION}")
    missing = [k for k in HEADER_FIELDS if k not in header]
    if missing:
        raise MessageError(f"{where}: header lacks field(s) {', '.join(missing)}")
    for key, types in HEADER_FIELDS.items():
        value = header[key]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise MessageError(f"{where}: field {key!r} has type {type(value).__name__}")
    if header["dtype"] != DTYPE:
        raise MessageError(f"{where}: dtype {header['dtype']!r} is not {DTYPE!r}")
    if header["status"] not in STATUSES:
        raise MessageError(f"{where}: status {header['status']!r} is not one of {STATUSES}")
    shape = header["shape"]
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise MessageError(f"{where}: shape {shape!r} must be a list of non-negative integers")
    n = int(np.prod(shape)) if shape else 1
    if len(payload) != 4 * n:
        raise MessageError(f"{where}: payload has {len(payload)} bytes, shape {shape} needs {4 * n}")
    if not all(isinstance(c, str) for c in header["channels"]):
        raise MessageError(f"{where}: channel names must be strings")
    if header["seq"] < 0:
        raise MessageError(f"{where}: negative seq {header['seq']}")
    bad = [k for k, v in header["counters"].items()
           if not isinstance(k, str) or not isinstance(v, int) or isinstance(v, bool) or v < 0]
    if bad:
        raise MessageError(f"{where}: counters {bad!r} must be names with non-negative integer counts")
    if not 0 <= header["t_input_ns"] <= header["t_ns"]:
        raise MessageError(f"{where}: t_input_ns {header['t_input_ns']} outside [0, t_ns = {header['t_ns']}]: "
                           f"the input cannot be newer than the message")
    if topic == TOPIC_TRAJECTORY and header["t_input_ns"] == 0:
        raise MessageError(f"{where}: a trajectory must name the time of its newest IMU sample (t_input_ns)")
    for key in ("phase", "cycle_s", "confidence"):
        if not math.isfinite(header[key]):
            raise MessageError(f"{where}: field {key!r} is not finite")
    if not 0.0 <= header["phase"] < 1.0:
        raise MessageError(f"{where}: phase {header['phase']} outside [0, 1)")
    if topic == TOPIC_TRAJECTORY:
        if header["status"] == "HOLD":
            raise MessageError(f"{where}: a trajectory is never published with status HOLD")
        if len(shape) != 2 or shape[1] != N_POINTS:
            raise MessageError(f"{where}: trajectory shape {shape} is not [C, {N_POINTS}]")
        if len(header["channels"]) != shape[0]:
            raise MessageError(f"{where}: {len(header['channels'])} channel names for {shape[0]} rows")
    values = np.frombuffer(payload, dtype="<f4")
    if values.size and not np.isfinite(values).all():
        raise MessageError(f"{where}: payload contains NaN or Inf")
    if topic == TOPIC_PHASE:
        _validate_phase(where, header, values)


def _validate_phase(where: str, header: dict, values: np.ndarray) -> None:
    """``gait.phase``: its own header fields, the payload's layout and ranges, HOLD carries no phase."""
    for key, types in PHASE_FIELDS.items():
        if not isinstance(header.get(key), types):
            raise MessageError(f"{where}: field {key!r} missing or of type {type(header.get(key)).__name__}")
    if header["mode"] not in PHASE_MODES:
        raise MessageError(f"{where}: mode {header['mode']!r} is not one of {PHASE_MODES}")
    if header["source"] not in (SOURCE_NETWORK, SOURCE_BASELINE):
        raise MessageError(f"{where}: source {header['source']!r} is not {SOURCE_NETWORK!r} or {SOURCE_BASELINE!r}")
    if header["shape"] != [len(PHASE_CHANNELS)] or header["channels"] != list(PHASE_CHANNELS):
        raise MessageError(f"{where}: shape {header['shape']} / channels {header['channels']} are not "
                           f"[{len(PHASE_CHANNELS)}] / {list(PHASE_CHANNELS)}")
    if header["t_input_ns"] == 0:
        raise MessageError(f"{where}: a phase must name the time of its IMU sample (t_input_ns)")
    phase_r, phase_l, rate, mode_index, confidence = (float(v) for v in values)
    if not (0.0 <= phase_r < 1.0 and 0.0 <= phase_l < 1.0):
        raise MessageError(f"{where}: phase {phase_r}, {phase_l} outside [0, 1)")
    if not 0.0 <= rate <= 10.0:
        raise MessageError(f"{where}: phase_rate {rate} outside [0, 10] cycles/s")
    if mode_index != (-1 if header["mode"] == UNKNOWN_MODE else MODES.index(header["mode"])):
        raise MessageError(f"{where}: mode_index {mode_index:g} does not name mode {header['mode']!r}")
    if not 0.0 <= confidence <= 1.0 or abs(confidence - header["confidence"]) > 1e-6:
        raise MessageError(f"{where}: confidence {confidence} outside [0, 1] or unlike the header's")
    if abs(phase_r - header["phase"]) > 1e-6:
        raise MessageError(f"{where}: header phase {header['phase']} is not the payload's phase_r {phase_r}")
    if header["status"] == "HOLD" and (phase_r, phase_l, rate) != (0.0, 0.0, 0.0):
        raise MessageError(f"{where}: a HOLD phase must carry phase 0 and rate 0")


def trajectory_header(
    seq: int, trajectory: np.ndarray, channels: Sequence[str], *, walker_id: Optional[str], personalized: bool,
    phase: float, cycle_s: float, status: str = "OK", reason: str = "", confidence: float = 0.0,
    distance: float = float("nan"), t_ns: Optional[int] = None, t_input_ns: Optional[int] = None,
) -> dict:
    t_ns = now_ns() if t_ns is None else t_ns
    return make_header(
        seq, t_ns=t_ns, t_input_ns=t_ns if t_input_ns is None else t_input_ns, walker_id=walker_id, personalized=personalized, phase=phase, cycle_s=cycle_s,
        shape=np.shape(trajectory), channels=channels, units="deg", status=status, reason=reason,
        distance=distance, confidence=confidence,
    )
