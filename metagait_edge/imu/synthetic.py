"""A synthetic IMU recording: raw int16 counts of a plausible walking pattern, for when there is no data.

The pattern is HuGaDB's mean walking cycle (``resources/synthetic_imu_cycle.json``, fitted by
``training/fit_synthetic_imu.py``): the same sensor mounting as the real recordings (gravity along each
segment's x axis, the sagittal swing on gyro y, negative in swing), so the runtime's gait detector
(``data.gait_events``, right shank ``gyro_rs_y``) and joint-angle filter see what they see on a HuGaDB
replay. Each stride varies a little in duration and amplitude; sensor noise is added on top.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

import numpy as np

from metagait_edge.sensors import ACC_LSB_PER_G, GYRO_LSB_PER_DPS, HUGADB_RATE_HZ

TEMPLATE_RESOURCE = "synthetic_imu_cycle.json"


def fourier_eval(coef: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """[C, 2H+1] coefficients (a0, a1..aH, b1..bH) at ``phase`` (cycles, any shape [T]) -> [C, T]."""
    coef = np.asarray(coef, dtype=np.float64)
    h = (coef.shape[1] - 1) // 2
    ang = 2 * np.pi * np.arange(1, h + 1)[:, None] * np.asarray(phase, dtype=np.float64)[None, :]  # [H, T]
    return coef[:, :1] + coef[:, 1:h + 1] @ np.cos(ang) + coef[:, h + 1:] @ np.sin(ang)


@functools.lru_cache(maxsize=1)
def cycle_template() -> np.ndarray:
    """[36, 2H+1] Fourier coefficients of the mean HuGaDB walking cycle (g, deg/s)."""
    text = resources.files("metagait_edge.resources").joinpath(TEMPLATE_RESOURCE).read_text()
    coef = np.asarray(json.loads(text)["coef"], dtype=np.float64)
    if coef.ndim != 2 or coef.shape[0] != 36 or coef.shape[1] % 2 != 1:
        raise ValueError(f"{TEMPLATE_RESOURCE}: coef must be [36, 2H+1], got {coef.shape}")
    return coef


def synthetic_imu(n: int, rate_hz: float = HUGADB_RATE_HZ, seed: int = 0, cadence_hz: float = 0.9,
                  stride_jitter: float = 0.03, amplitude_jitter: float = 0.05) -> np.ndarray:
    """int16 [n, 36] counts of walking at ``cadence_hz`` strides per second (HuGaDB's mean cycle).

    Stride k lasts ``1 / cadence_hz`` times a factor drawn from N(1, stride_jitter); its deviation from the
    mean cycle is scaled by N(1, amplitude_jitter); white noise of 30 counts is added to every channel.
    """
    if n < 0:
        raise ValueError(f"number of samples must be >= 0, got {n}")
    if not rate_hz > 0 or not cadence_hz > 0:
        raise ValueError(f"rate_hz and cadence_hz must be > 0, got {rate_hz} and {cadence_hz}")
    if not 0 <= stride_jitter < 0.3 or not 0 <= amplitude_jitter < 0.5:
        raise ValueError(f"stride_jitter must be in [0, 0.3) and amplitude_jitter in [0, 0.5), "
                         f"got {stride_jitter} and {amplitude_jitter}")
    rng = np.random.default_rng(seed)
    coef = cycle_template()
    n_strides = int(np.ceil(n / rate_hz * cadence_hz * 1.5)) + 2
    durations = np.clip(rng.normal(1.0, stride_jitter, n_strides), 0.8, 1.2) / cadence_hz
    amplitude = np.clip(rng.normal(1.0, amplitude_jitter, n_strides), 0.7, 1.3)
    edges = np.concatenate([[0.0], np.cumsum(durations)])
    t = np.arange(n) / rate_hz
    k = np.minimum(np.searchsorted(edges, t, side="right") - 1, n_strides - 1)
    phase = (t - edges[k]) / durations[k]  # in [0, 1) within stride k
    wave = fourier_eval(coef, phase)  # [36, n]
    mean = coef[:, :1]
    out = (mean + (wave - mean) * amplitude[k][None, :]).T
    scale = np.where(np.arange(36) % 6 < 3, ACC_LSB_PER_G, GYRO_LSB_PER_DPS)
    out = out * scale + rng.normal(0.0, 30.0, size=out.shape)
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)
