"""Streaming features of the gait worker: the 42 cycle channels, one sample at a time, causally."""

from __future__ import annotations

import numpy as np

from metagait_edge.sensors import SENSORS


class OnlineFeatures:
    """Per-sample 42 cycle channels: 36 IMU values + hip/knee/ankle estimates (``data.joint_angles``, causal).

    Segment pitch: complementary filter of the sagittal gyro and the accelerometer inclination, the
    accelerometer angle taken on the branch nearest the estimate; the ankle angle's per-recording median
    (offline) becomes a slowly tracked running median here.
    """

    def __init__(self, rate_hz: float, tau_s: float = 1.0, gyro_sign: float = -1.0) -> None:
        self.dt = 1.0 / rate_hz
        self.a = tau_s / (tau_s + self.dt)
        self.gyro_sign = gyro_sign
        self.pitch = np.full(6, np.nan)
        self.prev_w = np.zeros(6)
        self.ankle_med = np.zeros(2)
        self._acc = np.array([[6 * k, 6 * k + 1, 6 * k + 2] for k in range(6)])
        self._gy = np.array([6 * k + 4 for k in range(6)])
        self.out = np.zeros(42, np.float32)

    def reset(self) -> None:
        self.pitch[:] = np.nan

    def push(self, x: np.ndarray) -> np.ndarray:
        acc = x[self._acc]
        theta_acc = np.degrees(np.arctan2(acc[:, 2], -acc[:, 0]))
        w = self.gyro_sign * x[self._gy].astype(np.float64)
        first = np.isnan(self.pitch).any()
        if first:
            self.pitch = theta_acc.astype(np.float64)
            self.prev_w = w
        step = 0.5 * (w + self.prev_w) * self.dt
        self.prev_w = w
        pred = self.pitch + step
        target = pred + ((theta_acc - pred + 180.0) % 360.0 - 180.0)
        self.pitch = self.a * pred + (1.0 - self.a) * target
        p = dict(zip(SENSORS, self.pitch))
        ankle = np.array([p["rs"] - p["rf"], p["ls"] - p["lf"]])
        if first:
            self.ankle_med = ankle.copy()  # start the running median at the first value, not at 0
        self.ankle_med += 0.02 * np.sign(ankle - self.ankle_med)  # running median, 0.02 deg per sample
        self.out[:36] = x
        self.out[36:] = (p["rt"], p["rt"] - p["rs"], ankle[0] - self.ankle_med[0],
                         p["lt"], p["lt"] - p["ls"], ankle[1] - self.ankle_med[1])
        return self.out
