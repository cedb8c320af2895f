from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metagait_edge.data.hugadb import Recording
from metagait_edge.phase.ground_truth import gait_bouts, phase_truth, subsample_crossings, subsample_error
from metagait_edge.sensors import GYRO_LSB_PER_DPS, IMU_CHANNELS

FS = 58.8


def synthetic_recording(period=53.3, n=1600, act=None, shift=0.37, left_shift=None):
    """Both shanks' normalized gyro = 300 sin: falling zero crossings at shift + period/2 + k*period."""
    t = np.arange(n, dtype=float)
    raw = np.zeros((n, 36), dtype=np.int16)
    left_shift = shift + period / 2 if left_shift is None else left_shift
    for name, sh in (("gyro_rs_y", shift), ("gyro_ls_y", left_shift)):
        s = 300.0 * np.sin(2 * np.pi * (t - sh) / period)
        raw[:, IMU_CHANNELS.index(name)] = np.round(-s * GYRO_LSB_PER_DPS).astype(np.int16)
    act = np.ones(n, dtype=np.uint8) if act is None else np.asarray(act, dtype=np.uint8)
    rows = np.arange(n, dtype=np.int32)
    return Recording("HuGaDB_v1_walking_99_00", Path("synthetic"), 99, "walking", 0, raw,
                     np.zeros((n, 2), np.uint8), act, rows)


def test_subsample_crossing_interpolates():
    y = np.array([3.0, 1.0, -3.0, -1.0])
    assert subsample_crossings(y, np.array([2]))[0] == pytest.approx(1.25)


def test_phase_truth_is_linear_between_subsample_ics():
    period, shift = 53.3, 0.37
    rec = synthetic_recording(period, shift=shift)
    gt = phase_truth(rec)
    true_ic = shift + period / 2 + period * np.arange(40)
    ic = gt.ic[0]
    assert len(ic) > 20
    err = ic[:, None] - true_ic[None, :]
    nearest = err[np.arange(len(ic)), np.abs(err).argmin(1)]
    assert np.max(np.abs(nearest)) < 0.05  # sub-sample: far better than the one-sample grid
    ph = gt.phase[0]
    ok = np.isfinite(ph)
    expected = np.mod(100 * (np.arange(len(rec)) - (shift + period / 2)) / period, 100)
    d = np.abs(ph[ok] - expected[ok])
    assert np.max(np.minimum(d, 100 - d)) < 0.2
    assert ok.mean() > 0.9 and np.all((ph[ok] >= 0) & (ph[ok] < 100))
    # The left leg is half a cycle later.
    okb = ok & np.isfinite(gt.phase[1])
    dl = np.abs(gt.phase[0, okb] - gt.phase[1, okb])
    assert np.median(np.minimum(dl, 100 - dl)) == pytest.approx(50, abs=0.5)


def test_no_truth_outside_gait_bouts_nor_across_them():
    act = np.ones(1600, dtype=np.uint8)
    act[700:900] = 8  # standing in the middle
    gt = phase_truth(synthetic_recording(act=act))
    assert np.isnan(gt.phase[:, 700:900]).all()
    assert np.isfinite(gt.phase[0, 100:600]).mean() > 0.95
    for s, e in gt.strides[0]:
        assert not (s < 700 and e > 700) and not (s < 900 and e > 900)
    # A mode change inside the bout keeps the stride across it (walking -> stairs up).
    act2 = np.ones(1600, dtype=np.uint8)
    act2[800:] = 3
    gt2 = phase_truth(synthetic_recording(act=act2))
    assert any(s < 800 < e for s, e in gt2.strides[0])


def test_gait_bouts_split_at_breaks():
    act = np.array([1, 1, 3, 3, 8, 1, 1, 1])
    breaks = np.zeros(8, bool)
    breaks[6] = True
    assert gait_bouts(act, breaks).tolist() == [0, 0, 0, 0, -1, 1, 2, 2]


def test_subsample_error_is_below_integer_error():
    rec = synthetic_recording(period=53.3, n=3000)
    e_frac, e_int = subsample_error(rec.channel("gyro_rs_y"), FS)
    assert len(e_frac) > 40
    assert np.sqrt(np.mean(e_frac ** 2)) < 0.05 < np.sqrt(np.mean(e_int ** 2))


def test_strides_where_the_legs_do_not_alternate_are_rejected_and_kept_apart():
    # Both legs' ICs at the same moment: no stride holds the other leg's IC at 30-70 %, so no truth at all.
    same = phase_truth(synthetic_recording(left_shift=0.37))
    assert np.isnan(same.phase).all() and len(same.strides[0]) == 0
    assert np.isfinite(same.rejected).mean() > 0.9  # what the check removed, kept for the reports
    # Half a cycle apart (the normal case): every stride passes, nothing is rejected.
    ok = phase_truth(synthetic_recording())
    assert np.isfinite(ok.phase[0]).mean() > 0.9 and np.isnan(ok.rejected).all()


def test_an_extra_ic_inside_strides_rejects_both_halves():
    # The right shank crosses zero twice per stride (as some HuGaDB stairs look to the detector): its "strides"
    # last half a stride, pass the duration limits, and hold the left IC at 15 % or not at all.
    period, n, shift = 60.0, 1800, 0.37
    rec = synthetic_recording(period=period, n=n, shift=shift)
    left_ic = shift + period  # the left leg's falling crossings: shift + period + k * period
    r = left_ic - 0.15 * period / 2 - period / 4  # right crossings 15 % of a short stride before each left IC
    t = np.arange(n, dtype=float)
    fast = 300.0 * np.sin(2 * np.pi * (t - r) / (period / 2))
    rec.raw[:, IMU_CHANNELS.index("gyro_rs_y")] = np.round(-fast * GYRO_LSB_PER_DPS).astype(np.int16)
    gt = phase_truth(rec)
    assert np.isnan(gt.phase[0]).all()
    assert np.isfinite(gt.rejected[0]).mean() > 0.8
    # The left leg's strides now hold two right ICs each: rejected too, no truth is left on either leg.
    assert np.isnan(gt.phase[1]).all()
