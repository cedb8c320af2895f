"""Gait-cycle sets: every stride of every HuGaDB gait segment, time-normalized to 101 samples.

A cycle runs from one right-shank IC event (``gait_events``) to the next, inside one condition segment
(``segments``), passing the stride plausibility and left/right consistency checks. Its channels are
the 36 IMU channels in physical units (g, deg/s) followed by the 6 IMU-derived joint-angle estimates
(degrees, ``joint_angles``), each resampled with linear interpolation at 101 evenly spaced points from
the start IC to the end IC (both included).

``valid[n, c]`` is False where channel c of cycle n cannot be trusted: a corrupted gyroscope, or an
angle that needs one. Those entries hold 0.0 (never NaN, so masked losses stay finite): losses and
metrics must ignore them through the mask.

Cycles n and m are consecutive strides iff they share ``file_id`` and ``segment`` and
``index[m] == index[n] + 1`` (then ``start[m] == end[n]``); ``index`` counts every detected stride of
the recording, so rejected strides leave gaps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from metagait_edge.data.gait_events import (
    GaitEventConfig, contralateral_consistent, detect_leg_events, plausible_strides,
)
from metagait_edge.data.gyro_validity import channel_valid, corrupted_gyros
from metagait_edge.data.hugadb import HuGaDB, HuGaDBConfig, Recording, parse_file_name
from metagait_edge.data.joint_angles import ANGLE_CHANNELS, JointAngleConfig, joint_angles
from metagait_edge.data.segments import SegmentConfig, find_segments
from metagait_edge.sensors import IMU_CHANNELS

log = logging.getLogger(__name__)

N_POINTS = 101
CYCLE_CACHE_VERSION = 2  # bump when cycle extraction changes, so caches rebuild


@dataclass(frozen=True)
class CycleSetConfig:
    hugadb: HuGaDBConfig = field(default_factory=HuGaDBConfig)
    segments: SegmentConfig = field(default_factory=SegmentConfig)
    events: GaitEventConfig = field(default_factory=GaitEventConfig)
    angles: JointAngleConfig = field(default_factory=JointAngleConfig)
    n_points: int = N_POINTS
    include_angles: bool = True
    # Files of these activities are read (the "various" recordings hold gait bouts too).
    file_activities: tuple[str, ...] = ("walking", "running", "going_up", "going_down", "various")

    def __post_init__(self) -> None:
        if self.n_points < 2:
            raise ValueError(f"n_points must be >= 2, got {self.n_points}")

    def digest(self) -> str:
        from metagait_edge.config import to_dict

        text = json.dumps({"version": CYCLE_CACHE_VERSION, "config": to_dict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


_PER_CYCLE = ("subject", "file_id", "condition", "repetition", "start", "end", "index", "segment",
              "boundary_corrupted")


@dataclass
class CycleSet:
    """Cycles [N, C, n_points] float32 with per-cycle metadata (all arrays share the first axis N)."""

    cycles: np.ndarray  # float32 [N, C, P]
    channels: tuple[str, ...]
    valid: np.ndarray  # bool [N, C]
    subject: np.ndarray  # int16 [N], 1..18
    file_id: np.ndarray  # str [N]
    condition: np.ndarray  # str [N]: walking, running, stairs_up, stairs_down
    repetition: np.ndarray  # int16 [N]
    start: np.ndarray  # int32 [N] first sample (kept-row index in the recording)
    end: np.ndarray  # int32 [N] last sample (the next IC)
    index: np.ndarray  # int32 [N] stride number within the recording
    segment: np.ndarray  # int32 [N] segment number within the recording
    boundary_corrupted: np.ndarray  # bool [N] boundaries came from a corrupted (x10, clipped) shank gyro
    sample_rate_hz: float = 58.8
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.cycles.shape[0]
        if self.cycles.ndim != 3 or self.cycles.shape[1] != len(self.channels):
            raise ValueError(f"cycles must be [N, {len(self.channels)}, P], got {self.cycles.shape}")
        if self.valid.shape != self.cycles.shape[:2]:
            raise ValueError(f"valid must be {self.cycles.shape[:2]}, got {self.valid.shape}")
        for name in _PER_CYCLE:
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} cycles")

    def __len__(self) -> int:
        return int(self.cycles.shape[0])

    @property
    def duration(self) -> np.ndarray:
        """int32 [N] stride duration in samples."""
        return (self.end - self.start).astype(np.int32)

    @property
    def n_points(self) -> int:
        return int(self.cycles.shape[2])

    def channel_index(self, names: str | Sequence[str]) -> int | list[int]:
        if isinstance(names, str):
            if names not in self.channels:
                raise KeyError(f"unknown channel {names!r}; channels are {', '.join(self.channels)}")
            return self.channels.index(names)
        return [self.channel_index(n) for n in names]  # type: ignore[misc]

    def select(self, mask: np.ndarray | Sequence[int]) -> "CycleSet":
        """A new set of the cycles picked by a bool mask [N] or an index array."""
        mask = np.asarray(mask)
        if mask.dtype == bool and mask.shape != (len(self),):
            raise ValueError(f"selection mask has shape {mask.shape}, expected ({len(self)},)")
        kw = {name: getattr(self, name)[mask] for name in _PER_CYCLE}
        return CycleSet(self.cycles[mask], self.channels, self.valid[mask], sample_rate_hz=self.sample_rate_hz,
                        meta=dict(self.meta), **kw)

    def select_channels(self, names: Sequence[str]) -> "CycleSet":
        idx = self.channel_index(list(names))
        kw = {name: getattr(self, name) for name in _PER_CYCLE}
        return CycleSet(self.cycles[:, idx], tuple(names), self.valid[:, idx], sample_rate_hz=self.sample_rate_hz,
                        meta=dict(self.meta), **kw)

    def subjects(self) -> list[int]:
        return sorted(int(s) for s in np.unique(self.subject))

    def conditions(self) -> list[str]:
        return sorted(str(c) for c in np.unique(self.condition))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cycles": len(self), "channels": len(self.channels), "subjects": self.subjects()}
        out["per_condition"] = {c: int((self.condition == c).sum()) for c in self.conditions()}
        out["per_subject"] = {s: int((self.subject == s).sum()) for s in self.subjects()}
        if len(self):
            out["median_duration_samples"] = float(np.median(self.duration))
            out["valid_fraction"] = float(self.valid.mean())
            out["boundary_from_corrupted_gyro"] = int(self.boundary_corrupted.sum())
        return out

    def save(self, path: str | os.PathLike) -> None:
        from metagait_edge.atomic import atomic_write_with

        def writer(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, cycles=self.cycles, channels=np.asarray(self.channels, dtype=str), valid=self.valid,
                         sample_rate_hz=np.float64(self.sample_rate_hz), meta=np.asarray(json.dumps(self.meta)),
                         **{name: getattr(self, name) for name in _PER_CYCLE})

        atomic_write_with(path, writer)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CycleSet":
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["cycles"], tuple(str(c) for c in z["channels"]), z["valid"],
                           sample_rate_hz=float(z["sample_rate_hz"]), meta=json.loads(str(z["meta"])),
                           **{name: z[name] for name in _PER_CYCLE})
        except KeyError as exc:
            raise ValueError(f"{path}: not a cycle-set file (missing {exc})") from None

    @classmethod
    def concatenate(cls, parts: Sequence["CycleSet"], channels: Sequence[str], n_points: int,
                    sample_rate_hz: float, meta: Mapping[str, Any] | None = None) -> "CycleSet":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(channels, n_points, sample_rate_hz, meta)
        kw = {name: np.concatenate([getattr(p, name) for p in parts]) for name in _PER_CYCLE}
        return cls(np.concatenate([p.cycles for p in parts]), tuple(channels),
                   np.concatenate([p.valid for p in parts]), sample_rate_hz=sample_rate_hz, meta=dict(meta or {}), **kw)

    @classmethod
    def empty(cls, channels: Sequence[str], n_points: int = N_POINTS, sample_rate_hz: float = 58.8,
              meta: Mapping[str, Any] | None = None) -> "CycleSet":
        c = len(channels)
        return cls(np.zeros((0, c, n_points), np.float32), tuple(channels), np.zeros((0, c), bool),
                   np.zeros(0, np.int16), np.zeros(0, dtype="<U1"), np.zeros(0, dtype="<U1"), np.zeros(0, np.int16),
                   np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int32),
                   np.zeros(0, bool), sample_rate_hz=sample_rate_hz, meta=dict(meta or {}))


def cycle_channels(config: CycleSetConfig = CycleSetConfig()) -> tuple[str, ...]:
    return IMU_CHANNELS + (ANGLE_CHANNELS if config.include_angles else ())


def resample_cycles(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, n_points: int = N_POINTS) -> np.ndarray:
    """[T, C] -> [N, C, n_points]: linear interpolation at n_points evenly spaced from start to end."""
    data = np.asarray(data)
    starts = np.asarray(starts, dtype=np.float64)
    ends = np.asarray(ends, dtype=np.float64)
    if len(starts) == 0:
        return np.zeros((0, data.shape[1], n_points), np.float32)
    if np.any(ends <= starts) or np.any(starts < 0) or np.any(ends > len(data) - 1):
        raise ValueError(f"cycle bounds outside 0..{len(data) - 1} or not increasing")
    u = np.linspace(0.0, 1.0, n_points)
    pos = starts[:, None] + (ends - starts)[:, None] * u[None, :]  # [N, P]
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, len(data) - 1)
    f = (pos - i0)[..., None]
    x = data[i0] * (1.0 - f) + data[i1] * f  # [N, P, C]
    return np.ascontiguousarray(x.transpose(0, 2, 1)).astype(np.float32)


@dataclass(frozen=True)
class RecordingStrides:
    segment: int
    condition: str
    starts: np.ndarray  # recording-relative IC samples of accepted strides
    ends: np.ndarray
    index: np.ndarray  # stride number within the recording
    n_detected: int


def recording_strides(rec: Recording, config: CycleSetConfig = CycleSetConfig()) -> list[RecordingStrides]:
    """Accepted right-leg strides per gait segment of ``rec``."""
    fs = rec.sample_rate_hz
    bad = corrupted_gyros(rec.file_id)
    right = rec.channel("gyro_rs_y")
    left = rec.channel("gyro_ls_y")
    out = []
    stride_no = 0
    for k, seg in enumerate(find_segments(rec, config.segments)):
        ev_r = detect_leg_events(right[seg.start:seg.end], fs, config.events, corrupted="rs" in bad)
        ev_l = detect_leg_events(left[seg.start:seg.end], fs, config.events, corrupted="ls" in bad)
        ic = ev_r.ic
        ok = plausible_strides(ic, fs, config.events) & contralateral_consistent(ic, ev_l.ic, config.events)
        n = max(len(ic) - 1, 0)
        idx = np.arange(stride_no, stride_no + n, dtype=np.int32)
        stride_no += n
        keep = np.flatnonzero(ok)
        out.append(RecordingStrides(k, seg.condition, (ic[keep] + seg.start).astype(np.int32),
                                    (ic[keep + 1] + seg.start).astype(np.int32), idx[keep], n))
    return out


def cycles_from_recording(rec: Recording, config: CycleSetConfig = CycleSetConfig()) -> CycleSet:
    channels = cycle_channels(config)
    strides = recording_strides(rec, config)
    if not strides or sum(len(s.starts) for s in strides) == 0:
        return CycleSet.empty(channels, config.n_points, rec.sample_rate_hz)
    data = rec.physical()
    valid_c = channel_valid(rec.file_id, IMU_CHANNELS)
    if config.include_angles:
        angles, angle_valid = joint_angles(rec, config.angles)
        data = np.concatenate([data, angles], axis=1)
        valid_c = np.concatenate([valid_c, angle_valid])
    data = np.where(valid_c[None, :], data, 0.0).astype(np.float32)
    starts = np.concatenate([s.starts for s in strides])
    ends = np.concatenate([s.ends for s in strides])
    cyc = resample_cycles(data, starts, ends, config.n_points)
    n = len(starts)
    bad = corrupted_gyros(rec.file_id)
    return CycleSet(
        cycles=cyc, channels=channels, valid=np.repeat(valid_c[None, :], n, axis=0),
        subject=np.full(n, rec.subject, np.int16), file_id=np.full(n, rec.file_id),
        condition=np.concatenate([np.full(len(s.starts), s.condition) for s in strides]),
        repetition=np.full(n, rec.repetition, np.int16), start=starts, end=ends,
        index=np.concatenate([s.index for s in strides]),
        segment=np.concatenate([np.full(len(s.starts), s.segment, np.int32) for s in strides]),
        boundary_corrupted=np.full(n, "rs" in bad), sample_rate_hz=rec.sample_rate_hz,
    )


def build_cycle_set(config: CycleSetConfig = CycleSetConfig(), data_root: str | os.PathLike | None = None,
                    progress: bool = True, use_cache: bool = True, file_ids: Sequence[str] | None = None,
                    db: HuGaDB | None = None) -> CycleSet:
    """The cycle set of the whole HuGaDB archive (or of ``file_ids``), cached by archive checksum + config.

    The first full build parses and segments every gait-bearing file with a progress bar; later calls
    load the cached ``.npz``.
    """
    if db is None:
        db = HuGaDB.open(data_root, config.hugadb)
    ids = list(file_ids) if file_ids is not None else [
        f for f in db.file_ids if parse_file_name(f + ".txt")[0] in config.file_activities
    ]
    cache_path = None
    if use_cache and db.cache_dir is not None:
        key = hashlib.sha256(("\n".join(ids)).encode("utf-8")).hexdigest()[:8]
        cache_path = db.cache_dir.parent / "cycles" / f"cycles-{config.digest()}-{key}.npz"
        if cache_path.is_file():
            try:
                return CycleSet.load(cache_path)
            except (OSError, ValueError) as exc:
                log.warning("rebuilding unreadable cycle cache %s: %s", cache_path, exc)
    parts = []
    n_without = 0
    for rec in db.iter_recordings(ids, progress=progress, desc="cycles"):
        part = cycles_from_recording(rec, config)
        n_without += len(part) == 0
        parts.append(part)
    from metagait_edge.config import to_dict

    meta = {"archive_sha256": db.archive_sha256, "config_digest": config.digest(), "config": to_dict(config),
            "files_read": len(ids), "files_without_cycles": n_without}
    out = CycleSet.concatenate(parts, cycle_channels(config), config.n_points, config.hugadb.sample_rate_hz, meta)
    if cache_path is not None:
        out.save(cache_path)
    return out


__all__ = [
    "N_POINTS", "CycleSet", "CycleSetConfig", "RecordingStrides", "build_cycle_set", "cycle_channels",
    "cycles_from_recording", "recording_strides", "resample_cycles",
]
