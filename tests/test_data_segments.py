from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from metagait_edge.data.hugadb import HuGaDB, Recording
from metagait_edge.data.segments import NoSegmentsError, SegmentConfig, find_segments, require_segments, runs


def fake(act, source_rows=None, file_id="HuGaDB_v1_various_01_00"):
    act = np.asarray(act, dtype=np.uint8)
    n = len(act)
    rows = np.arange(n, dtype=np.int32) if source_rows is None else np.asarray(source_rows, dtype=np.int32)
    return Recording(file_id, Path(file_id + ".txt"), 1, "various", 0, np.zeros((n, 36), np.int16),
                     np.zeros((n, 2), np.uint8), act, rows)


def test_runs_and_breaks():
    assert runs(np.array([1, 1, 2, 2, 2, 1])) == [(1, 0, 2), (2, 2, 5), (1, 5, 6)]
    assert runs(np.array([1, 1, 1, 1]), np.array([0, 0, 1, 0], bool)) == [(1, 0, 2), (1, 2, 4)]
    assert runs(np.array([])) == []


def test_segments_by_condition_and_minimum_length():
    fs = 58.8
    n = int(4 * fs)
    act = [8] * 50 + [1] * n + [3] * n + [2] * 100 + [4] * n + [5] * 30
    segs = find_segments(fake(act))
    assert [(s.condition, s.start, len(s)) for s in segs] == [
        ("walking", 50, n), ("stairs_up", 50 + n, n), ("stairs_down", 50 + 2 * n + 100, n)]  # running 1.7 s < 3 s
    segs = find_segments(fake(act), SegmentConfig(min_length_s=1.0, conditions=("running",)))
    assert [(s.condition, len(s)) for s in segs] == [("running", 100)]


def test_segments_split_at_dropped_glitch_rows():
    n = 400
    rows = np.r_[np.arange(200), np.arange(201, n + 1)]
    segs = find_segments(fake([1] * n, source_rows=rows), SegmentConfig(min_length_s=1.0))
    assert [(s.start, s.end) for s in segs] == [(0, 200), (200, 400)]


def test_config_validation():
    with pytest.raises(ValueError, match="unknown condition"):
        SegmentConfig(conditions=("walking", "jumping"))


def test_no_gait_is_an_error_naming_the_file():
    with pytest.raises(NoSegmentsError, match=r"HuGaDB_v1_various_01_00.txt: no walking/running/stairs_up/stairs_down segment.*\[5, 8\]"):
        require_segments(fake([5] * 300 + [8] * 300))


def test_real_files():
    root = os.environ.get("METAGAIT_DATA")
    if not root or not os.path.isfile(os.path.join(root, "hugadb", "HuGaDB_v1.tar.xz")):
        pytest.skip("real HuGaDB archive not found under $METAGAIT_DATA/hugadb")
    db = HuGaDB.open()
    walk = find_segments(db.load("HuGaDB_v1_walking_01_00"))
    assert [(s.condition, s.start) for s in walk] == [("walking", 0)] and len(walk[0]) == 5989
    # walking_06_03 has its glitch row dropped: two segments instead of one.
    assert len(find_segments(db.load("HuGaDB_v1_walking_06_03"), SegmentConfig(min_length_s=0.5))) == 2
    # A long mixed recording contributes several gait bouts.
    various = [s for f in db.select("various", subjects=[5]) for s in find_segments(db.load(f))]
    assert {s.condition for s in various} >= {"walking"}
    with pytest.raises(NoSegmentsError, match="HuGaDB_v1_sitting_02_00.txt"):
        require_segments(db.load("HuGaDB_v1_sitting_02_00"))
