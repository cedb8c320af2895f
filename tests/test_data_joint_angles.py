from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from metagait_edge.data.hugadb import Recording
from metagait_edge.sensors import IMU_CHANNELS
from metagait_edge.data.joint_angles import (
    ANGLE_CHANNELS, JointAngleConfig, accel_pitch_deg, complementary_pitch, joint_angles,
)

FS = 58.8


def acc_for_pitch(theta_deg):
    th = np.radians(theta_deg)
    return np.stack([-np.cos(th), np.zeros_like(th), np.sin(th)], axis=1)


def test_accelerometer_inclination_convention():
    np.testing.assert_allclose(accel_pitch_deg(acc_for_pitch(np.array([0.0, 30.0, 90.0, -45.0]))), [0, 30, 90, -45], atol=1e-9)


def test_complementary_filter_tracks_known_pitch_and_rejects_gyro_bias():
    t = np.arange(int(30 * FS)) / FS
    theta = 40 * np.sin(2 * np.pi * 0.9 * t) + 10
    gyro = -np.gradient(theta, 1 / FS)  # HuGaDB: d pitch/dt = -gyro_y
    est = complementary_pitch(acc_for_pitch(theta), gyro, FS)
    assert np.abs(est - theta).max() < 1.5
    assert abs(est[0] - theta[0]) < 3
    # A 5 deg/s gyro bias would drift 150 deg in 30 s when integrated; the accelerometer bounds it.
    biased = complementary_pitch(acc_for_pitch(theta), gyro + 5.0, FS)
    assert np.abs(biased[-int(5 * FS):] - theta[-int(5 * FS):]).max() < 6.0
    # Linear acceleration bursts fool the accelerometer; the gyro term damps them.
    noisy = acc_for_pitch(theta) + np.random.default_rng(0).normal(0, 0.3, (len(t), 3))
    settled = slice(int(3 * FS), None)
    assert np.abs(complementary_pitch(noisy, gyro, FS) - theta)[settled].mean() < 2.0
    assert np.abs(accel_pitch_deg(noisy) - theta).mean() > 5.0


def test_impact_samples_across_the_branch_cut_leave_no_offset():
    t = np.arange(int(20 * FS)) / FS
    theta = 20 * np.sin(2 * np.pi * t)
    acc = acc_for_pitch(theta)
    hit = np.random.default_rng(1).random(len(t)) < 0.05
    acc[hit] = [1.5, 0.0, -0.1]  # impact: the accelerometer angle reads about -176 deg
    assert np.abs(np.diff(accel_pitch_deg(acc))).max() > 180
    est = complementary_pitch(acc, -np.gradient(theta, 1 / FS), FS)
    assert np.abs(est - theta).max() < 25
    assert np.abs(est - theta)[-int(5 * FS):].mean() < 10
    # np.unwrap instead would leave permanent multiples of 360 deg behind.
    assert np.abs(np.unwrap(np.radians(accel_pitch_deg(acc)))[-1]) > np.pi


def _recording(file_id, pitches):
    n = len(next(iter(pitches.values())))
    raw = np.zeros((n, 36))
    for s, th in pitches.items():
        a = acc_for_pitch(th) * 16384
        g = -np.gradient(th, 1 / FS) * 16.4
        for k, ax in enumerate("xyz"):
            raw[:, IMU_CHANNELS.index(f"acc_{s}_{ax}")] = a[:, k]
        raw[:, IMU_CHANNELS.index(f"gyro_{s}_y")] = g
    raw = np.clip(np.round(raw), -32768, 32767).astype(np.int16)
    return Recording(file_id, Path(file_id + ".txt"), 1, "walking", 0, raw, np.zeros((n, 2), np.uint8),
                     np.ones(n, np.uint8), np.arange(n, dtype=np.int32))


def test_joint_angles_from_known_segment_pitches():
    t = np.arange(int(20 * FS)) / FS
    thigh = 20 * np.sin(2 * np.pi * t)
    shank = thigh - 30 * (1 - np.cos(2 * np.pi * t))  # knee flexion 0..60
    foot = shank - 10 * np.sin(2 * np.pi * t) - 60
    pitches = {"rt": thigh, "rs": shank, "rf": foot, "lt": thigh, "ls": shank, "lf": foot}
    ang, valid = joint_angles(_recording("HuGaDB_v1_walking_01_00", pitches))  # all gyros valid
    assert valid.all() and ang.shape == (len(t), 6)
    late = slice(int(5 * FS), None)
    knee = 30 * (1 - np.cos(2 * np.pi * t))
    np.testing.assert_allclose(ang[late, ANGLE_CHANNELS.index("knee_r")], knee[late], atol=1.5)
    np.testing.assert_allclose(ang[late, ANGLE_CHANNELS.index("hip_l")], thigh[late], atol=1.5)
    ankle = 10 * np.sin(2 * np.pi * t) + 60
    got = ang[late, ANGLE_CHANNELS.index("ankle_r")]
    np.testing.assert_allclose(got - got.mean(), ankle[late] - ankle[late].mean(), atol=1.5)


def test_corrupted_gyro_gives_nan_and_false_mask():
    t = np.arange(500) / FS
    z = np.zeros_like(t)
    rec = _recording("HuGaDB_v1_walking_06_03", {s: z for s in ("rt", "rs", "rf", "lt", "ls", "lf")})  # rt corrupted
    ang, valid = joint_angles(rec)
    assert dict(zip(ANGLE_CHANNELS, valid.tolist())) == {
        "hip_r": False, "knee_r": False, "ankle_r": True, "hip_l": True, "knee_l": True, "ankle_l": True}
    assert np.isnan(ang[:, 0]).all() and np.isnan(ang[:, 1]).all() and np.isfinite(ang[:, 2:]).all()


def test_config_validation():
    with pytest.raises(ValueError, match="tau_s"):
        JointAngleConfig(tau_s=0)


def test_real_walking_ranges_of_motion():
    root = os.environ.get("METAGAIT_DATA")
    if not root or not os.path.isfile(os.path.join(root, "hugadb", "HuGaDB_v1.tar.xz")):
        pytest.skip("real HuGaDB archive not found under $METAGAIT_DATA/hugadb")
    from metagait_edge.data.cycles import cycles_from_recording
    from metagait_edge.data.hugadb import HuGaDB

    cs = cycles_from_recording(HuGaDB.open().load("HuGaDB_v1_walking_01_00"))
    mean = {c: cs.cycles[:, cs.channel_index(c)].mean(axis=0) for c in ANGLE_CHANNELS}
    for side in ("r", "l"):
        # Cycles start at the right leg's IC; the left leg runs half a cycle later.
        shift = 0 if side == "r" else 50
        knee, hip = np.roll(mean[f"knee_{side}"], shift), np.roll(mean[f"hip_{side}"], shift)
        assert 40 <= np.ptp(knee) <= 80
        assert 30 <= np.ptp(hip) <= 60
        assert 10 <= np.ptp(mean[f"ankle_{side}"]) <= 40
        # Knee flexion peaks in swing (55-85 % of a cycle that starts at initial contact);
        # the thigh is most extended near toe-off (40-65 %) and most flexed around initial contact.
        assert 55 <= int(np.argmax(knee)) <= 85
        assert 40 <= int(np.argmin(hip)) <= 65
        assert int(np.argmax(hip)) <= 10 or int(np.argmax(hip)) >= 85
