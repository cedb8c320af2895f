"""A synthetic IMU recording: raw int16 counts of a plausible walking pattern, for when there is no data."""

from __future__ import annotations

import numpy as np

from metagait_edge.imu.protocol import ACC_LSB_PER_G, GYRO_LSB_PER_DPS, HUGADB_RATE_HZ


def synthetic_imu(n: int, rate_hz: float = HUGADB_RATE_HZ, seed: int = 0, cadence_hz: float = 0.9) -> np.ndarray:
    """int16 [n, 36] counts of a plausible walking pattern: gravity on acc, a gait-periodic swing on all.

    Legs are half a cycle apart; foot, shin and thigh have growing phase lags and shrinking amplitudes.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate_hz
    out = np.empty((n, 36), dtype=np.float64)
    for k in range(6):
        leg_phase = 0.0 if k < 3 else np.pi
        seg = k % 3  # foot, shin, thigh
        ph = 2 * np.pi * cadence_hz * t + leg_phase - 0.6 * seg
        amp_acc = (0.6, 0.4, 0.25)[seg]
        amp_gyro = (250.0, 180.0, 120.0)[seg]
        out[:, 6 * k + 0] = amp_acc * np.sin(ph)
        out[:, 6 * k + 1] = 0.1 * amp_acc * np.sin(2 * ph)
        out[:, 6 * k + 2] = 1.0 + amp_acc * 0.5 * np.cos(ph)
        out[:, 6 * k + 3] = 0.1 * amp_gyro * np.sin(ph + 0.3)
        out[:, 6 * k + 4] = 0.05 * amp_gyro * np.cos(2 * ph)
        out[:, 6 * k + 5] = amp_gyro * np.cos(ph)
    out[:, [i for i in range(36) if i % 6 < 3]] *= ACC_LSB_PER_G
    out[:, [i for i in range(36) if i % 6 >= 3]] *= GYRO_LSB_PER_DPS
    out += rng.normal(0.0, 30.0, size=out.shape)
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)
