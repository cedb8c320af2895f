"""Gait events from the shank gyroscope's sagittal axis, offline and causally (sample by sample).

Signal: ``gyro_rs_y`` (right shank, file column 10) or ``gyro_ls_y`` (left shank, column 28). On the
HuGaDB mounting, swing is a large *negative* angular velocity (``swing_sign = -1``); after sign
normalization the classic shank pattern appears: a mid-swing peak (MS), then a fall through zero into
the initial-contact trough, a small stance plateau, the push-off trough and the next swing.

Event used as the cycle boundary: **IC**, the first sample at or below zero after a mid-swing peak (the
end of terminal swing). It precedes the initial-contact trough by a few samples (see docs/data.md) and,
unlike peaks and troughs, is unchanged by the HuGaDB gyroscope corruption (x10 gain with clipping keeps
the sign), which matters because 53 of the 87 walking files have both shank gyroscopes corrupted.

Rules shared by both detectors (``GaitEventConfig``):
  * low-pass Butterworth (``lowpass_hz``, ``filter_order``); offline zero-phase (``sosfiltfilt``),
    causal one-pass (``sosfilt`` with state) with its low-frequency group delay subtracted from event
    indices;
  * adaptive threshold: an MS peak must exceed ``max(swing_floor_dps, swing_rel_threshold * ref)``
    where ``ref`` is the median height of neighbouring peaks (offline: centered, causal: the last
    ``reference_peaks`` accepted);
  * at most one MS per ``min_stride_s``; IC must follow MS within ``max_swing_to_ic_s``;
  * strides (IC to next IC of the same leg) must last ``min_stride_s..max_stride_s`` and
    ``stride_rel_range`` times the local median stride;
  * left/right consistency: a right stride needs exactly one left IC, at ``contralateral_phase``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Optional

import numpy as np

SHANK_CHANNEL = {"right": "gyro_rs_y", "left": "gyro_ls_y"}
SHANK_SENSOR = {"right": "rs", "left": "ls"}


@dataclass(frozen=True)
class GaitEventConfig:
    lowpass_hz: float = 6.0
    filter_order: int = 2
    swing_sign: float = -1.0
    swing_floor_dps: float = 60.0
    swing_rel_threshold: float = 0.4
    reference_peaks: int = 5
    min_stride_s: float = 0.45
    max_stride_s: float = 2.0
    max_swing_to_ic_s: float = 0.5
    stride_rel_range: tuple[float, float] = (0.6, 1.6)
    contralateral_phase: tuple[float, float] = (0.3, 0.7)
    # Corrupted HuGaDB gyroscopes read ~10x too high (then clip); divide so thresholds stay in deg/s.
    corrupted_gain: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.min_stride_s < self.max_stride_s:
            raise ValueError(f"need 0 < min_stride_s < max_stride_s, got {self.min_stride_s}, {self.max_stride_s}")
        if self.swing_sign not in (-1.0, 1.0):
            raise ValueError(f"swing_sign must be -1 or 1, got {self.swing_sign}")


def _sos(config: GaitEventConfig, fs: float) -> np.ndarray:
    from scipy import signal

    if not 0 < config.lowpass_hz < fs / 2:
        raise ValueError(f"lowpass_hz {config.lowpass_hz} must be inside (0, {fs / 2}) for {fs} Hz")
    return signal.butter(config.filter_order, config.lowpass_hz, fs=fs, output="sos")


def causal_delay_samples(config: GaitEventConfig, fs: float, at_hz: float = 1.0) -> int:
    """Group delay (samples, rounded) of the causal low-pass at the stride frequency."""
    from scipy import signal

    b, a = signal.sos2tf(_sos(config, fs))
    _, gd = signal.group_delay((b, a), w=[at_hz], fs=fs)
    return int(round(float(gd[0])))


def _normalize(gyro_dps: np.ndarray, config: GaitEventConfig, corrupted: bool) -> np.ndarray:
    s = np.asarray(gyro_dps, dtype=np.float64) * config.swing_sign
    return s / config.corrupted_gain if corrupted else s


@dataclass(frozen=True)
class LegEvents:
    ms: np.ndarray  # int [K] mid-swing peak samples
    ic: np.ndarray  # int [K] IC samples (the boundary event)
    ms_height: np.ndarray  # float [K] filtered MS peak heights (deg/s)


def _rolling_median(x: np.ndarray, window: int) -> np.ndarray:
    half = window // 2
    return np.array([np.median(x[max(0, i - half): i + half + 1]) for i in range(len(x))]) if len(x) else x


def detect_leg_events(gyro_dps: np.ndarray, fs: float, config: GaitEventConfig = GaitEventConfig(),
                      corrupted: bool = False) -> LegEvents:
    """Offline MS and IC events of one shank gyroscope (sagittal axis, deg/s)."""
    from scipy import signal

    empty = LegEvents(np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    s = _normalize(gyro_dps, config, corrupted)
    sos = _sos(config, fs)
    if len(s) <= 3 * (2 * len(sos) + 1):
        return empty
    y = signal.sosfiltfilt(sos, s)
    min_stride = max(1, int(round(config.min_stride_s * fs)))
    cand, props = signal.find_peaks(y, height=config.swing_floor_dps, distance=min_stride)
    if len(cand) == 0:
        return empty
    heights = props["peak_heights"]
    ref = _rolling_median(heights, config.reference_peaks)
    keep = heights >= config.swing_rel_threshold * ref
    cand, heights = cand[keep], heights[keep]
    crossings = np.flatnonzero((y[:-1] > 0) & (y[1:] <= 0)) + 1
    pos = np.searchsorted(crossings, cand, side="right")
    max_gap = config.max_swing_to_ic_s * fs
    ms, ic, hh = [], [], []
    for m, p, h in zip(cand, pos, heights):
        if p >= len(crossings) or crossings[p] - m > max_gap:
            continue
        if ic and crossings[p] == ic[-1]:  # two peaks before one crossing: keep the higher
            if h > hh[-1]:
                ms[-1], hh[-1] = int(m), float(h)
            continue
        ms.append(int(m))
        ic.append(int(crossings[p]))
        hh.append(float(h))
    return LegEvents(np.asarray(ms, int), np.asarray(ic, int), np.asarray(hh))


def plausible_strides(ic: np.ndarray, fs: float, config: GaitEventConfig = GaitEventConfig()) -> np.ndarray:
    """bool [K-1]: whether stride ic[k]..ic[k+1] passes the duration limits."""
    d = np.diff(np.asarray(ic, dtype=np.int64))
    if len(d) == 0:
        return np.zeros(0, dtype=bool)
    ok = (d >= config.min_stride_s * fs) & (d <= config.max_stride_s * fs)
    med = _rolling_median(d[ok].astype(float), 7) if ok.any() else np.zeros(0)
    local = np.full(len(d), np.nan)
    local[ok] = med
    # Strides rejected by the absolute limits take the nearest accepted stride's median.
    if ok.any():
        idx = np.flatnonzero(ok)
        nearest = idx[np.clip(np.searchsorted(idx, np.arange(len(d))), 0, len(idx) - 1)]
        local = np.where(np.isnan(local), local[nearest], local)
        lo, hi = config.stride_rel_range
        ok &= (d >= lo * local) & (d <= hi * local)
    return ok


def contralateral_consistent(ic_ref: np.ndarray, ic_other: np.ndarray,
                             config: GaitEventConfig = GaitEventConfig()) -> np.ndarray:
    """bool [K-1]: exactly one IC of the other leg inside each stride, at ``contralateral_phase``."""
    ic_ref = np.asarray(ic_ref)
    ic_other = np.asarray(ic_other)
    out = np.zeros(max(len(ic_ref) - 1, 0), dtype=bool)
    lo, hi = config.contralateral_phase
    for k in range(len(out)):
        a, b = ic_ref[k], ic_ref[k + 1]
        inside = ic_other[(ic_other > a) & (ic_other < b)]
        if len(inside) == 1:
            phase = (inside[0] - a) / (b - a)
            out[k] = lo <= phase <= hi
    return out


@dataclass(frozen=True)
class GaitEvent:
    index: int  # estimated sample of the IC event (delay-compensated)
    detected_at: int  # sample at which push() reported it
    ms_index: int  # mid-swing peak sample (delay-compensated)
    stride_samples: Optional[int]  # samples since the previous IC, None for the first


class CausalGaitDetector:
    """The offline IC detector run causally: ``push(sample)`` per gyro sample, events as they happen.

    ``sample`` is the shank's sagittal gyro in deg/s. ``phase`` estimates the gait phase (0-100 %) as the
    time since the last IC over the median of the last three strides (NaN before the first stride).
    """

    def __init__(self, sample_rate_hz: float, config: GaitEventConfig = GaitEventConfig(), corrupted: bool = False):
        from scipy import signal

        self.fs = float(sample_rate_hz)
        self.config = config
        self.corrupted = corrupted
        self._sos = _sos(config, self.fs)
        self._zi_unit = signal.sosfilt_zi(self._sos)
        # Per-sample filtering in plain Python (direct form II transposed, as sosfilt): scipy's call overhead
        # per one-sample array was ~80 us, this is ~2 us.
        self._sections = [tuple(float(v) for v in row) for row in self._sos]
        self.delay = causal_delay_samples(config, self.fs)
        self._min_stride = max(1, int(round(config.min_stride_s * self.fs)))
        self._max_gap = config.max_swing_to_ic_s * self.fs
        self.reset()

    def reset(self) -> None:
        self._zi: list[list[float]] | None = None
        self._period = math.nan
        self.t = -1
        self._y1 = self._y2 = math.nan
        self._in_swing = False
        self._ms = -1
        self._ms_h = 0.0
        self._last_ms: int | None = None
        self._last_ic: int | None = None
        self._heights: deque[float] = deque(maxlen=self.config.reference_peaks)
        self._strides: deque[int] = deque(maxlen=3)

    def threshold(self) -> float:
        ref = float(np.median(self._heights)) if self._heights else 0.0
        return max(self.config.swing_floor_dps, self.config.swing_rel_threshold * ref)

    @property
    def phase(self) -> float:
        """Gait phase in percent since the last IC (0-100, clipped below 100); NaN before one stride."""
        if self._last_ic is None or not self._strides:
            return math.nan
        return float(min(99.9, max(0.0, 100.0 * (self.t - self.delay - self._last_ic) / self._period)))

    def push(self, sample: float) -> GaitEvent | None:
        self.t += 1
        s = float(sample) * self.config.swing_sign
        if self.corrupted:
            s /= self.config.corrupted_gain
        if self._zi is None:
            # start at steady state on the first sample: no start-up transient
            self._zi = [[float(v) * s for v in row] for row in self._zi_unit]
        y = s
        for (b0, b1, b2, _, a1, a2), z in zip(self._sections, self._zi):
            x = y
            y = b0 * x + z[0]
            z[0] = b1 * x - a1 * y + z[1]
            z[1] = b2 * x - a2 * y
        y1, y2 = self._y1, self._y2
        self._y2, self._y1 = y1, y
        event = None
        t1 = self.t - 1
        if not math.isnan(y2) and y1 > y2 and y1 >= y and y1 >= self.threshold():
            if not self._in_swing:
                if self._last_ms is None or t1 - self._last_ms >= self._min_stride:
                    self._in_swing, self._ms, self._ms_h = True, t1, y1
            elif y1 > self._ms_h:
                self._ms, self._ms_h = t1, y1
        if self._in_swing and not math.isnan(y1) and y1 > 0 >= y:
            self._in_swing = False
            self._last_ms = self._ms
            if self.t - self._ms <= self._max_gap:
                ic = self.t - self.delay
                stride = None if self._last_ic is None else ic - self._last_ic
                if stride is not None and self._min_stride <= stride <= self.config.max_stride_s * self.fs:
                    self._strides.append(stride)
                    self._period = float(np.median(self._strides))
                self._last_ic = ic
                self._heights.append(self._ms_h)
                event = GaitEvent(ic, self.t, self._ms - self.delay, stride)
        return event

    def run(self, samples: np.ndarray) -> list[GaitEvent]:
        """Push every sample of ``samples``; return the events in order."""
        return [e for e in (self.push(x) for x in np.asarray(samples, dtype=np.float64)) if e is not None]


def match_events(reference: np.ndarray, candidate: np.ndarray, tolerance: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching within ``tolerance`` samples; returns (matched ref mask, offsets)."""
    reference = np.asarray(reference)
    candidate = np.sort(np.asarray(candidate))
    used = np.zeros(len(candidate), dtype=bool)
    matched = np.zeros(len(reference), dtype=bool)
    offsets = []
    for i, r in enumerate(reference):
        j = np.searchsorted(candidate, r)
        best = None
        for k in (j - 1, j, j + 1):
            if 0 <= k < len(candidate) and not used[k] and abs(candidate[k] - r) <= tolerance:
                if best is None or abs(candidate[k] - r) < abs(candidate[best] - r):
                    best = k
        if best is not None:
            used[best] = True
            matched[i] = True
            offsets.append(int(candidate[best] - r))
    return matched, np.asarray(offsets, dtype=int)
