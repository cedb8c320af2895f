"""IMU-derived sagittal segment and joint-angle *estimates* (not ground truth; HuGaDB has no motion capture).

Segment pitch (rotation about the sensor y axis, the sagittal gyro axis) comes from a complementary
filter: the gyroscope's ``gyro_<s>_y`` integrated (``d pitch/dt = -gyro_y``: on sit-to-stand and
stand-to-sit transitions the accelerometer inclination changes by minus the gyro integral) and
pulled towards the accelerometer inclination ``atan2(acc_z, -acc_x)`` with time constant ``tau_s``
(the accelerometer term is wrong during fast accelerations; the gyro term drifts; the blend bounds both).
With this convention a thigh held horizontal while sitting reads about +90 deg, a vertical shank about 0.

Joint angles (degrees):
  * hip   = thigh pitch (there is no pelvis IMU, so this is thigh inclination to vertical, not the
            true hip angle; trunk lean is not removed);
  * knee  = thigh pitch - shank pitch (flexion positive);
  * ankle = shank pitch - foot pitch, minus its per-recording median (the foot sensor sits on the
            metatarsals at an unknown tilt, so the absolute ankle angle is not recoverable; its shape
            and range are).
Sensor mounting tilts add constant offsets to hip and knee too; ranges of motion are meaningful,
absolute values are approximate. An angle is computed only where every gyroscope it needs is valid;
otherwise it is NaN with ``valid`` False.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metagait_edge.data.gyro_validity import corrupted_gyros
from metagait_edge.data.hugadb import Recording
from metagait_edge.sensors import SENSORS

ANGLE_CHANNELS = ("hip_r", "knee_r", "ankle_r", "hip_l", "knee_l", "ankle_l")
# Sensors each angle needs (thigh, shank, foot per side).
ANGLE_SENSORS = {
    "hip_r": ("rt",), "knee_r": ("rt", "rs"), "ankle_r": ("rs", "rf"),
    "hip_l": ("lt",), "knee_l": ("lt", "ls"), "ankle_l": ("ls", "lf"),
}


@dataclass(frozen=True)
class JointAngleConfig:
    tau_s: float = 1.0
    gyro_sign: float = -1.0  # d pitch / dt = gyro_sign * gyro_y
    zero_ankle_median: bool = True

    def __post_init__(self) -> None:
        if self.tau_s <= 0:
            raise ValueError(f"tau_s must be > 0, got {self.tau_s}")


def accel_pitch_deg(acc_g: np.ndarray) -> np.ndarray:
    """Inclination from gravity in degrees, (-180, 180]: ``atan2(acc_z, -acc_x)`` per sample of [T, 3]."""
    acc_g = np.asarray(acc_g, dtype=np.float64)
    return np.degrees(np.arctan2(acc_g[:, 2], -acc_g[:, 0]))


def _wrap180(x: np.ndarray) -> np.ndarray:
    return (x + 180.0) % 360.0 - 180.0


def complementary_pitch(acc_g: np.ndarray, gyro_y_dps: np.ndarray, fs: float, tau_s: float = 1.0,
                        gyro_sign: float = -1.0) -> np.ndarray:
    """Causal complementary filter: theta[t] = a*(theta[t-1] + w[t]*dt) + (1-a)*theta_acc[t].

    The filter is linear, so it runs as an IIR pass. Impacts often swing the accelerometer angle
    across the +-180 deg cut for a sample or two (hundreds of times per walking file); a second pass
    takes each accelerometer angle on the branch nearest the first-pass estimate, so such samples are
    bounded outliers that the filter damps. (``np.unwrap`` would turn each into a permanent 360 step.)
    """
    from scipy import signal

    theta_acc = accel_pitch_deg(acc_g)
    w = gyro_sign * np.asarray(gyro_y_dps, dtype=np.float64)
    if len(theta_acc) == 0:
        return theta_acc
    dt = 1.0 / fs
    a = tau_s / (tau_s + dt)

    # Trapezoidal integration: the gyro samples rates at the sample instants.
    w_step = np.r_[w[:1], 0.5 * (w[1:] + w[:-1])] * dt

    def run(target: np.ndarray) -> np.ndarray:
        init = float(target[0] - w_step[0])  # so the output starts at the first accelerometer angle
        out, _ = signal.lfilter([1.0], [1.0, -a], a * w_step + (1.0 - a) * target, zi=[a * init])
        return out

    first = run(theta_acc)
    return run(first + _wrap180(theta_acc - first))


def segment_pitches(rec: Recording, config: JointAngleConfig = JointAngleConfig()) -> dict[str, np.ndarray]:
    """sensor -> pitch in degrees [T]; NaN for sensors whose gyroscope is corrupted."""
    bad = corrupted_gyros(rec.file_id)
    out = {}
    for s in SENSORS:
        if s in bad:
            out[s] = np.full(len(rec), np.nan)
        else:
            out[s] = complementary_pitch(rec.acc(s), rec.channel(f"gyro_{s}_y"), rec.sample_rate_hz, config.tau_s,
                                         config.gyro_sign)
    return out


def joint_angles(rec: Recording, config: JointAngleConfig = JointAngleConfig()) -> tuple[np.ndarray, np.ndarray]:
    """(angles float32 [T, 6] in ANGLE_CHANNELS order, valid bool [6]); invalid angles are NaN."""
    bad = corrupted_gyros(rec.file_id)
    p = segment_pitches(rec, config)
    cols = {
        "hip_r": p["rt"], "knee_r": p["rt"] - p["rs"], "ankle_r": p["rs"] - p["rf"],
        "hip_l": p["lt"], "knee_l": p["lt"] - p["ls"], "ankle_l": p["ls"] - p["lf"],
    }
    valid = np.array([not (set(ANGLE_SENSORS[c]) & bad) for c in ANGLE_CHANNELS], dtype=bool)
    out = np.full((len(rec), len(ANGLE_CHANNELS)), np.nan, dtype=np.float32)
    for i, c in enumerate(ANGLE_CHANNELS):
        if valid[i]:
            x = cols[c]
            if c.startswith("ankle") and config.zero_ankle_median and len(x):
                x = x - np.median(x)
            out[:, i] = x
    return out, valid
