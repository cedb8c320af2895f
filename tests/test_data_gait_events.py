from __future__ import annotations

import math
import os

import numpy as np
import pytest

from metagait_edge.data.gait_events import (
    CausalGaitDetector, GaitEventConfig, causal_delay_samples, contralateral_consistent, detect_leg_events,
    match_events, plausible_strides,
)

FS = 58.8


def synthetic_shank(n_strides=30, period=54, amp=300.0, shift=0.0):
    """Raw gyro_y (HuGaDB sign: swing negative) whose normalized signal is amp*sin; ICs are known."""
    t = np.arange(n_strides * period)
    s = amp * np.sin(2 * np.pi * (t - shift) / period)
    # Normalized s falls through zero at t = shift + period/2 + k*period: the IC is the next sample.
    ic = np.array([math.ceil(shift + period / 2 + k * period) for k in range(n_strides)])
    return -s, ic[ic < len(t)]


def real_db():
    root = os.environ.get("METAGAIT_DATA")
    if not root or not os.path.isfile(os.path.join(root, "hugadb", "HuGaDB_v1.tar.xz")):
        pytest.skip("real HuGaDB archive not found under $METAGAIT_DATA/hugadb")
    from metagait_edge.data.hugadb import HuGaDB

    return HuGaDB.open()


def test_offline_finds_known_zero_crossings():
    raw, ic = synthetic_shank()
    ev = detect_leg_events(raw, FS)
    m, off = match_events(ic[1:-1], ev.ic, 1)
    assert m.all() and np.all(np.abs(off) <= 1)
    assert np.all((ev.ic - ev.ms > 0) & (ev.ic - ev.ms < 0.5 * 54))
    assert plausible_strides(ev.ic, FS).all()


def test_adaptive_threshold_ignores_small_bumps_and_floor_rejects_noise():
    raw, ic = synthetic_shank(amp=300.0)
    t = np.arange(len(raw))
    bumps = -40.0 * np.sin(2 * np.pi * t / 54 * 3)  # third harmonic ripple, below 0.4 x 300
    ev = detect_leg_events(raw + bumps, FS)
    assert abs(len(ev.ic) - len(ic)) <= 1
    quiet = np.random.default_rng(0).normal(0, 5, 2000)
    assert len(detect_leg_events(quiet, FS).ic) == 0


def test_duration_limits_and_contralateral_consistency():
    ic = np.array([0, 54, 108, 120, 174, 400, 454])
    ok = plausible_strides(ic, FS)
    assert ok.tolist() == [True, True, False, True, False, True]
    right = np.array([0, 54, 108, 162])
    left = np.array([27, 80, 82, 150])
    assert contralateral_consistent(right, left).tolist() == [True, False, False]


def test_config_validation():
    with pytest.raises(ValueError, match="min_stride_s < max_stride_s"):
        GaitEventConfig(min_stride_s=2.0, max_stride_s=1.0)
    with pytest.raises(ValueError, match="lowpass_hz"):
        detect_leg_events(np.zeros(500), FS, GaitEventConfig(lowpass_hz=40.0))


def test_causal_matches_offline_on_synthetic_and_reports_phase():
    raw, ic = synthetic_shank(n_strides=20)
    det = CausalGaitDetector(FS)
    phases, events = [], []
    for x in raw:
        e = det.push(x)
        if e is not None:
            events.append(e)
        phases.append(det.phase)
    got = np.array([e.index for e in events])
    m, off = match_events(ic[1:], got, 2)
    assert m.mean() >= 0.95
    assert all(e.detected_at - e.index == det.delay for e in events)
    p = np.array(phases[events[3].detected_at: events[4].detected_at])
    assert np.all(np.diff(p) >= 0) and p[0] < 10 and p[-1] > 90
    assert math.isnan(CausalGaitDetector(FS).phase)


def test_corrupted_gain_keeps_events():
    raw, ic = synthetic_shank(amp=300.0)
    counts = np.clip(np.round(raw * 16.4 * 10), -32768, 32767)
    ev = detect_leg_events(counts / 16.4, FS, corrupted=True)
    m, _ = match_events(ic[1:-1], ev.ic, 1)
    assert m.all()


def test_real_stride_count_walking_01_00():
    db = real_db()
    rec = db.load("HuGaDB_v1_walking_01_00")
    cfg = GaitEventConfig()
    r = detect_leg_events(rec.channel("gyro_rs_y"), FS, cfg)
    lft = detect_leg_events(rec.channel("gyro_ls_y"), FS, cfg)
    ok = plausible_strides(r.ic, FS, cfg) & contralateral_consistent(r.ic, lft.ic, cfg)
    assert 128 <= int(ok.sum()) <= 130
    assert 128 <= len(lft.ic) - 1 <= 131  # the left leg sees the same walk


def test_real_median_stride_over_clean_walking_files():
    from metagait_edge.data.gyro_validity import corrupted_gyros

    db = real_db()
    strides = []
    for fid in [f for f in db.select("walking") if "rs" not in corrupted_gyros(f)][:12]:
        ic = detect_leg_events(db.load(fid).channel("gyro_rs_y"), FS).ic
        strides.extend(np.diff(ic)[plausible_strides(ic, FS)].tolist())
    assert 48 <= float(np.median(strides)) <= 60


@pytest.mark.parametrize("file_id", ["HuGaDB_v1_walking_06_00", "HuGaDB_v1_walking_14_00", "HuGaDB_v1_walking_04_00"])
def test_real_causal_agrees_with_offline(file_id):
    from metagait_edge.data.gyro_validity import corrupted_gyros

    db = real_db()
    rec = db.load(file_id)
    bad = "rs" in corrupted_gyros(file_id)
    x = rec.channel("gyro_rs_y")
    offline = detect_leg_events(x, FS, corrupted=bad).ic
    det = CausalGaitDetector(FS, corrupted=bad)
    events = det.run(x)
    got = np.array([e.index for e in events])
    matched, off = match_events(offline, got, 2)
    assert len(offline) > 40
    assert matched.mean() >= 0.95
    assert len(got) - matched.sum() <= 0.05 * len(offline)  # few spurious causal events
    assert np.abs(off).max() <= 2
    assert max(e.detected_at - e.index for e in events) <= causal_delay_samples(GaitEventConfig(), FS) <= 4


def test_real_simulated_corruption_does_not_move_events():
    db = real_db()
    rec = db.load("HuGaDB_v1_walking_01_00")
    counts = rec.raw[:, rec.channel_index("gyro_rs_y")].astype(np.int64)
    clean = detect_leg_events(counts / 16.4, FS).ic
    corrupt = detect_leg_events(np.clip(counts * 10, -32768, 32767) / 16.4, FS, corrupted=True).ic
    matched, off = match_events(clean, corrupt, 1)
    assert matched.mean() >= 0.98


def test_causal_per_sample_filter_equals_scipy_sosfilt():
    from scipy import signal

    x = np.random.default_rng(1).normal(0, 200, 500)
    det = CausalGaitDetector(FS)
    for v in x:
        det.push(v)
    s = x * det.config.swing_sign
    _, zf = signal.sosfilt(det._sos, s, zi=signal.sosfilt_zi(det._sos) * s[0])
    np.testing.assert_allclose(np.asarray(det._zi), zf, rtol=1e-9, atol=1e-9)
