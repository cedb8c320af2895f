from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from metagait_edge.config import ConfigError, from_dict
from metagait_edge.runtime.safety import JointLimit, SafetyConfig, SafetyEnvelope, SafetyStatus, rate_limit

CH = ("hip_r", "knee_r")


def _env(**kw):
    kw = {"limits_frame": "absolute", "max_clipped_fraction": 1.0, **kw}  # the clamping rules on their own
    cfg = SafetyConfig(
        joint_limits={"hip_r": JointLimit(-20, 40, 200), "knee_r": JointLimit(0, 70, 400)},
        staleness_timeout_s=0.1, confidence_threshold=0.6, cycle_duration_s=1.0, **kw,
    )
    return SafetyEnvelope(cfg)


def _gait():
    t = np.linspace(0, 2 * np.pi, 101)
    return np.stack([10 + 20 * np.sin(t), 30 + 30 * np.sin(t - 1)]).astype(np.float32)


def test_in_range_personalized_reference_passes_unchanged():
    env = _env()
    r = env.apply(_gait(), CH, last_imu_time=10.0, now=10.05, confidence=0.9, personalized=True)
    assert r.status is SafetyStatus.OK and r.personalized and r.reason == ""
    assert r.clamped_points == 0 and r.rate_limited_points == 0
    assert np.array_equal(r.trajectory, _gait())


def test_nan_or_inf_anywhere_means_hold_and_is_counted():
    env = _env()
    for bad in (np.nan, np.inf, -np.inf):
        x = _gait()
        x[1, 57] = bad
        r = env.apply(x, CH, 10.0, 10.0, 0.9, True)
        assert r.trajectory is None and r.status is SafetyStatus.HOLD and "NaN or Inf" in r.reason
    assert env.counters.nonfinite == 3 and env.counters.hold == 3


def test_stale_or_missing_imu_means_hold():
    env = _env()
    r = env.apply(_gait(), CH, last_imu_time=10.0, now=10.25, confidence=0.9, personalized=True)
    assert r.status is SafetyStatus.HOLD and r.trajectory is None and "stale" in r.reason and "0.250" in r.reason
    r = env.apply(_gait(), CH, last_imu_time=None, now=10.0, confidence=0.9, personalized=True)
    assert r.status is SafetyStatus.HOLD and "no IMU" in r.reason
    assert env.counters.stale == 2


def test_confidence_gate_flags_non_personalized():
    env = _env()
    r = env.apply(_gait(), CH, 10.0, 10.0, confidence=0.3, personalized=True)
    assert r.status is SafetyStatus.DEGRADED and not r.personalized and "0.30 < 0.60" in r.reason
    assert r.trajectory is not None
    r = env.apply(_gait(), CH, 10.0, 10.0, confidence=float("nan"), personalized=True)
    assert r.status is SafetyStatus.DEGRADED and not r.personalized
    r = env.apply(_gait(), CH, 10.0, 10.0, confidence=0.99, personalized=False)
    assert r.status is SafetyStatus.DEGRADED and not r.personalized and "no personalized" in r.reason


def test_clamps_to_angle_limits_and_limits_rate():
    env = _env()
    x = _gait()
    x[0, 50] = 90.0  # above hip max 40, and a spike
    x[1, :] = 35.0
    x[1, 60:] = 65.0  # a 30 deg step in one point; knee max rate 400 deg/s * 10 ms = 4 deg per point
    r = env.apply(x, CH, 10.0, 10.0, 0.9, True)
    y = r.trajectory
    assert y[0].max() <= 40.0 and r.clamped_points == 1
    assert y[1, 59] == 35.0 and y[1, 60] == pytest.approx(39.0) and y[1, 66] == pytest.approx(63.0)
    assert y[1, 67] == pytest.approx(65.0) and y[1, -1] == pytest.approx(65.0)
    assert r.rate_limited_points > 0
    # A shorter cycle means a smaller per-point allowance: more limiting.
    r_fast = env.apply(x, CH, 10.0, 10.0, 0.9, True, cycle_duration_s=0.5)
    assert r_fast.trajectory[1, 60] == pytest.approx(37.0)


def test_unknown_channel_holds_unless_a_default_limit_is_configured():
    env = _env()
    r = env.apply(_gait(), ("hip_r", "elbow"), 10.0, 10.0, 0.9, True)
    assert r.status is SafetyStatus.HOLD and "'elbow'" in r.reason
    env = _env(default_limit=JointLimit(-5, 5, 100))
    r = env.apply(_gait(), ("hip_r", "elbow"), 10.0, 10.0, 0.9, True)
    assert r.status is SafetyStatus.OK and r.trajectory[1].max() <= 5.0


def test_wrong_shapes_raise_clear_errors():
    env = _env()
    with pytest.raises(ValueError, match=r"\[channels, 101\]"):
        env.apply(np.zeros((2, 100)), CH, 0, 0, 1, True)
    with pytest.raises(ValueError, match="3 channel names"):
        env.apply(np.zeros((2, 101)), CH + ("x",), 0, 0, 1, True)


def test_config_loads_from_yaml_mapping_and_rejects_typos():
    cfg = from_dict(SafetyConfig, {"joint_limits": {"knee_l": {"min_deg": 0, "max_deg": 60, "max_rate_dps": 300}},
                                   "staleness_timeout_s": 0.2})
    assert cfg.joint_limits["knee_l"].max_deg == 60.0
    with pytest.raises(ConfigError, match="joint_limits.knee_l.max_rate"):
        from_dict(SafetyConfig, {"joint_limits": {"knee_l": {"min_deg": 0, "max_deg": 60, "max_rate": 3}}})
    with pytest.raises(ConfigError, match="min_deg"):
        from_dict(SafetyConfig, {"joint_limits": {"knee_l": {"min_deg": 70, "max_deg": 60, "max_rate_dps": 3}}})


_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.floats(-1e6, 1e6, width=32))


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(np.float32, (2, 101), elements=_values),
    st.floats(0.0, 0.3),
    st.floats(0.01, 5.0),
    st.floats(0.0, 1.0),
    st.booleans(),
)
def test_output_is_always_finite_within_limits_and_rate(x, age, cycle, conf, personalized):
    env = _env()
    r = env.apply(x, CH, 10.0, 10.0 + age, conf, personalized, cycle_duration_s=cycle)
    if r.trajectory is None:
        assert r.status is SafetyStatus.HOLD
        assert age > 0.1 or not np.isfinite(x).all() or not 0.4 <= cycle <= 2.0
        return
    assert 0.4 <= cycle <= 2.0  # an implausible cycle is rejected, never rescaled into range
    y = r.trajectory
    assert y.dtype == np.float32 and y.shape == (2, 101)
    assert np.isfinite(y).all()
    assert (y[0] >= -20).all() and (y[0] <= 40).all() and (y[1] >= 0).all() and (y[1] <= 70).all()
    step = np.abs(np.diff(y.astype(np.float64), axis=1))
    allow = np.array([200.0, 400.0])[:, None] * cycle / 100  # at the trajectory's own cycle duration
    assert (step <= allow + 1e-4).all()
    assert r.personalized == (personalized and conf >= 0.6)


def _rate_limit_columns(x, lo, hi, max_step):
    """The rule written column by column in NumPy: follow x with bounded steps, stay within limits."""
    y = np.empty_like(x)
    y[:, 0] = x[:, 0]
    n = 0
    for i in range(1, x.shape[1]):
        step = x[:, i] - y[:, i - 1]
        limited = np.clip(step, -max_step, max_step)
        n += int(np.count_nonzero(limited != step))
        y[:, i] = np.clip(y[:, i - 1] + limited, lo, hi)
    return y, n


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.float64, (3, 101), elements=st.floats(-100, 100)), st.floats(0.1, 20.0))
def test_rate_limit_matches_the_columnwise_rule(x, step):
    lo, hi, max_step = np.array([-90.0, -50.0, 0.0]), np.array([90.0, 50.0, 80.0]), np.array([step, 2 * step, 0.5 * step])
    clamped = np.clip(x, lo[:, None], hi[:, None])
    got, n = rate_limit(clamped, lo, hi, max_step)
    want, n_want = _rate_limit_columns(clamped, lo, hi, max_step)
    np.testing.assert_array_equal(got, want)
    assert n == n_want


# ------------------------------------------------------------------- limits in the published frame (issue 16 #3)
ANGLES = ("hip_r", "knee_r", "ankle_r", "hip_l", "knee_l", "ankle_l")


def _offset_gait(knee_offset: float) -> np.ndarray:
    """A plausible walking cycle of the six angles as IMU estimates read it: the knee's zero offset by mounting."""
    t = np.linspace(0, 2 * np.pi, 101)
    hip = 10 + 22 * np.cos(t)
    knee = knee_offset + 5 + 28 * (1 - np.cos(t - 0.6)) ** 1.5 / 2.8
    ankle = 5 * np.sin(2 * t)
    return np.stack([hip, knee, ankle, np.roll(hip, 50), np.roll(knee, 50), np.roll(ankle, 50)]).astype(np.float32)


def test_relative_limits_leave_an_offset_walker_unclipped_where_anatomical_ones_reshape_it():
    from metagait_edge.runtime.safety import NeutralPosture

    x = _offset_gait(knee_offset=-25.0)  # a straight knee reads -25 deg on this mounting
    neutral = NeutralPosture().update(x)
    rel = SafetyEnvelope(SafetyConfig()).apply(x, ANGLES, 1.0, 1.0, 0.0, False, 1.1, neutral)
    assert rel.status is SafetyStatus.DEGRADED and rel.clamped_points == 0 and rel.rate_limited_points == 0
    np.testing.assert_array_equal(rel.trajectory, x)
    # The same reference against anatomical limits in the wrong frame: the knee would sit flat at -5 deg for a
    # large part of the cycle; it is not published.
    ana = SafetyEnvelope(SafetyConfig(limits_frame="absolute")).apply(x, ANGLES, 1.0, 1.0, 0.0, False, 1.1)
    assert ana.status is SafetyStatus.HOLD and "clipped into another shape" in ana.reason


def test_relative_limits_without_a_neutral_hold():
    r = SafetyEnvelope(SafetyConfig()).apply(_offset_gait(0.0), ANGLES, 1.0, 1.0, 0.0, False, 1.1)
    assert r.status is SafetyStatus.HOLD and "neutral" in r.reason


def test_clipped_beyond_the_configured_fraction_holds_below_it_publishes():
    env = _env(max_clipped_fraction=0.05)
    x = _gait()
    x[0, 10:14] = 80.0  # 4 of 202 points above hip max 40 (2 %)
    r = env.apply(x, CH, 10.0, 10.0, 0.9, True)
    assert r.status is SafetyStatus.OK and r.clamped_points == 4
    x[0, 10:30] = 80.0  # 20 points, plus the rate-limited ramps around them (> 10 %)
    r = env.apply(x, CH, 10.0, 10.0, 0.9, True)
    assert r.status is SafetyStatus.HOLD and r.trajectory is None and "clipped" in r.reason
    assert env.counters.clipped_hold == 1


def test_config_rejects_an_unknown_limits_frame_and_bad_fraction():
    with pytest.raises(ValueError, match="limits_frame"):
        SafetyConfig(limits_frame="anatomical")
    with pytest.raises(ValueError, match="max_clipped_fraction"):
        SafetyConfig(max_clipped_fraction=1.5)


@pytest.mark.slow
def test_default_limits_leave_real_hugadb_walkers_unclipped():
    """True HuGaDB cycles (the runtime's angle estimates) through the default envelope: nothing clipped."""
    from metagait_edge.data.cycles import cycle_channels, cycles_from_recording
    from metagait_edge.data.hugadb import HuGaDB
    from metagait_edge.runtime.safety import NeutralPosture

    try:
        db = HuGaDB.open()
    except (FileNotFoundError, OSError, ValueError) as exc:
        pytest.skip(f"HuGaDB not available: {exc}")
    idx = [list(cycle_channels()).index(c) for c in ANGLES]
    env = SafetyEnvelope(SafetyConfig())
    n, walkers = 0, set()
    for file_id in db.select("walking")[::4]:  # every 4th walking file; all of them: docs/reliability.md
        cs = cycles_from_recording(db.load(file_id))
        neutral = NeutralPosture()
        for k in range(len(cs)):
            ang = cs.cycles[k, idx]
            if not cs.valid[k, idx].all():
                continue
            r = env.apply(ang, ANGLES, 1.0, 1.0, 0.0, False, cs.duration[k] / cs.sample_rate_hz, neutral.update(ang))
            if r.status is SafetyStatus.HOLD and "duration" in r.reason:
                continue
            n += 1
            walkers.add(int(cs.subject[k]))
            assert r.status is SafetyStatus.DEGRADED, r.reason
    assert n > 200 and len(walkers) >= 4
    assert env.counters.clamped_points == 0 and env.counters.rate_limited_points == 0
