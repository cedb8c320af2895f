"""Tasks, subject splits and the support/query protocol.

Everything here works on plain arrays of cycle metadata, so it is easy to test on hand-built cases:

* a *recording* is one contiguous walking segment of one file (consecutive cycles of one walk);
* the **main protocol** takes the K support cycles from the start of a recording and query cycles from
  at least ``gap`` strides after the support (the wearer calibrates after donning and keeps walking);
  ``settle`` strides at the very start can be skipped first (the runtime's calibration does so);
* the **re-donning protocol** takes support from one recording and queries from another recording of the
  same subject and condition (sensor placement and speed change between recordings);
* meta-training tasks mimic the main protocol at random positions of the training recordings (task
  augmentation), so the meta-learner sees many support windows per walker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np


@dataclass
class ProtocolConfig:
    shots: Tuple[int, ...] = (1, 5)
    gap: int = 20  # strides between the end of the support set and the first query cycle
    max_queries: int = 40  # per recording, evenly spaced over what is available
    min_queries: int = 5  # a recording needs at least this many query cycles to make a test task
    conditions: Tuple[str, ...] = ("walking",)
    # Strides of a walk skipped before the support (the walk settles first; the first stride is an outlier).
    # Queries stay where settle 0 puts them, so scores with and without settling pair query by query.
    settle: int = 0

    def __post_init__(self) -> None:
        if self.settle < 0:
            raise ValueError(f"protocol.settle must be >= 0, got {self.settle}")
        if self.settle >= self.gap:
            raise ValueError(f"protocol.settle ({self.settle}) must be smaller than protocol.gap ({self.gap}): "
                             f"the support would reach the queries")


@dataclass(frozen=True)
class WalkCycles:
    """Indices (into the cycle set) of one walk's consecutive cycles, in time order (the walk's text file itself is a
    ``data.hugadb.Recording``)."""

    key: str
    subject: int
    condition: str
    indices: np.ndarray  # int64 [n], time order
    contiguous_prev: np.ndarray  # bool [n]: cycle i directly follows cycle i-1 (no dropped stride between)

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class Task:
    """One evaluation task: support cycles and query targets (with their previous cycles for generation)."""

    subject: int
    condition: str
    support: np.ndarray  # int64 [K] cycle indices (time order)
    query: np.ndarray  # int64 [Q] target cycle indices
    query_prev: np.ndarray  # int64 [Q] the cycle right before each query (generation input)
    recording: str
    query_recording: str


def group_recordings(
    subject: np.ndarray,
    condition: Sequence[str],
    recording_key: Sequence[str],
    stride_number: np.ndarray,
) -> List[WalkCycles]:
    """Group cycles into recordings in time order; a cycle directly follows its predecessor when their
    stride numbers are consecutive (a rejected stride in between breaks the chain)."""
    subject = np.asarray(subject)
    keys = np.asarray(recording_key)
    cond = np.asarray(condition)
    number = np.asarray(stride_number)
    recordings = []
    for key in sorted(set(keys.tolist())):
        idx = np.flatnonzero(keys == key)
        idx = idx[np.argsort(number[idx], kind="stable")]
        contiguous = np.zeros(len(idx), dtype=bool)
        if len(idx) > 1:
            contiguous[1:] = number[idx[1:]] == number[idx[:-1]] + 1
        subjects = set(subject[idx].tolist())
        conditions = set(cond[idx].tolist())
        if len(subjects) != 1 or len(conditions) != 1:
            raise ValueError(f"recording {key} mixes subjects {subjects} or conditions {conditions}")
        recordings.append(WalkCycles(key, subjects.pop(), conditions.pop(), idx, contiguous))
    return recordings


def subject_folds(subjects: Sequence[int], n_folds: int, n_val: int, seed: int = 0) -> List[Dict[str, List[int]]]:
    """Disjoint train/val/test subject splits; every subject is a test subject in exactly one fold."""
    subjects = sorted(set(int(s) for s in subjects))
    if n_folds < 2 or n_folds > len(subjects):
        raise ValueError(f"n_folds must be in [2, {len(subjects)}], got {n_folds}")
    order = np.random.default_rng(seed).permutation(subjects).tolist()
    folds = []
    for f in range(n_folds):
        test = sorted(order[f::n_folds])
        rest = [s for s in order if s not in test]
        val = sorted(rest[:n_val])
        train = sorted(rest[n_val:])
        if not train:
            raise ValueError("no training subjects left; lower n_val or n_folds")
        folds.append({"train": train, "val": val, "test": test})
    return folds


def _spread(candidates: np.ndarray, n: int) -> np.ndarray:
    if len(candidates) <= n:
        return candidates
    pick = np.linspace(0, len(candidates) - 1, n).round().astype(int)
    return candidates[pick]


def _task_from_positions(support_rec: WalkCycles, shots: int, query_rec: WalkCycles, first: int,
                         config: ProtocolConfig, generation: bool) -> Task | None:
    """Support = ``shots`` cycles of ``support_rec`` after its first ``config.settle``; queries from position
    ``first`` of ``query_rec`` on (only cycles with a true predecessor when generating), spread evenly."""
    if len(support_rec) < config.settle + shots:
        return None
    positions = np.arange(first, len(query_rec))
    if generation:
        positions = positions[query_rec.contiguous_prev[positions]]
    if len(positions) < config.min_queries:
        return None
    positions = _spread(positions, config.max_queries)
    return Task(
        subject=support_rec.subject,
        condition=support_rec.condition,
        support=support_rec.indices[config.settle: config.settle + shots],
        query=query_rec.indices[positions],
        query_prev=query_rec.indices[positions - 1],
        recording=support_rec.key,
        query_recording=query_rec.key,
    )


def main_protocol_task(rec: WalkCycles, shots: int, config: ProtocolConfig, generation: bool) -> Task | None:
    """Support = the first ``shots`` cycles (after ``settle``); queries start ``gap`` strides after the first
    ``shots`` cycles, wherever the support is."""
    return _task_from_positions(rec, shots, rec, shots + config.gap, config, generation)


def redonning_task(support_rec: WalkCycles, query_rec: WalkCycles, shots: int, config: ProtocolConfig,
                   generation: bool) -> Task | None:
    """Support from the start of one recording, queries from another recording of the same walker."""
    if support_rec.key == query_rec.key or support_rec.subject != query_rec.subject:
        raise ValueError("re-donning needs two different recordings of the same subject")
    return _task_from_positions(support_rec, shots, query_rec, 1, config, generation)


def evaluation_tasks(recordings: Sequence[WalkCycles], subjects: Sequence[int], shots: int,
                     config: ProtocolConfig, generation: bool, protocol: str = "main") -> List[Task]:
    """All test tasks of the given subjects for one protocol ("main" or "redonning")."""
    wanted = set(int(s) for s in subjects)
    recs = [r for r in recordings if r.subject in wanted and r.condition in config.conditions]
    tasks: List[Task] = []
    if protocol == "main":
        for rec in recs:
            task = main_protocol_task(rec, shots, config, generation)
            if task is not None:
                tasks.append(task)
    elif protocol == "redonning":
        by_walker: Dict[Tuple[int, str], List[WalkCycles]] = {}
        for rec in recs:
            by_walker.setdefault((rec.subject, rec.condition), []).append(rec)
        for group in by_walker.values():
            # Each recording once as support, the next one (cyclically) as query: one task per recording.
            for i, rec in enumerate(group):
                if len(group) < 2:
                    break
                task = redonning_task(rec, group[(i + 1) % len(group)], shots, config, generation)
                if task is not None:
                    tasks.append(task)
    else:
        raise ValueError(f"unknown protocol {protocol!r}; expected 'main' or 'redonning'")
    return tasks


@dataclass
class TaskSamplerConfig:
    shots: Tuple[int, ...] = (1, 5)
    queries: int = 10
    min_gap: int = 3  # strides between the support window and any query cycle
    conditions: Tuple[str, ...] = ("walking", "running", "stairs_up", "stairs_down")


@dataclass
class TaskSampler:
    """Draws meta-training tasks: a random support window of one recording and queries elsewhere in it."""

    recordings: List[WalkCycles]
    config: TaskSamplerConfig = field(default_factory=TaskSamplerConfig)

    def __post_init__(self) -> None:
        need = max(self.config.shots) + 2 * self.config.min_gap + 2
        self.recordings = [r for r in self.recordings if r.condition in self.config.conditions and len(r) >= need]
        if not self.recordings:
            raise ValueError("no recording is long enough to draw meta-training tasks from")
        # Weight recordings by length so every cycle is about equally likely to be drawn.
        lengths = np.array([len(r) for r in self.recordings], dtype=float)
        self._p = lengths / lengths.sum()

    def sample(self, rng: np.random.Generator, shots: int | None = None) -> Task:
        cfg = self.config
        k = int(shots if shots is not None else rng.choice(cfg.shots))
        rec = self.recordings[rng.choice(len(self.recordings), p=self._p)]
        n = len(rec)
        s0 = int(rng.integers(0, n - k + 1))
        far = np.ones(n, dtype=bool)
        far[max(0, s0 - cfg.min_gap): s0 + k + cfg.min_gap] = False
        far[0] = False  # a query needs a previous cycle
        candidates = np.flatnonzero(far & rec.contiguous_prev)
        if len(candidates) == 0:
            candidates = np.flatnonzero(far)
        positions = rng.choice(candidates, size=min(cfg.queries, len(candidates)), replace=False)
        return Task(
            subject=rec.subject,
            condition=rec.condition,
            support=rec.indices[s0: s0 + k],
            query=rec.indices[positions],
            query_prev=rec.indices[positions - 1],
            recording=rec.key,
            query_recording=rec.key,
        )
