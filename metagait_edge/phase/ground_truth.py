"""Offline gait-phase ground truth for every HuGaDB gait bout, per leg, with sub-sample heel strikes.

Choice (issue 17, item 1):

* **Events.** The data layer's offline detector (``data.gait_events.detect_leg_events``: zero-phase
  ``sosfiltfilt`` low-pass of the shank's sagittal gyroscope, mid-swing peak, then the first fall through
  zero = the end of terminal swing, "IC"), run on each leg over each contiguous stretch of a recording
  (split at dropped glitch rows). A corrupted shank gyroscope is divided by its x10 gain, as the cycle
  sets do: zero crossings survive the corruption.
* **Sub-sample timing.** IC is the zero crossing of the filtered signal, interpolated linearly between
  the last sample above zero and the first at or below it: ``t = k - 1 + y[k-1] / (y[k-1] - y[k])``.
  One sample is 17 ms, 1.8 % of a 0.9 s walking stride; the interpolation removes that quantization.
* **Strides.** Consecutive ICs of one leg that lie inside one *gait bout* (a maximal run of rows labelled
  walking, running, stairs up or stairs down, modes may change inside it), pass the duration limits
  (``plausible_strides``) and hold exactly one IC of the other leg, at 30-70 % of the stride
  (``contralateral_consistent``, the rule the cycle sets already use): the legs alternate in walking,
  running and on stairs, so a stride without that is the detector's error (an extra IC inside a stride, a
  missed one, or one leg's IC at another event), not the walker's. Phase is linear in time between the
  two ICs: 0 % at one, 100 % at the next. Samples outside such strides (standing, sitting, the first/last
  partial strides, rejected strides) have no ground truth (NaN) and are not scored; the strides that pass
  everything but the alternation check are kept apart (``PhaseTruth.rejected``) so that reports can show
  what the check removed.

Known error (measured by ``subsample_error``, numbers in docs/results/phase.md): the IC is the end of
terminal swing, a few samples before the shank's initial-contact trough (docs/data.md), so 0 % is that
event, not a force-plate heel strike; linear phase assumes constant speed within a stride; and the
sub-sample timing error is measured against the same detector run on the signal upsampled x8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metagait_edge.data.gait_events import (
    SHANK_CHANNEL, SHANK_SENSOR, GaitEventConfig, _normalize, _sos, contralateral_consistent, detect_leg_events,
    plausible_strides,
)
from metagait_edge.data.gyro_validity import gyro_valid
from metagait_edge.data.hugadb import Recording

LEGS = ("right", "left")
GAIT_ACTS = (1, 2, 3, 4)  # walking, running, going_up, going_down


def subsample_crossings(y: np.ndarray, ic: np.ndarray) -> np.ndarray:
    """Fractional sample times of the falling zero crossings ``y[ic-1] > 0 >= y[ic]``."""
    ic = np.asarray(ic, dtype=np.int64)
    if len(ic) == 0:
        return np.zeros(0)
    a, b = y[ic - 1], y[ic]
    frac = np.where(a - b > 0, a / np.maximum(a - b, 1e-12), 1.0)
    return ic - 1 + np.clip(frac, 0.0, 1.0)


def leg_ic_times(gyro_dps: np.ndarray, fs: float, config: GaitEventConfig = GaitEventConfig(),
                 corrupted: bool = False) -> np.ndarray:
    """Offline IC times (fractional samples) of one shank gyroscope."""
    from scipy import signal

    ev = detect_leg_events(gyro_dps, fs, config, corrupted)
    if len(ev.ic) == 0:
        return np.zeros(0)
    y = signal.sosfiltfilt(_sos(config, fs), _normalize(gyro_dps, config, corrupted))
    return subsample_crossings(y, ev.ic)


def contiguous_pieces(rec: Recording) -> list[tuple[int, int]]:
    """(start, end) of each stretch of kept rows without a dropped glitch row inside."""
    n = len(rec)
    if n == 0:
        return []
    cut = np.flatnonzero(np.diff(rec.source_rows) != 1) + 1
    edges = np.r_[0, cut, n]
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def gait_bouts(act: np.ndarray, breaks: np.ndarray | None = None) -> np.ndarray:
    """int [T]: bout id (>= 0) of each row inside a run of gait labels (modes may change), -1 elsewhere."""
    act = np.asarray(act)
    gait = np.isin(act, GAIT_ACTS)
    start = gait.copy()
    start[1:] &= ~gait[:-1]
    if breaks is not None:
        start |= gait & np.asarray(breaks, dtype=bool)
    ids = np.cumsum(start) - 1
    return np.where(gait, ids, -1)


@dataclass
class PhaseTruth:
    """Ground truth of one recording; arrays indexed by kept row."""

    file_id: str
    phase: np.ndarray  # float [2, T] percent 0..100 per leg (right, left); NaN where not defined
    ic: list  # per leg: float [K] fractional IC times of accepted strides' boundaries
    strides: list  # per leg: float [S, 2] (start, end) fractional times of accepted strides
    # float [2, T]: the phase the strides rejected only by the alternation check would give (NaN elsewhere)
    rejected: np.ndarray | None = None

    def defined(self) -> np.ndarray:
        return np.isfinite(self.phase)


def phase_truth(rec: Recording, config: GaitEventConfig = GaitEventConfig()) -> PhaseTruth:
    """Ground-truth phase per leg over every gait bout of ``rec``."""
    fs = rec.sample_rate_hz
    n = len(rec)
    valid = gyro_valid(rec.file_id)
    breaks = np.zeros(n, dtype=bool)
    if n > 1:
        breaks[1:] = np.diff(rec.source_rows) != 1
    bout = gait_bouts(rec.act, breaks)
    phase = np.full((2, n), np.nan)
    rejected = np.full((2, n), np.nan)
    t = np.arange(n, dtype=np.float64)
    pieces = contiguous_pieces(rec)
    # IC times per leg and piece first: each leg's strides are checked against the other leg's ICs.
    times = [[leg_ic_times(rec.channel(SHANK_CHANNEL[leg])[a:b], fs, config, not valid[SHANK_SENSOR[leg]]) + a
              for a, b in pieces] for leg in LEGS]
    all_strides: list = [[], []]
    for li in range(len(LEGS)):
        for pi in range(len(pieces)):
            ic = times[li][pi]
            if len(ic) < 2:
                continue
            ok = plausible_strides(np.round(ic).astype(np.int64), fs, config)
            alternate = contralateral_consistent(ic, times[1 - li][pi], config)
            for k in np.flatnonzero(ok):
                s, e = ic[k], ic[k + 1]
                i0, i1 = int(np.ceil(s)), min(int(np.floor(e)), n - 1)
                if i1 < i0:
                    continue
                # Both ends and every sample between inside one gait bout.
                lo, hi = int(np.floor(s)), min(int(np.ceil(e)), n - 1)
                if bout[lo] < 0 or np.any(bout[lo:hi + 1] != bout[lo]):
                    continue
                target = phase if alternate[k] else rejected
                target[li, i0:i1 + 1] = 100.0 * (t[i0:i1 + 1] - s) / (e - s)
                if alternate[k]:
                    all_strides[li].append((s, e))
    strides = [np.asarray(st, dtype=np.float64).reshape(-1, 2) for st in all_strides]
    ics = [np.unique(st.ravel()) if len(st) else np.zeros(0) for st in strides]
    # A stride's last sample can sit exactly on its end IC: 100 % is the next stride's 0 %.
    phase = np.where(phase >= 100.0, phase - 100.0, phase)
    rejected = np.where(rejected >= 100.0, rejected - 100.0, rejected)
    return PhaseTruth(rec.file_id, phase, ics, strides, rejected)


def subsample_error(gyro_dps: np.ndarray, fs: float, config: GaitEventConfig = GaitEventConfig(),
                    corrupted: bool = False, up: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """IC timing at ``fs`` against the same detector on the signal upsampled ``up`` times.

    Returns (errors of the sub-sample times, errors of the integer-sample times), in samples at ``fs``,
    for the ICs matched within one sample.
    """
    from scipy import signal

    ev = detect_leg_events(gyro_dps, fs, config, corrupted)
    y = signal.sosfiltfilt(_sos(config, fs), _normalize(gyro_dps, config, corrupted))
    frac = subsample_crossings(y, ev.ic)
    fine = signal.resample_poly(np.asarray(gyro_dps, dtype=np.float64), up, 1)
    ref = leg_ic_times(fine, fs * up, config, corrupted) / up
    if len(ref) == 0 or len(frac) == 0:
        return np.zeros(0), np.zeros(0)
    j = np.clip(np.searchsorted(ref, frac), 1, len(ref) - 1)
    near = np.where(np.abs(ref[j] - frac) < np.abs(ref[j - 1] - frac), ref[j], ref[j - 1])
    keep = np.abs(near - frac) <= 1.0
    return (frac - near)[keep], (ev.ic.astype(float) - near)[keep]
