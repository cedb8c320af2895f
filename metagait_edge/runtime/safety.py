"""Safety envelope between the gait model and the actuator controller.

Every reference trajectory (float32 [C, 101], one row per joint, degrees over one gait cycle) passes
through ``SafetyEnvelope.apply`` before it is published:

- a trajectory with any NaN/Inf is replaced as a whole by HOLD (never patched: a model that emits NaN
  cannot be trusted for the other points either), and counted;
- stale IMU input (no sample for ``staleness_timeout_s``) means the model runs on old data: HOLD;
- a cycle whose duration is outside ``min_cycle_duration_s..max_cycle_duration_s`` is no gait cycle
  (a stumble, a detector error, timestamps compressed by a burst): HOLD, never rescaled;
- every point is clamped to the joint's angle limits and the change between consecutive points is
  limited to ``max_rate_dps * cycle_duration / 100`` (101 points span one cycle), at the trajectory's
  own cycle duration, the one it is published with;
- angle limits are in the frame of the published angles. ``limits_frame: relative`` (default): the
  runtime publishes IMU-derived angle estimates whose zero depends on how the sensors sit on the leg (a
  straight knee can read -25 deg, docs/data.md), so ``min_deg``/``max_deg`` are offsets from the walker's
  *neutral*, the mean angle over its last measured cycles (``NeutralPosture``), and the defaults contain
  every valid HuGaDB walking cycle. ``absolute``: for angles calibrated to anatomical joint zero (defaults:
  anatomical ranges for level walking);
- a reference the envelope had to change at more than ``max_clipped_fraction`` of its points has been
  clipped into a different shape: HOLD, not published (below the fraction it is published as is);
- a personalized reference whose identity confidence is below ``confidence_threshold`` is passed on as
  non-personalized and flagged DEGRADED, as is a reference that was never personalized.

HOLD means: no new reference; the controller keeps (or ramps to) its own safe posture.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass
from typing import Dict, NamedTuple, Optional, Sequence

import numpy as np

N_POINTS = 101


class SafetyStatus(str, enum.Enum):
    OK = "OK"
    DEGRADED = "DEGRADED"  # safe reference, but generic (not personalized) or otherwise reduced
    HOLD = "HOLD"  # no reference: controller holds its safe posture


@dataclass
class JointLimit:
    min_deg: float
    max_deg: float
    max_rate_dps: float

    def __post_init__(self) -> None:
        vals = (self.min_deg, self.max_deg, self.max_rate_dps)
        if not all(math.isfinite(v) for v in vals):
            raise ValueError(f"joint limit values must be finite, got {vals}")
        if self.min_deg > self.max_deg:
            raise ValueError(f"min_deg {self.min_deg} > max_deg {self.max_deg}")
        if self.max_rate_dps <= 0:
            raise ValueError(f"max_rate_dps must be > 0, got {self.max_rate_dps}")


def _both_legs(hip: JointLimit, knee: JointLimit, ankle: JointLimit) -> Dict[str, JointLimit]:
    limits = {"hip": hip, "knee": knee, "ankle": ankle}
    return {f"{joint}_{side}": JointLimit(**limit.__dict__) for joint, limit in limits.items() for side in ("r", "l")}


def anatomical_joint_limits() -> Dict[str, JointLimit]:
    """``limits_frame: absolute``: sagittal-plane ranges for level walking assistance (degrees, deg/s), for
    angles calibrated to anatomical joint zero."""
    return _both_legs(JointLimit(-25.0, 45.0, 300.0), JointLimit(-5.0, 75.0, 450.0), JointLimit(-25.0, 25.0, 300.0))


def relative_joint_limits() -> Dict[str, JointLimit]:
    """``limits_frame: relative`` (default): offsets from the walker's neutral (mean angle over its recent
    cycles) and rates, in degrees and deg/s. Measured on every HuGaDB walking cycle with valid angle channels
    (1747 cycles of 5 walkers: the 17 walking files whose gyroscopes are not corrupted; neutral = mean of the
    5 cycles before; ``python benchmarks/reliability.py limits``, docs/reliability.md): deviations reach hip
    -40/+43, knee -47/+57, ankle -30/+57 deg, point-to-point rates 412 (hip), 521 (knee), 592 (ankle) deg/s;
    these limits leave a margin above all of them."""
    return _both_legs(JointLimit(-45.0, 50.0, 480.0), JointLimit(-55.0, 70.0, 620.0), JointLimit(-35.0, 65.0, 700.0))


LIMIT_FRAMES = ("relative", "absolute")
# DEGRADED reasons a subscriber can tell apart by prefix (docs/zmq_protocol.md)
NO_PROFILE = "no personalized model"  # the walker was never calibrated (or none is identified)
PROFILE_UNUSABLE = "personalized profile unusable"  # a profile exists but is corrupt or fails its checksum


@dataclass
class SafetyConfig:
    limits_frame: str = "relative"  # relative: offsets from the walker's neutral; absolute: calibrated angles
    joint_limits: Optional[Dict[str, JointLimit]] = None  # None: the frame's defaults (see above)
    max_clipped_fraction: float = 0.05  # a reference changed at more points than this fraction: HOLD
    default_limit: Optional[JointLimit] = None  # for channels not in joint_limits; None: such a channel -> HOLD
    staleness_timeout_s: float = 0.1
    confidence_threshold: float = 0.7
    cycle_duration_s: float = 1.1  # used when apply() gets no cycle duration
    # Plausible gait-cycle durations: a cycle outside them is rejected (HOLD), never rescaled into range.
    min_cycle_duration_s: float = 0.4
    max_cycle_duration_s: float = 2.0
    # IMU input: a larger spacing between consecutive samples restarts gait detection (no cycle spans it).
    max_sample_gap_s: float = 0.1

    def __post_init__(self) -> None:
        if self.limits_frame not in LIMIT_FRAMES:
            raise ValueError(f"limits_frame must be one of {LIMIT_FRAMES}, got {self.limits_frame!r}")
        if self.joint_limits is None:
            self.joint_limits = relative_joint_limits() if self.limits_frame == "relative" else anatomical_joint_limits()
        if not 0.0 <= self.max_clipped_fraction <= 1.0:
            raise ValueError(f"max_clipped_fraction must be in [0, 1], got {self.max_clipped_fraction}")
        if not self.staleness_timeout_s > 0:
            raise ValueError(f"staleness_timeout_s must be > 0, got {self.staleness_timeout_s}")
        if not 0.0 <= self.confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1], got {self.confidence_threshold}")
        if not self.cycle_duration_s > 0 or not self.min_cycle_duration_s > 0:
            raise ValueError("cycle_duration_s and min_cycle_duration_s must be > 0")
        if not self.min_cycle_duration_s < self.max_cycle_duration_s < math.inf:
            raise ValueError(f"need min_cycle_duration_s < max_cycle_duration_s (finite), got "
                             f"{self.min_cycle_duration_s} and {self.max_cycle_duration_s}")
        if not self.max_sample_gap_s > 0:
            raise ValueError(f"max_sample_gap_s must be > 0, got {self.max_sample_gap_s}")


class SafetyResult(NamedTuple):
    trajectory: Optional[np.ndarray]  # float32 [C, 101] within limits, or None on HOLD
    status: SafetyStatus
    reason: str  # "" when OK
    personalized: bool  # what the consumer may treat it as
    clamped_points: int = 0
    rate_limited_points: int = 0
    lo: Optional[np.ndarray] = None  # the angle limits applied, per channel, in the published frame (degrees)
    hi: Optional[np.ndarray] = None


@dataclass
class SafetyCounters:
    calls: int = 0
    ok: int = 0
    degraded: int = 0
    hold: int = 0
    nonfinite: int = 0
    stale: int = 0
    implausible_cycle: int = 0
    no_neutral: int = 0
    clipped_hold: int = 0
    unknown_channel: int = 0
    clamped_points: int = 0
    rate_limited_points: int = 0


def rate_limit(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, max_step: np.ndarray) -> tuple[np.ndarray, int]:
    """Follow each row of ``x`` (within [lo, hi]) with steps of at most ``max_step``; returns (y, steps limited).

    Sequential by nature; plain floats per channel beat NumPy calls on 6-element columns by ~10x here.
    """
    y = np.empty_like(x)
    n_limited = 0
    for c in range(x.shape[0]):
        row, m, low, high = x[c].tolist(), float(max_step[c]), float(lo[c]), float(hi[c])
        prev = row[0]
        out = [prev]
        for target in row[1:]:
            step = target - prev
            limited = m if step > m else -m if step < -m else step
            n_limited += limited != step
            # prev is within limits and the limited step points toward the target, so clipping keeps both
            # the limit and the rate bound.
            prev = min(max(prev + limited, low), high)
            out.append(prev)
        y[c] = out
    return y, int(n_limited)


class SafetyEnvelope:
    def __init__(self, config: Optional[SafetyConfig] = None) -> None:
        self.config = config or SafetyConfig()
        self.counters = SafetyCounters()
        self.last_result: Optional[SafetyResult] = None  # of the latest apply() that did not raise
        self._limits_cache: dict = {}

    def _limits(self, channels: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
        hit = self._limits_cache.get(channels)
        if hit is not None:
            return hit
        lo, hi, rate = [], [], []
        for name in channels:
            lim = self.config.joint_limits.get(name, self.config.default_limit)
            if lim is None:
                return f"no safety limits configured for channel {name!r}"
            lo.append(lim.min_deg)
            hi.append(lim.max_deg)
            rate.append(lim.max_rate_dps)
        out = (np.asarray(lo, np.float64), np.asarray(hi, np.float64), np.asarray(rate, np.float64))
        self._limits_cache[channels] = out
        return out

    def _hold(self, reason: str) -> SafetyResult:
        self.counters.hold += 1
        return SafetyResult(None, SafetyStatus.HOLD, reason, False)

    def apply(self, *args, **kwargs) -> SafetyResult:
        """``bound(...)``, remembered as ``last_result`` (the limits it applied are in ``lo``/``hi``)."""
        self.last_result = self.bound(*args, **kwargs)
        return self.last_result

    def bound(
        self,
        trajectory: np.ndarray,
        channel_names: Sequence[str],
        last_imu_time: Optional[float],
        now: float,
        confidence: float,
        personalized: bool,
        cycle_duration_s: Optional[float] = None,
        neutral: Optional[Sequence[float]] = None,
        unusable_profile: Optional[str] = None,
    ) -> SafetyResult:
        """Bound one reference trajectory; see the module docstring for the rules.

        ``last_imu_time`` and ``now`` are on the same clock (the ring buffer's, ``time.monotonic``).
        ``neutral`` (degrees per channel, ``NeutralPosture``) is what relative limits are offsets from.
        ``unusable_profile``: why the walker's profile could not be loaded (corrupt, checksum mismatch), so
        that a DEGRADED reason tells it apart from a walker that was never calibrated.
        Wrong shapes are programming errors and raise ``ValueError``; everything about the *values*
        (NaN, stale input, unknown channel) ends in HOLD instead, because the control loop must go on.
        """
        traj = np.asarray(trajectory)
        channels = tuple(channel_names)
        if traj.ndim != 2 or traj.shape[1] != N_POINTS:
            raise ValueError(f"trajectory must be [channels, {N_POINTS}], got shape {traj.shape}")
        if len(channels) != traj.shape[0]:
            raise ValueError(f"{len(channels)} channel names for a trajectory with {traj.shape[0]} channels")
        self.counters.calls += 1
        if not np.issubdtype(traj.dtype, np.number) or not np.isfinite(traj).all():
            self.counters.nonfinite += 1
            return self._hold("trajectory contains NaN or Inf")
        if last_imu_time is None:
            self.counters.stale += 1
            return self._hold("no IMU sample received yet")
        age = now - last_imu_time
        if not math.isfinite(age) or age > self.config.staleness_timeout_s:
            self.counters.stale += 1
            return self._hold(f"IMU stale: {age:.3f} s since the last sample > {self.config.staleness_timeout_s:.3f} s")
        limits = self._limits(channels)
        if isinstance(limits, str):
            self.counters.unknown_channel += 1
            return self._hold(limits)
        lo, hi, rate = limits
        if self.config.limits_frame == "relative":
            base = None if neutral is None else np.asarray(neutral, np.float64).reshape(-1)
            if base is None or base.shape != lo.shape or not np.isfinite(base).all():
                self.counters.no_neutral += 1
                return self._hold("no neutral posture estimate for the relative joint limits")
            lo, hi = lo + base, hi + base
        cycle = self.config.cycle_duration_s if cycle_duration_s is None else float(cycle_duration_s)
        if not math.isfinite(cycle) or cycle <= 0:
            self.counters.nonfinite += 1
            return self._hold(f"invalid cycle duration {cycle_duration_s!r}")
        if not self.config.min_cycle_duration_s <= cycle <= self.config.max_cycle_duration_s:
            self.counters.implausible_cycle += 1
            return self._hold(f"cycle duration {cycle:.3f} s outside the plausible "
                              f"{self.config.min_cycle_duration_s:.2f}-{self.config.max_cycle_duration_s:.2f} s")
        max_step = rate * (cycle / (N_POINTS - 1))

        x = traj.astype(np.float64)
        clamped = np.clip(x, lo[:, None], hi[:, None])
        n_clamped = int(np.count_nonzero(clamped != x))
        if (np.abs(np.diff(clamped, axis=1)) <= max_step[:, None]).all():
            y, n_rate = clamped, 0  # the usual case: no step to limit, so the sequential pass changes nothing
        else:
            y, n_rate = rate_limit(clamped, lo, hi, max_step)
        out = y.astype(np.float32)
        # float32 rounding can step just outside a limit; pull it back in float32 terms.
        out = np.clip(out, lo.astype(np.float32)[:, None], hi.astype(np.float32)[:, None])
        self.counters.clamped_points += n_clamped
        self.counters.rate_limited_points += n_rate
        changed = float(np.count_nonzero(np.abs(out - x) > 1e-3)) / out.size
        if changed > self.config.max_clipped_fraction:
            self.counters.clipped_hold += 1
            return self._hold(f"the safety envelope changed {100 * changed:.1f} % of the reference's points "
                              f"(> {100 * self.config.max_clipped_fraction:.1f} %): clipped into another shape")

        conf = float(confidence) if confidence is not None else 0.0
        if not math.isfinite(conf):
            conf = 0.0
        if personalized and conf >= self.config.confidence_threshold:
            self.counters.ok += 1
            return SafetyResult(out, SafetyStatus.OK, "", True, n_clamped, n_rate, lo, hi)
        self.counters.degraded += 1
        if personalized:
            reason = f"identity confidence {conf:.2f} < {self.config.confidence_threshold:.2f}: generic reference"
        elif unusable_profile:
            reason = f"{PROFILE_UNUSABLE}: {unusable_profile}: generic reference"
        else:
            reason = f"{NO_PROFILE}: generic reference"
        return SafetyResult(out, SafetyStatus.DEGRADED, reason, False, n_clamped, n_rate, lo, hi)


class NeutralPosture:
    """The walker's neutral joint angles in the published frame: the mean angle over its last ``cycles``
    measured gait cycles (what ``limits_frame: relative`` limits are offsets from)."""

    def __init__(self, cycles: int = 5) -> None:
        if cycles < 1:
            raise ValueError(f"cycles must be >= 1, got {cycles}")
        self._means: "deque[np.ndarray]" = deque(maxlen=cycles)

    def update(self, angles: np.ndarray) -> Optional[np.ndarray]:
        """Add one measured cycle ([C, points], degrees; a cycle with NaN is skipped); the current neutral."""
        mean = np.asarray(angles, np.float64).mean(axis=1)
        if np.isfinite(mean).all():
            self._means.append(mean)
        return np.mean(self._means, axis=0) if self._means else None
