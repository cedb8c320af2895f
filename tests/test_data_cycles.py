from __future__ import annotations

import os

import numpy as np
import pytest

from metagait_edge.data import cycles as cycles_mod
from metagait_edge.data.cycles import CycleSet, CycleSetConfig, build_cycle_set, cycles_from_recording, resample_cycles
from metagait_edge.sensors import IMU_CHANNELS
from metagait_edge.data.joint_angles import ANGLE_CHANNELS


def real_db():
    root = os.environ.get("METAGAIT_DATA")
    if not root or not os.path.isfile(os.path.join(root, "hugadb", "HuGaDB_v1.tar.xz")):
        pytest.skip("real HuGaDB archive not found under $METAGAIT_DATA/hugadb")
    from metagait_edge.data.hugadb import HuGaDB

    return HuGaDB.open()


def toy(n=6, subjects=(1, 1, 2, 2, 3, 3)):
    c = 3
    return CycleSet(
        cycles=np.arange(n * c * 101, dtype=np.float32).reshape(n, c, 101), channels=("a", "b", "c"),
        valid=np.ones((n, c), bool), subject=np.array(subjects, np.int16), file_id=np.array([f"f{i}" for i in range(n)]),
        condition=np.array(["walking"] * n), repetition=np.zeros(n, np.int16), start=np.arange(n, dtype=np.int32) * 50,
        end=np.arange(1, n + 1, dtype=np.int32) * 50, index=np.arange(n, dtype=np.int32), segment=np.zeros(n, np.int32),
        boundary_corrupted=np.zeros(n, bool),
    )


def test_resample_known_answer():
    t = np.arange(200, dtype=np.float64)
    data = np.stack([t, 2 * t + 1], axis=1)
    out = resample_cycles(data, np.array([10, 60]), np.array([60, 160]))
    assert out.shape == (2, 2, 101) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], np.linspace(10, 60, 101), rtol=1e-6)
    np.testing.assert_allclose(out[1, 1], 2 * np.linspace(60, 160, 101) + 1, rtol=1e-6)
    with pytest.raises(ValueError, match="cycle bounds"):
        resample_cycles(data, np.array([10]), np.array([250]))


def test_select_save_load(tmp_path):
    cs = toy()
    sub = cs.select(cs.subject == 2)
    assert len(sub) == 2 and sub.file_id.tolist() == ["f2", "f3"] and sub.duration.tolist() == [50, 50]
    assert cs.select([5, 0]).file_id.tolist() == ["f5", "f0"]
    with pytest.raises(ValueError, match="selection mask has shape"):
        cs.select(np.ones(3, bool))
    only = cs.select_channels(["c", "a"])
    np.testing.assert_array_equal(only.cycles[:, 0], cs.cycles[:, 2])
    with pytest.raises(KeyError, match="unknown channel 'z'"):
        cs.channel_index("z")
    cs.meta["note"] = "x"
    cs.save(tmp_path / "c.npz")
    back = CycleSet.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(back.cycles, cs.cycles)
    assert back.channels == cs.channels and back.meta == {"note": "x"} and back.file_id.tolist() == cs.file_id.tolist()
    assert CycleSet.concatenate([cs, sub], cs.channels, 101, 58.8).subject.tolist() == [1, 1, 2, 2, 3, 3, 2, 2]
    with pytest.raises(ValueError, match="subject has 2 entries for 6 cycles"):
        CycleSet(cs.cycles, cs.channels, cs.valid, cs.subject[:2], cs.file_id, cs.condition, cs.repetition,
                 cs.start, cs.end, cs.index, cs.segment, cs.boundary_corrupted)


def test_real_clean_walking_file():
    db = real_db()
    cs = cycles_from_recording(db.load("HuGaDB_v1_walking_01_00"))
    assert cs.cycles.shape == (128, 42, 101) and cs.cycles.dtype == np.float32
    assert cs.channels == IMU_CHANNELS + ANGLE_CHANNELS
    assert cs.valid.all() and np.isfinite(cs.cycles).all()
    assert set(cs.condition) == {"walking"} and set(cs.subject) == {1} and not cs.boundary_corrupted.any()
    assert 44 <= float(np.median(cs.duration)) <= 50
    # Consecutive strides share their boundary; rejected strides leave a gap in ``index``.
    nxt = np.flatnonzero(np.diff(cs.index) == 1)
    assert len(nxt) >= 120 and np.all(cs.start[nxt + 1] == cs.end[nxt])
    # Point 0 and point 100 are the boundary samples.
    rec = db.load("HuGaDB_v1_walking_01_00")
    k = cs.channel_index("gyro_rs_y")
    np.testing.assert_allclose(cs.cycles[:, k, 0], rec.channel("gyro_rs_y")[cs.start], rtol=1e-5)
    np.testing.assert_allclose(cs.cycles[:, k, -1], rec.channel("gyro_rs_y")[cs.end], rtol=1e-5)


def test_real_corrupted_files_are_masked_with_zeros():
    db = real_db()
    cs = cycles_from_recording(db.load("HuGaDB_v1_walking_04_00"))  # every gyroscope corrupted
    assert len(cs) > 100 and cs.boundary_corrupted.all()
    gyro_or_angle = np.array([c.startswith("gyro") or c in ANGLE_CHANNELS for c in cs.channels])
    assert not cs.valid[:, gyro_or_angle].any() and cs.valid[:, ~gyro_or_angle].all()
    assert np.all(cs.cycles[:, gyro_or_angle] == 0.0)
    partial = cycles_from_recording(db.load("HuGaDB_v1_walking_05_00"))  # rf, rs, lf corrupted
    bad = {c for c, ok in zip(partial.channels, partial.valid[0]) if not ok}
    assert bad == {f"gyro_{s}_{a}" for s in ("rf", "rs", "lf") for a in "xyz"} | {"knee_r", "ankle_r", "ankle_l"}
    assert partial.boundary_corrupted.all() and len(partial) > 20


def test_build_caches_by_config(tmp_path, monkeypatch):
    from metagait_edge.data.hugadb import HuGaDB

    real = real_db()
    db = HuGaDB(real.data_dir, cache_dir=tmp_path / "parsed", archive_sha256=real.archive_sha256)
    ids = ["HuGaDB_v1_walking_01_02", "HuGaDB_v1_walking_06_02"]
    first = build_cycle_set(db=db, file_ids=ids, progress=False)
    assert sorted(set(first.file_id)) == ids and first.meta["archive_sha256"] == real.archive_sha256
    assert len(list((tmp_path / "cycles").glob("cycles-*.npz"))) == 1

    def boom(*a, **k):
        raise AssertionError("cache not used")

    monkeypatch.setattr(cycles_mod, "cycles_from_recording", boom)
    again = build_cycle_set(db=db, file_ids=ids, progress=False)
    np.testing.assert_array_equal(again.cycles, first.cycles)
    with pytest.raises(AssertionError, match="cache not used"):  # another config is another cache entry
        build_cycle_set(CycleSetConfig(n_points=51), db=db, file_ids=ids, progress=False)


@pytest.mark.slow
def test_full_cycle_set():
    real_db()
    cs = build_cycle_set(progress=False)
    s = cs.summary()
    assert s["subjects"] == list(range(1, 19))
    assert set(s["per_condition"]) == {"walking", "running", "stairs_up", "stairs_down"}
    assert s["per_condition"]["walking"] > 9000 and len(cs) > 14000
    assert 50 <= s["median_duration_samples"] <= 58
    assert (cs.file_id == "HuGaDB_v1_walking_01_00").sum() == 128
    assert np.isfinite(cs.cycles).all()
