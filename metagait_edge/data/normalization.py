"""Per-channel normalization of cycle sets, fitted on training subjects only.

Mean and standard deviation per channel over every (cycle, time point) whose ``valid`` entry is True;
masked (corrupted / not computable) entries never enter the statistics. The fitted object records
which subjects it saw, so a checkpoint sidecar documents that no evaluation subject leaked into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from metagait_edge.data.cycles import CycleSet


@dataclass(frozen=True)
class ChannelNormalizer:
    channels: tuple[str, ...]
    mean: np.ndarray  # float32 [C]
    std: np.ndarray  # float32 [C], floored at min_std
    count: np.ndarray  # int64 [C] valid cycles per channel used in the fit
    subjects: tuple[int, ...]  # subjects the statistics were fitted on

    def apply(self, cycles: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """(x - mean) / std per channel of [N, C, P] (or [C, P]); masked entries stay 0."""
        x = (np.asarray(cycles, dtype=np.float32) - self.mean[:, None]) / self.std[:, None]
        if valid is not None:
            x = np.where(np.asarray(valid)[..., None], x, 0.0).astype(np.float32)
        return x

    def invert(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, dtype=np.float32) * self.std[:, None] + self.mean[:, None]

    def transform(self, cs: CycleSet) -> CycleSet:
        """A copy of ``cs`` with normalized cycles (channels must match)."""
        if tuple(cs.channels) != self.channels:
            raise ValueError(f"normalizer channels {self.channels[:3]}... differ from the cycle set's {cs.channels[:3]}...")
        out = cs.select(np.arange(len(cs)))
        out.cycles = self.apply(cs.cycles, cs.valid)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"channels": list(self.channels), "mean": [float(v) for v in self.mean],
                "std": [float(v) for v in self.std], "count": [int(v) for v in self.count],
                "subjects": [int(s) for s in self.subjects]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ChannelNormalizer":
        missing = [k for k in ("channels", "mean", "std", "count", "subjects") if k not in data]
        if missing:
            raise ValueError(f"normalizer sidecar lacks key(s) {', '.join(missing)}")
        channels = tuple(str(c) for c in data["channels"])
        arrays = {k: np.asarray(data[k]) for k in ("mean", "std", "count")}
        for k, v in arrays.items():
            if v.shape != (len(channels),):
                raise ValueError(f"normalizer sidecar key {k!r} has {v.shape} values for {len(channels)} channels")
        if np.any(arrays["std"] <= 0):
            raise ValueError("normalizer sidecar key 'std' has non-positive values")
        return cls(channels, arrays["mean"].astype(np.float32), arrays["std"].astype(np.float32),
                   arrays["count"].astype(np.int64), tuple(int(s) for s in data["subjects"]))


def fit_normalizer(cs: CycleSet, subjects: Sequence[int], min_std: float = 1e-3) -> ChannelNormalizer:
    """Fit per-channel mean/std on the cycles of ``subjects`` only, ignoring masked entries.

    A channel with no valid entry among those subjects gets mean 0, std 1 and count 0.
    """
    subjects = tuple(sorted({int(s) for s in subjects}))
    if not subjects:
        raise ValueError("fit_normalizer needs at least one training subject")
    absent = sorted(set(subjects) - set(cs.subjects()))
    if absent:
        raise ValueError(f"training subject(s) {absent} have no cycles in this cycle set")
    pick = np.flatnonzero(np.isin(cs.subject, subjects))
    c_count = len(cs.channels)
    mean = np.zeros(c_count)
    std = np.ones(c_count)
    count = cs.valid[pick].sum(axis=0).astype(np.int64)
    for c in range(c_count):  # one channel at a time keeps memory at one [N, P] slice
        rows = pick[cs.valid[pick, c]]
        if len(rows) == 0:
            continue
        xc = cs.cycles[rows, c].astype(np.float64)
        mean[c] = xc.mean()
        std[c] = max(float(xc.std()), min_std)
    return ChannelNormalizer(tuple(cs.channels), mean.astype(np.float32), std.astype(np.float32), count, subjects)
