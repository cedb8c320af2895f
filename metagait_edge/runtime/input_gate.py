"""What the gait worker may turn into references: fresh, contiguous IMU input; and the phase it implies.

``InputGate.admit(t, now)`` per IMU sample, before the filters and the gait detector see it:

- ``STALE``: the sample is older than ``staleness_s`` when the worker gets to it (a backlog that arrives
  in a burst after an IMU stall, with the sensor's own timestamps, or a worker that fell behind). It is
  dropped and counted (``stale_samples``): a reference computed from it would describe the past.
- ``RESTART``: the sample is fresh but follows the previous admitted one by more than ``max_gap_s``
  (samples were lost or dropped as stale). The caller restarts the gait detector and the joint-angle
  filters, so no cycle ever spans the gap (counted in ``gaps``).
- ``ADMIT``: use it.

``on_cycle(ic_time, cycle_s)`` records the initial contact that opened the current cycle; ``phase(now)``
is then the gait phase in [0, 1) at ``now`` (the IC is detected a few samples late, behind the low-pass
filter, so at publish time the phase is already past 0). The HOLD reasons the watchdog publishes are
built here too, so that they are refreshed with the current age of the input.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

ADMIT, STALE, RESTART = "admit", "stale", "restart"

RESUMED_REASON = "IMU input fresh again: waiting for a complete gait cycle of fresh input"
# HOLD reasons that describe the input's freshness (the watchdog may refresh or replace them); a HOLD
# for another cause (non-finite model output, implausible cycle, ...) is left to the worker to clear.
_INPUT_REASONS = ("starting", "no IMU sample received yet", "IMU stale", RESUMED_REASON)

_BELOW_ONE = math.nextafter(1.0, 0.0)


def is_input_reason(reason: str) -> bool:
    return reason.startswith(_INPUT_REASONS)


def stale_reason(age_s: float, timeout_s: float, source_error: str = "") -> str:
    """The HOLD reason for input ``age_s`` old (inf: never received), with the source's last error if any."""
    base = ("no IMU sample received yet" if math.isinf(age_s)
            else f"IMU stale: {age_s:.3f} s since the last sample > {timeout_s:.3f} s")
    return f"{base} ({source_error})" if source_error else base


class InputGate:
    def __init__(self, staleness_s: float, max_gap_s: float) -> None:
        if not staleness_s > 0 or not max_gap_s > 0:
            raise ValueError(f"staleness_s and max_gap_s must be > 0, got {staleness_s} and {max_gap_s}")
        self.staleness_s = float(staleness_s)
        self.max_gap_s = float(max_gap_s)
        self.last_t: Optional[float] = None
        self.stale_samples = 0
        self.gaps = 0
        self._ic_t: Optional[float] = None
        self._cycle_s = 0.0

    def admit(self, t: float, now: float) -> str:
        if not now - t <= self.staleness_s:  # also NaN timestamps
            self.stale_samples += 1
            return STALE
        gap = self.last_t is not None and t - self.last_t > self.max_gap_s
        self.last_t = t
        if gap:
            self.gaps += 1
            self._ic_t, self._cycle_s = None, 0.0  # the phase is unknown until the next cycle
            return RESTART
        return ADMIT

    def on_cycle(self, ic_time_s: float, cycle_s: float) -> None:
        self._ic_t, self._cycle_s = float(ic_time_s), float(cycle_s)

    def phase(self, now: float) -> Tuple[float, float]:
        """(phase in [0, 1) at ``now``, cycle seconds); (0.0, 0.0) when no cycle has been seen since a restart."""
        if self._ic_t is None or not self._cycle_s > 0 or not math.isfinite(now):
            return 0.0, 0.0
        phase = ((now - self._ic_t) / self._cycle_s) % 1.0
        return min(max(phase, 0.0), _BELOW_ONE), self._cycle_s


def wall_ns(t_s: Optional[float], now_s: float, now_ns: int) -> int:
    """CLOCK_REALTIME ns of host time ``t_s`` (same clock as ``now_s``, e.g. monotonic), given the pair
    (``now_s``, ``now_ns``) read together; 0 when there is no such time (header ``t_input_ns``)."""
    if t_s is None or not math.isfinite(t_s) or not math.isfinite(now_s):
        return 0
    return int(min(now_ns, max(0, now_ns - round((now_s - t_s) * 1e9))))
