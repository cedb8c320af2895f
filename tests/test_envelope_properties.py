"""Property-based tests of every safety-envelope invariant (issue 16), over random model outputs and timing.

Invariants of ``SafetyEnvelope.apply`` (default config: relative limits around a random neutral):
1. what it returns is finite float32 [C, 101], or None with HOLD;
2. stale input (age > staleness_timeout_s) or none at all -> HOLD;
3. a cycle outside min..max_cycle_duration_s -> HOLD; never rescaled;
4. published values lie within the angle limits around the neutral;
5. steps between points respect each joint's rate limit at the trajectory's own cycle duration;
6. a published reference was changed at no more than max_clipped_fraction of its points;
7. a reference already inside every limit is published unchanged (fresh, plausible cycle);
8. it is personalized only when asked for and the confidence passes the gate.
And of ``InputGate`` over random sample timing: a sample is used only when fresh; a gap restarts; the
phase is in [0, 1) and unknown right after a restart.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from metagait_edge.runtime.input_gate import ADMIT, RESTART, STALE, InputGate
from metagait_edge.runtime.safety import SafetyConfig, SafetyEnvelope, SafetyStatus

ANGLES = ("hip_r", "knee_r", "ankle_r", "hip_l", "knee_l", "ankle_l")
CFG = SafetyConfig()
_finite = st.floats(-400, 400, width=32)
_any = st.one_of(_finite, st.floats(allow_nan=True, allow_infinity=True, width=32))


def _limits(neutral):
    lo = np.array([CFG.joint_limits[c].min_deg for c in ANGLES]) + neutral
    hi = np.array([CFG.joint_limits[c].max_deg for c in ANGLES]) + neutral
    rate = np.array([CFG.joint_limits[c].max_rate_dps for c in ANGLES])
    return lo, hi, rate


@settings(max_examples=200, deadline=None)
@given(
    traj=hnp.arrays(np.float32, (6, 101), elements=_any),
    neutral=hnp.arrays(np.float64, 6, elements=st.floats(-60, 60)),
    age=st.floats(0.0, 0.5),
    cycle=st.floats(0.05, 4.0),
    conf=st.floats(0.0, 1.0),
    personalized=st.booleans(),
)
def test_envelope_invariants_over_random_outputs_and_timing(traj, neutral, age, cycle, conf, personalized):
    env = SafetyEnvelope(CFG)
    r = env.apply(traj, ANGLES, 100.0, 100.0 + age, conf, personalized, cycle, neutral)
    fresh = age <= CFG.staleness_timeout_s
    plausible = CFG.min_cycle_duration_s <= cycle <= CFG.max_cycle_duration_s
    finite = bool(np.isfinite(traj).all())
    if not (fresh and plausible and finite):  # 2, 3 (and non-finite input)
        assert r.status is SafetyStatus.HOLD and r.trajectory is None
        return
    if r.status is SafetyStatus.HOLD:  # the only other HOLD: clipped into another shape
        assert r.trajectory is None and "clipped" in r.reason
        return
    y = r.trajectory.astype(np.float64)
    assert r.trajectory.dtype == np.float32 and r.trajectory.shape == (6, 101) and np.isfinite(y).all()  # 1
    lo, hi, rate = _limits(neutral)
    assert (y >= lo[:, None] - 1e-4).all() and (y <= hi[:, None] + 1e-4).all()  # 4
    assert (np.abs(np.diff(y, axis=1)) <= rate[:, None] * cycle / 100 + 1e-4).all()  # 5
    changed = np.count_nonzero(np.abs(y - traj) > 1e-3) / y.size
    assert changed <= CFG.max_clipped_fraction  # 6
    assert r.personalized == (personalized and conf >= CFG.confidence_threshold)  # 8
    assert r.status is (SafetyStatus.OK if r.personalized else SafetyStatus.DEGRADED)


@settings(max_examples=200, deadline=None)
@given(
    neutral=hnp.arrays(np.float64, 6, elements=st.floats(-60, 60)),
    amp=hnp.arrays(np.float64, 6, elements=st.floats(0.0, 1.0)),
    phase=hnp.arrays(np.float64, 6, elements=st.floats(0, 2 * math.pi)),
    cycle=st.floats(CFG.min_cycle_duration_s, CFG.max_cycle_duration_s),
)
def test_a_reference_inside_every_limit_is_published_unchanged(neutral, amp, phase, cycle):  # 7
    lo, hi, rate = _limits(neutral)
    # a smooth cycle inside the angle limits whose steps stay under the rate limit at this cycle duration
    t = np.linspace(0, 2 * np.pi, 101)
    half = np.minimum((hi - lo) / 2 * 0.99, rate * cycle / (2 * np.pi) * 0.9)[:, None] * amp[:, None]
    x = ((lo + hi) / 2)[:, None] + half * np.sin(t[None, :] + phase[:, None])
    x = x.astype(np.float32)
    r = SafetyEnvelope(CFG).apply(x, ANGLES, 5.0, 5.0, 0.0, False, cycle, neutral)
    assert r.status is SafetyStatus.DEGRADED and r.clamped_points == 0 and r.rate_limited_points == 0
    np.testing.assert_array_equal(r.trajectory, x)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.tuples(st.floats(0.001, 0.5), st.floats(0.0, 0.3)), min_size=1, max_size=60),
    staleness=st.floats(0.02, 0.3),
    max_gap=st.floats(0.02, 0.3),
)
def test_input_gate_uses_only_fresh_contiguous_samples(steps, staleness, max_gap):
    """Random sample spacing (dt) and worker lag (how late the worker takes each sample)."""
    gate = InputGate(staleness, max_gap)
    t, last_admitted = 0.0, None
    for dt, lag in steps:
        t += dt
        now = t + lag
        verdict = gate.admit(t, now)
        if now - t > staleness:
            assert verdict == STALE  # never used: a reference from it would describe the past
            continue
        assert verdict in (ADMIT, RESTART)
        assert (verdict == RESTART) == (last_admitted is not None and t - last_admitted > max_gap)
        if verdict == RESTART:
            assert gate.phase(now) == (0.0, 0.0)  # the phase is unknown until the next cycle
        last_admitted = t
        gate.on_cycle(t, 1.0)
        p, c = gate.phase(now + dt)
        assert 0.0 <= p < 1.0 and c == 1.0
