"""Calibration quality checks, acceptance rule and the atomic profile store (runtime/calibration.py, profiles.py)."""

from __future__ import annotations

import queue

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from metagait_edge.runtime.calibration import (  # noqa: E402
    CycleRecord, calibrate, check_cycle, consistent_subset, load_personalizer,
)
from metagait_edge.runtime.config import CalibrationConfig  # noqa: E402
from metagait_edge.runtime.profiles import Profile, ProfileError, ProfileStore  # noqa: E402


@pytest.fixture(scope="module")
def pers():
    torch.set_num_threads(1)
    return load_personalizer()


def _cycle(p, rng, knee_amp=30.0, dur=1.1, gap=0.02, index=0, noise=1.0):
    x = np.linspace(0, 2 * np.pi, 101)
    c = np.zeros((p.n_channels, 101), np.float32)
    for j in range(p.n_channels):
        c[j] = np.sin(x + 0.1 * j) * p.normalizer.std[j] * 0.8
    c[p.channels.index("knee_r")] = knee_amp * (0.5 + 0.5 * np.sin(x))
    c[p.channels.index("gyro_rs_y")] = -200 * np.sin(x)
    c += rng.normal(0, 0.02 * noise, c.shape).astype(np.float32) * p.normalizer.std[:, None]
    return CycleRecord(c, np.ones(p.n_channels, bool), dur, gap, 0.0, index)


def test_quality_checks_name_the_problem(pers):
    cfg, rng = CalibrationConfig(), np.random.default_rng(0)
    assert check_cycle(_cycle(pers, rng), cfg, pers.channels) is None
    assert "duration" in check_cycle(_cycle(pers, rng, dur=0.3), cfg, pers.channels)
    assert "gap" in check_cycle(_cycle(pers, rng, gap=0.5), cfg, pers.channels)
    assert "knee range" in check_cycle(_cycle(pers, rng, knee_amp=2.0), cfg, pers.channels)
    bad = _cycle(pers, rng)
    bad.cycle[0, 5] = np.nan
    assert "non-finite" in check_cycle(bad, cfg, pers.channels)
    norm = pers.normalize(np.stack([_cycle(pers, rng).cycle for _ in range(5)] + [_cycle(pers, rng).cycle * 8.0]))
    assert consistent_subset(norm, 2.5).tolist() == [True] * 5 + [False]


def _queue(cycles):
    q = queue.Queue()
    for c in cycles:
        q.put(c)
    return q


def test_calibration_commits_only_an_improvement(pers, tmp_path):
    rng = np.random.default_rng(1)
    store = ProfileStore(tmp_path)
    progress = []
    o = calibrate(pers, store, "bob", _queue([_cycle(pers, rng, index=i) for i in range(7)]), CalibrationConfig(),
                  feedback=lambda n, k: progress.append((n, k)), timeout_s=5)
    assert o.success and o.error_after < o.error_before and progress[-1] == (5, 5)
    prof = store.load("bob")
    assert prof.meta["loss_after"] == pytest.approx(o.error_after)
    # A demand no adaptation can meet: the previous profile stays, and the reason says so.
    o2 = calibrate(pers, store, "bob", _queue([_cycle(pers, rng, index=i) for i in range(7)]),
                   CalibrationConfig(min_improvement=0.9999), timeout_s=5, previous=prof)
    assert not o2.success and "previous profile kept" in o2.reason
    assert store.load("bob").meta["saved"] == prof.meta["saved"] and len(list((tmp_path / "bob").glob("weights-*"))) == 1


def test_non_consecutive_or_rejected_cycles_restart_collection(pers, tmp_path):
    rng = np.random.default_rng(2)
    cycles = [_cycle(pers, rng, index=i) for i in range(3)] + [_cycle(pers, rng, dur=0.2, index=3)]
    cycles += [_cycle(pers, rng, index=i) for i in range(10, 17)]
    o = calibrate(pers, ProfileStore(tmp_path), "eve", _queue(cycles), CalibrationConfig(), timeout_s=5)
    assert o.success and o.rejected == {"duration": 1}
    # the walk settles again after the rejection: one stride short of that and the calibration times out
    assert not calibrate(pers, ProfileStore(tmp_path), "eve", _queue(cycles[:-1]), CalibrationConfig(),
                         timeout_s=0.5).success
    short = calibrate(pers, ProfileStore(tmp_path), "eve", _queue(cycles[:4]), CalibrationConfig(), timeout_s=0.5)
    assert not short.success and "timeout" in short.reason


@pytest.mark.parametrize("settle", [0, 1, 2])
def test_the_first_strides_of_a_walk_settle_and_are_not_used(pers, tmp_path, settle):
    rng = np.random.default_rng(3)
    # durations tell the cycles apart in the profile; all pass the checks
    cycles = [_cycle(pers, rng, index=i, dur=0.9 + 0.05 * i) for i in range(8)]
    o = calibrate(pers, ProfileStore(tmp_path), "kim", _queue(cycles), CalibrationConfig(settle_strides=settle),
                  timeout_s=5)
    assert o.success
    used = ProfileStore(tmp_path).load("kim").meta["cycle_s"]
    assert used == pytest.approx([c.duration_s for c in cycles[settle:settle + 6]])
    with pytest.raises(ValueError, match="settle_strides"):
        CalibrationConfig(settle_strides=-1)


def test_profile_store_round_trip_and_errors(tmp_path):
    store = ProfileStore(tmp_path)
    w = {"tcn.head.weight": np.arange(6, dtype=np.float32).reshape(2, 3)}
    store.save(Profile("ann", w, np.ones((2, 101), np.float32), np.array([True, False]), {"loss_after": 0.1}))
    p = store.load("ann")
    assert np.array_equal(p.weights["tcn.head.weight"], w["tcn.head.weight"]) and p.valid.tolist() == [True, False]
    assert store.walkers() == ["ann"]
    with pytest.raises(ProfileError, match="'zed' has no profile"):
        store.load("zed")
    with pytest.raises(ProfileError, match="walker name"):
        store.load("../etc")
    wfile = next((tmp_path / "ann").glob("weights-*"))
    wfile.write_bytes(wfile.read_bytes()[:-3] + b"xyz")
    with pytest.raises(ProfileError, match="SHA-256"):
        store.load("ann")


def test_profile_load_survives_a_save_running_between_its_reads(tmp_path, monkeypatch):
    """Another process commits a new profile after we read profile.json and before we open the weights it
    named (the old weights are deleted by then): the load reads the new commit instead of failing, while a
    profile that is broken on its own still fails at once."""
    from metagait_edge.runtime import profiles as profiles_module

    store = ProfileStore(tmp_path)
    old = Profile("ann", {"w": np.zeros(3, np.float32)}, np.zeros((2, 101), np.float32), np.array([True, True]))
    store.save(old)
    real_sha = profiles_module.file_sha256
    saved = []

    def sha_while_someone_saves(path):
        if not saved:  # first look at the old weights: a concurrent save commits and deletes them now
            saved.append(path)
            store.save(Profile("ann", {"w": np.ones(3, np.float32)}, old.template, old.valid))
            return "gone"
        return real_sha(path)

    monkeypatch.setattr(profiles_module, "file_sha256", sha_while_someone_saves)
    assert store.load("ann").weights["w"].tolist() == [1.0, 1.0, 1.0] and saved
    monkeypatch.setattr(profiles_module, "file_sha256", lambda path: "corrupt")  # nothing changes: broken
    with pytest.raises(ProfileError, match="SHA-256"):
        store.load("ann")
