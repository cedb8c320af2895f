from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from metagait_edge.synth import body as B
from metagait_edge.synth import identity as I
from metagait_edge.synth.dataset import render_walker
from metagait_edge.synth.render import Defects


def test_normative_curves_shape():
    ph = np.linspace(0, 1, 201)
    hip, knee, ankle = (B.gait_curve(n, ph) for n in ("hip", "knee", "ankle"))
    # Published normative ranges, to within a few degrees.
    assert 28 <= hip.max() <= 36 and -13 <= hip.min() <= -6
    assert 0.45 <= ph[np.argmin(hip)] <= 0.62 and 0.8 <= ph[np.argmax(hip)] <= 0.95
    assert 55 <= knee.max() <= 65 and 0.65 <= ph[np.argmax(knee)] <= 0.78
    assert 10 <= knee[(ph > 0.05) & (ph < 0.25)].max() <= 20  # loading-response flexion
    assert -20 <= ankle.min() <= -12 and 0.58 <= ph[np.argmin(ankle)] <= 0.7
    # Periodic and smooth: no jump across the cycle boundary.
    assert abs(B.gait_curve("hip", np.array([1.0]))[0] - hip[0]) < 1e-9
    assert np.abs(np.diff(hip)).max() < 2.0


def test_left_lags_right_by_half_a_cycle_and_arms_swing_opposite():
    ident = replace(I.sample_identity(0), step_timing_asym=0.0, hip_amp_asym=0.0, arm_swing_asym=0.0)
    ph = np.linspace(0, 2, 400, endpoint=False)
    a = B.joint_angles(ident, B.Walk(), ph)
    np.testing.assert_allclose(a["hip_l"][100:], a["hip_r"][:-100], atol=1e-9)  # 100 samples = 0.5 cycle
    # Arm swings against the leg of the same side (forward when that hip extends).
    assert np.corrcoef(a["shoulder_r"], a["hip_r"])[0, 1] < -0.7
    assert np.corrcoef(a["shoulder_r"], a["hip_l"])[0, 1] > 0.7


def test_bag_damps_arm_swing_on_its_side():
    ident = I.sample_identity(1)
    ph = np.linspace(0, 1, 100, endpoint=False)
    nm = B.joint_angles(ident, B.Walk(condition="nm"), ph)
    bg = B.joint_angles(ident, B.Walk(condition="bg", bag="hand", bag_side=1), ph)
    assert np.ptp(bg["shoulder_l"]) < 0.3 * np.ptp(nm["shoulder_l"])
    np.testing.assert_allclose(bg["shoulder_r"], nm["shoulder_r"])


def test_feet_touch_ground_and_body_has_the_identity_height():
    ident = I.sample_identity(2)
    prims = B.pose(ident, B.Walk(n_frames=40))
    feet = [prims.names.index("foot_r"), prims.names.index("foot_l")]
    low = np.minimum(prims.cap_a[:, feet, 2] - prims.cap_ra[feet], prims.cap_b[:, feet, 2] - prims.cap_rb[feet])
    np.testing.assert_allclose(low.min(axis=1), 0.0, atol=1e-9)
    head = prims.names.index("head") - len(prims.cap_ra)
    top = prims.ell_center[:, head, 2] + np.abs(prims.ell_axes[:, head, 2]).max(axis=-1)
    assert abs(np.median(top) - ident.height) < 0.06 * ident.height


def _bbox_height(masks):
    return np.median([np.ptp(np.flatnonzero(m.any(axis=1))) for m in masks])


def test_taller_person_has_taller_silhouette_before_normalization():
    ident = I.sample_identity(3)
    walk = B.Walk(n_frames=20)
    short = render_walker(replace(ident, height=1.55), 90, 20, walk=walk, defects=Defects.none())
    tall = render_walker(replace(ident, height=1.90), 90, 20, walk=walk, defects=Defects.none())
    ratio = _bbox_height(tall.masks) / _bbox_height(short.masks)
    assert 1.15 < ratio < 1.30  # 1.90 / 1.55 = 1.23
    # After pretreatment both are 64 px tall: height is normalized away, shape is what remains.
    assert short.silhouettes.shape[1:] == tall.silhouettes.shape[1:] == (64, 64)


def _step_frequency(masks):
    width = np.array([np.ptp(np.flatnonzero(m.any(axis=0))) for m in masks], dtype=np.float64)
    width = (width - width.mean()) * np.hanning(len(width))
    spec = np.abs(np.fft.rfft(width, 4096))
    f = np.fft.rfftfreq(4096)
    band = (f > 1 / 30) & (f < 1 / 7)
    return f[band][np.argmax(spec[band])]


@pytest.mark.parametrize("cadence", [92.0, 124.0])
def test_cadence_sets_the_period_of_the_width_signal(cadence):
    ident = replace(I.sample_identity(4), cadence_spm=cadence)
    r = render_walker(ident, 90, 64, walk=B.Walk(n_frames=64), defects=Defects.none())
    steps_per_min = _step_frequency(r.masks) * 25 * 60
    assert abs(steps_per_min - cadence) < 0.04 * cadence


def test_identity_from_subject():
    a = I.identity_from_subject(177, 75, "M", 108, seed=1)
    assert a.height == pytest.approx(1.77) and a.mass == 75 and a.sex == "M" and a.cadence_spm == 108
    assert I.identity_from_subject(177, 75, "M", 108, seed=1) == a
    heavy = I.identity_from_subject(177, 118, "M", 108, seed=1)
    assert heavy.torso_girth > a.torso_girth * 1.15
    with pytest.raises(ValueError, match="sex"):
        I.identity_from_subject(177, 75, "X", 108)
    with pytest.raises(ValueError, match="height_cm"):
        I.identity_from_subject(1.77, 75, "M", 108)


def test_walk_validation():
    with pytest.raises(ValueError, match="condition"):
        B.Walk(condition="xx")
    with pytest.raises(ValueError, match="bag"):
        B.Walk(bag="trolley")
