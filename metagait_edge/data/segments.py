"""Walking-condition segments from the per-row activity labels of a recording.

Every HuGaDB file carries an activity ID per row, so the long "various" recordings contribute their
walking, running and stair bouts as well. A segment is a maximal run of rows with one condition label
that is not interrupted by a dropped glitch row (``Recording.source_rows`` jumps there), at least
``min_length_s`` long.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metagait_edge.data.hugadb import Recording

# Gait conditions: activity ID -> condition name.
CONDITIONS = {1: "walking", 2: "running", 3: "stairs_up", 4: "stairs_down"}
CONDITION_IDS = {name: act for act, name in CONDITIONS.items()}


class NoSegmentsError(ValueError):
    """A recording holds no gait segment long enough; the message names the file."""


@dataclass(frozen=True)
class SegmentConfig:
    min_length_s: float = 3.0
    conditions: tuple[str, ...] = ("walking", "running", "stairs_up", "stairs_down")

    def __post_init__(self) -> None:
        unknown = [c for c in self.conditions if c not in CONDITION_IDS]
        if unknown:
            raise ValueError(f"unknown condition(s) {unknown}; known: {sorted(CONDITION_IDS)}")
        if self.min_length_s < 0:
            raise ValueError(f"min_length_s must be >= 0, got {self.min_length_s}")


@dataclass(frozen=True)
class Segment:
    file_id: str
    condition: str
    act_id: int
    start: int  # first row (index into the recording's kept rows)
    end: int  # one past the last row

    def __len__(self) -> int:
        return self.end - self.start


def runs(labels: np.ndarray, breaks: np.ndarray | None = None) -> list[tuple[int, int, int]]:
    """(label, start, end) for each maximal run of equal labels; ``breaks`` [T] True where a run must restart."""
    labels = np.asarray(labels)
    n = len(labels)
    if n == 0:
        return []
    change = np.zeros(n, dtype=bool)
    change[0] = True
    change[1:] = labels[1:] != labels[:-1]
    if breaks is not None:
        change |= np.asarray(breaks, dtype=bool)
    starts = np.flatnonzero(change)
    ends = np.r_[starts[1:], n]
    return [(int(labels[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def find_segments(rec: Recording, config: SegmentConfig = SegmentConfig()) -> list[Segment]:
    """Gait-condition segments of ``rec`` at least ``config.min_length_s`` long, in time order."""
    min_len = int(round(config.min_length_s * rec.sample_rate_hz))
    wanted = {CONDITION_IDS[c] for c in config.conditions}
    breaks = np.zeros(len(rec), dtype=bool)
    if len(rec) > 1:
        breaks[1:] = np.diff(rec.source_rows) != 1
    out = []
    for label, start, end in runs(rec.act, breaks):
        if label in wanted and end - start >= max(min_len, 1):
            out.append(Segment(rec.file_id, CONDITIONS[label], label, start, end))
    return out


def require_segments(rec: Recording, config: SegmentConfig = SegmentConfig()) -> list[Segment]:
    """Like ``find_segments`` but a recording without any segment is an error naming the file."""
    segs = find_segments(rec, config)
    if not segs:
        present = sorted({int(a) for a in np.unique(rec.act)})
        raise NoSegmentsError(
            f"{rec.path}: no {'/'.join(config.conditions)} segment of at least {config.min_length_s:g} s "
            f"(activity IDs present: {present})"
        )
    return segs
