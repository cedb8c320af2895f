"""A small synthetic cycle set with walker-specific gait cycles, shaped like the HuGaDB one."""

from __future__ import annotations

import numpy as np

from metagait_edge.data.cycles import CycleSet, cycle_channels


def synthetic_cycle_set(n_subjects: int = 9, recordings: int = 2, strides: int = 36, seed: int = 0) -> CycleSet:
    """Each walker has its own harmonic shape per channel; strides vary around it with AR(1) noise."""
    rng = np.random.default_rng(seed)
    channels = cycle_channels()
    c, p = len(channels), 101
    t = np.linspace(0, 2 * np.pi, p)
    rows = {k: [] for k in ("cycles", "valid", "subject", "file_id", "condition", "repetition", "start", "end",
                            "index", "segment", "boundary_corrupted")}
    for s in range(1, n_subjects + 1):
        amp = rng.normal(1.0, 0.3, (c, 1))
        phase = rng.normal(0, 0.4, (c, 1))
        offset = rng.normal(0, 0.5, (c, 1))
        shape = offset + amp * np.sin(t + phase) + 0.3 * amp * np.sin(2 * t + 2 * phase)
        for r in range(recordings):
            dev = np.zeros((c, p))
            valid = np.ones(c, bool)
            if r == 1:
                valid[rng.choice(c, 3, replace=False)] = False
            for i in range(strides):
                dev = 0.6 * dev + rng.normal(0, 0.2, (c, p))
                rows["cycles"].append((shape + dev).astype(np.float32))
                rows["valid"].append(valid)
                rows["subject"].append(s)
                rows["file_id"].append(f"HuGaDB_v1_walking_{s:02d}_{r:02d}")
                rows["condition"].append("walking")
                rows["repetition"].append(r)
                rows["start"].append(i * 54)
                rows["end"].append((i + 1) * 54)
                rows["index"].append(i)
                rows["segment"].append(0)
                rows["boundary_corrupted"].append(False)
    arr = {k: np.asarray(v) for k, v in rows.items()}
    return CycleSet(
        arr["cycles"], tuple(channels), arr["valid"].astype(bool), arr["subject"].astype(np.int16),
        arr["file_id"].astype(str), arr["condition"].astype(str), arr["repetition"].astype(np.int16),
        arr["start"].astype(np.int32), arr["end"].astype(np.int32), arr["index"].astype(np.int32),
        arr["segment"].astype(np.int32), arr["boundary_corrupted"], meta={"archive_sha256": "synthetic", "config_digest": "test"},
    )
