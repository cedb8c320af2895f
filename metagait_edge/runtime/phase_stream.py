"""Gait phase and locomotion mode per IMU sample in the runtime (issue 17, item 4): ``gait.phase``.

``PhaseStream.push(x, t)`` takes one decoded IMU sample (36 values in g and deg/s) and returns a
``PhaseEstimate``: phase per leg in [0, 1) (0 = that leg's initial contact), phase rate in cycles/s, the
locomotion mode, a confidence and a status. It runs the shipped ``PhaseNet`` (``resources/phase/all``,
trained on all 18 HuGaDB walkers, loaded strictly by ``checkpoint.load_into``) causally on the last
``window`` samples (``phase.model.StreamingPhaseEstimator``: one compiled call, ``phase.kernel``; a right-aligned
network computes only each layer's output for the newest sample, ``CachedPhaseNet``), with the
same input features and gyroscope masks as ``eval-phase`` (``phase.dataset.features``): a replayed HuGaDB file
gets the shipped corrupted-gyroscope table's masks for that file, other inputs the configured ``masked_gyros``.

Status of an estimate (what a controller may do with it): ``OK``, the network's phase in a gait mode with
enough confidence; ``DEGRADED``, the time-since-heel-strike baseline (no network could be loaded: the
``source`` says so); ``HOLD``, no usable phase: warming up after a (re)start, a non-gait mode (standing,
sitting, a sit/stand transition), or low confidence. A HOLD estimate carries phase 0 and rate 0.

``mode_reference`` is the per-mode choice of trajectory (``other_mode_policy``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from metagait_edge.phase.dataset import GAIT_MODES, MODES, N_INPUTS, features
from metagait_edge.sensors import SENSORS

log = logging.getLogger(__name__)

SOURCE_NETWORK, SOURCE_BASELINE = "phasenet", "baseline"
_BELOW_ONE = math.nextafter(1.0, 0.0)
UNKNOWN_MODE = "unknown"  # the baseline recognizes no mode
POLICIES = ("generic", "hold")
# Order of the values of a gait.phase payload and of a GaitPhase message.
PHASE_CHANNELS = ("phase_r", "phase_l", "phase_rate", "mode_index", "confidence")


@dataclass
class PhaseStreamConfig:
    """``phase:`` in ``EdgeConfig`` (docs/runtime.md)."""

    enabled: bool = True  # publish gait.phase and use the estimate; False: the heel-strike phase as before
    # PhaseNet checkpoint (path without suffix; members trained with other seeds beside it, <path>.seed<N>, join it as
    # an ensemble); None: the shipped resources/phase/all
    weights: Optional[Path] = None
    # Accuracy against time per sample (docs/BENCHMARKS.md): how many of the ensemble's members run (0: all), and
    # whether each also runs on the mirrored window (only for weights trained with leg swap)
    members: int = 0
    mirror_average: bool = True
    # Gyroscopes to mask (zeroed and flagged, as eval-phase does for corrupted ones), e.g. [rs, ls]. None: a
    # replayed HuGaDB file gets its masks from the shipped corrupted-gyroscope table, any other input none.
    masked_gyros: Optional[List[str]] = None
    mode_alpha: float = 0.5  # causal smoothing of the mode probabilities (1: none); eval-phase's folds chose 1, 0.5, 0.3
    min_confidence: float = 0.5  # below: HOLD (the phase vector's length and the mode's probability)
    warmup_samples: int = 32  # HOLD for this many samples after a (re)start: the window is still mostly padding
    rate_tau_s: float = 0.5  # smoothing time constant of the phase rate
    # A personalized trajectory only in the mode the walker calibrated in; in another gait mode: the generic
    # model (``generic``) or HOLD (``hold``). Standing, sitting and transitions always HOLD.
    other_mode_policy: str = "generic"
    nongait_hold_s: float = 0.25  # a non-gait mode this long puts the runtime in HOLD (no periodic reference)

    def __post_init__(self) -> None:
        if self.other_mode_policy not in POLICIES:
            raise ValueError(f"phase.other_mode_policy must be one of {POLICIES}, got {self.other_mode_policy!r}")
        bad = [s for s in self.masked_gyros or () if s not in SENSORS]
        if bad:
            raise ValueError(f"phase.masked_gyros: unknown sensor(s) {bad}; sensors are {list(SENSORS)}")
        if not 0.0 < self.mode_alpha <= 1.0:
            raise ValueError(f"phase.mode_alpha must be in (0, 1], got {self.mode_alpha}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"phase.min_confidence must be in [0, 1], got {self.min_confidence}")
        if self.members < 0:
            raise ValueError(f"phase.members must be >= 0 (0: every member of the ensemble), got {self.members}")
        if self.warmup_samples < 0 or not self.rate_tau_s > 0 or self.nongait_hold_s < 0:
            raise ValueError("phase.warmup_samples and phase.nongait_hold_s must be >= 0, phase.rate_tau_s > 0")


@dataclass(frozen=True)
class PhaseEstimate:
    t_s: float  # host time (the ring buffer's clock) of the IMU sample
    phase: Tuple[float, float]  # right, left in [0, 1); (0, 0) while HOLD
    rate_hz: float  # phase rate of the right leg, cycles per second (>= 0); 0 while HOLD
    mode: str  # one of phase.dataset.MODES, or "unknown" (baseline)
    mode_index: int  # index into MODES; -1 for "unknown"
    confidence: float  # [0, 1]
    status: str  # OK | DEGRADED | HOLD
    reason: str  # why not OK; "" when OK
    source: str  # "phasenet" or "baseline"

    @property
    def usable(self) -> bool:
        return self.status != "HOLD"

    def phase_at(self, t_s: float) -> float:
        """Right-leg phase moved to host time ``t_s`` at the current rate (0 when not usable): forward for a
        trajectory sent later, back for a reference stamped at a sample the worker had while this one was newer."""
        if not self.usable:
            return 0.0
        return min((self.phase[0] + self.rate_hz * (t_s - self.t_s)) % 1.0, _BELOW_ONE)


def gyro_valid_for(config: PhaseStreamConfig, replay_path: Optional[Path] = None) -> Dict[str, bool]:
    """The gyroscope masks the estimator uses: the configured ones, else the HuGaDB table's for a replayed file."""
    if config.masked_gyros is not None:
        return {s: s not in config.masked_gyros for s in SENSORS}
    if replay_path is not None and Path(replay_path).name.startswith("HuGaDB_"):
        from metagait_edge.data.gyro_validity import gyro_valid

        return gyro_valid(Path(replay_path).stem)
    return {s: True for s in SENSORS}


class PhaseStream:
    """See the module docstring. Not thread-safe: one producer (the thread that decodes the IMU) pushes."""

    def __init__(self, config: PhaseStreamConfig, rate_hz: float, gyro_valid: Optional[Dict[str, bool]] = None) -> None:
        self.config = config
        self.dt = 1.0 / float(rate_hz)
        self.rate_alpha = self.dt / (config.rate_tau_s + self.dt)
        self.net, self.note = None, ""
        try:
            from metagait_edge.phase.model import RESOURCE_DIR, StreamingPhaseEstimator, load_phase_ensemble

            nets = load_phase_ensemble(config.weights if config.weights is not None else RESOURCE_DIR / "all")
            self.net = StreamingPhaseEstimator(nets[:config.members] if config.members else nets,
                                               mirror=None if config.mirror_average else False)
        except (OSError, ValueError, ImportError) as exc:  # CheckpointError is a ValueError
            self.note = f"no PhaseNet checkpoint ({exc})"
            log.warning("gait phase: %s; the time-since-heel-strike baseline runs instead (gait.phase source: baseline)",
                        self.note)
        self.source = SOURCE_NETWORK if self.net is not None else SOURCE_BASELINE
        self._row = np.zeros(N_INPUTS, np.float32)  # one sample's features: IMU values scaled, then the gyro flags
        self.set_gyro_valid(gyro_valid or {s: True for s in SENSORS})
        self.nongait_since: Optional[float] = None  # host time since which the mode is not a gait mode
        self.latest: Optional[PhaseEstimate] = None
        self.reset()

    def set_gyro_valid(self, valid: Dict[str, bool]) -> None:
        """Masks per sensor; the feature scaling comes from ``phase.dataset.features`` itself (one home)."""
        from metagait_edge.data.gait_events import CausalGaitDetector, SHANK_SENSOR

        self.valid = {s: bool(valid.get(s, True)) for s in SENSORS}
        unit = features(np.ones((1, 36), np.float32), self.valid)[0]
        self._scale = unit[:36].copy()
        self._row[36:] = unit[36:]
        rate_hz = 1.0 / self.dt
        self._detectors = [CausalGaitDetector(rate_hz, corrupted=not self.valid[SHANK_SENSOR[leg]])
                           for leg in ("right", "left")]

    def reset(self) -> None:
        """Forget the past (a gap in the input): the window refills, the estimate warms up again."""
        self.n = 0
        if self.net is not None:
            self.net.reset()
        self._prob: Optional[List[float]] = None  # smoothed mode probabilities
        self._prev_phase: Optional[float] = None
        self._rate = 0.0
        self.nongait_since = None
        self._mode_counts = [0] * (len(MODES) + 1)  # per mode since the last cycle; last: unknown (Python ints:
        # counted every sample on the input thread, where a numpy scalar update costs more than the count)
        for det in self._detectors:
            det.reset()

    def push(self, x: np.ndarray, t_s: float) -> PhaseEstimate:
        """One decoded IMU sample (36 values, g and deg/s, ``imu.protocol`` order) at host time ``t_s``."""
        self.n += 1
        est = self._network(x, t_s) if self.net is not None else self._baseline(x, t_s)
        self._mode_counts[est.mode_index] += 1  # -1 (unknown) counts in the last slot
        if est.mode in GAIT_MODES or est.mode == UNKNOWN_MODE or self.n <= self.config.warmup_samples:
            self.nongait_since = None  # a window still mostly padding says "standing": not evidence yet
        elif self.nongait_since is None:
            self.nongait_since = t_s
        self.latest = est
        return est

    def take_cycle_mode(self) -> str:
        """The most frequent mode since the last call (one gait cycle, called at each IC), then start counting
        again: a cycle's mode, robust to a few samples of another mode around the IC."""
        counts, self._mode_counts = self._mode_counts, [0] * len(self._mode_counts)
        if not any(counts):
            return self.latest.mode if self.latest is not None else UNKNOWN_MODE
        m = max(range(len(counts)), key=counts.__getitem__)  # the first of equal counts, as argmax
        return UNKNOWN_MODE if m == len(MODES) else MODES[m]

    def _network(self, x: np.ndarray, t_s: float) -> PhaseEstimate:
        np.multiply(x, self._scale, out=self._row[:36])
        out = self.net.push(self._row)  # Python floats from here on: cheaper than numpy on 2 + 2 + 7 numbers
        phases = tuple(min(p / 100.0, _BELOW_ONE) for p in out["phase"])
        vec = min(out["confidence"])
        p = out["mode_prob"]
        a = self.config.mode_alpha
        self._prob = p if self._prob is None else [(1.0 - a) * q + a * r for q, r in zip(self._prob, p)]
        m = max(range(len(self._prob)), key=self._prob.__getitem__)
        conf = min(vec, self._prob[m])
        rate = self._advance_rate(phases[0])
        return self._judge(t_s, phases, rate, MODES[m], m, conf, SOURCE_NETWORK)

    def _baseline(self, x: np.ndarray, t_s: float) -> PhaseEstimate:
        from metagait_edge.data.gait_events import SHANK_CHANNEL
        from metagait_edge.sensors import IMU_CHANNELS

        ph = []
        for det, leg in zip(self._detectors, ("right", "left")):
            det.push(float(x[IMU_CHANNELS.index(SHANK_CHANNEL[leg])]))
            ph.append(det.phase / 100.0)
        if not math.isfinite(ph[0]):
            return PhaseEstimate(t_s, (0.0, 0.0), 0.0, UNKNOWN_MODE, -1, 0.0, "HOLD",
                                 f"baseline phase (time since heel strike, {self.note}): no stride detected yet",
                                 SOURCE_BASELINE)
        phases = (ph[0], ph[1] if math.isfinite(ph[1]) else 0.0)
        rate = self._advance_rate(phases[0])
        return PhaseEstimate(t_s, phases, rate, UNKNOWN_MODE, -1, 0.0, "DEGRADED",
                             f"baseline phase (time since heel strike): {self.note}", SOURCE_BASELINE)

    def _advance_rate(self, phase: float) -> float:
        """Smoothed cycles/s from the wrapped change of the right leg's phase per sample."""
        if self._prev_phase is not None:
            step = (phase - self._prev_phase + 0.5) % 1.0 - 0.5
            self._rate += self.rate_alpha * (step / self.dt - self._rate)
        self._prev_phase = phase
        return max(0.0, self._rate)

    def _judge(self, t_s: float, phases, rate: float, mode: str, m: int, conf: float, source: str) -> PhaseEstimate:
        c = self.config
        if self.n <= c.warmup_samples:
            why = f"phase warming up: {self.n} of {c.warmup_samples} samples since the input (re)started"
        elif mode not in GAIT_MODES:
            why = f"mode {mode}: no gait phase"
        elif conf < c.min_confidence:
            why = f"phase confidence {conf:.2f} < {c.min_confidence:.2f}"
        else:
            return PhaseEstimate(t_s, phases, rate, mode, m, conf, "OK", "", source)
        return PhaseEstimate(t_s, (0.0, 0.0), 0.0, mode, m, conf, "HOLD", why, source)

    def nongait_reason(self, t_s: float) -> Optional[str]:
        """A HOLD reason for the runtime when a non-gait mode has lasted ``nongait_hold_s``; else None."""
        since, est = self.nongait_since, self.latest
        if since is None or est is None or t_s - since < self.config.nongait_hold_s:
            return None
        return f"mode {est.mode}: no periodic reference"


def mode_reference(mode: str, calibrated_mode: Optional[str], policy: str) -> Tuple[bool, Optional[str], str]:
    """Which trajectory a cycle may get in ``mode``: (personalized allowed, HOLD reason or None, the
    DEGRADED reason when the walker's profile is set aside for another mode, else "").

    ``calibrated_mode`` is the mode the walker's profile was calibrated in (None: no profile).
    """
    if mode == UNKNOWN_MODE:  # the baseline knows no modes: the reference as without mode recognition
        return True, None, ""
    if mode not in GAIT_MODES:
        return False, f"mode {mode}: no periodic reference", ""
    if calibrated_mode is None or mode == calibrated_mode:
        return True, None, ""
    if policy == "hold":
        return False, f"mode {mode}: the walker calibrated in {calibrated_mode} (phase.other_mode_policy: hold)", ""
    return False, None, f"mode {mode}: personalized for {calibrated_mode}: generic reference"
