"""The runtime's status: one status and reason, published on every change and periodically, and the watchdog.

``StatusReporter`` is the part of ``orchestrator.Runtime`` that owns ``gait.status``: ``_set_status`` (under
one lock with the trajectory send that follows it, so no trajectory follows a HOLD on the wire), the
watchdog thread (HOLD on stale input within one IMU period, the periodic status line), the running counters,
and the counters. Its messages carry the gait phase of ``phase_output.PhaseOutput._phase_now``. It reads the runtime's
state (``stats``, ``gate``, ``ring``, ``phase``, ``publisher``, ``serial``, ``safety``, ``config``) and
holds none of its own.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Dict, Optional

import numpy as np

from metagait_edge.runtime.input_gate import RESUMED_REASON, is_input_reason, stale_reason, wall_ns

log = logging.getLogger("metagait_edge.runtime.orchestrator")


class StatusReporter:
    def _set_status(self, status: Optional[str], reason: Optional[str], only_if=None, periodic: bool = False,
                    then: Optional[Callable[[], None]] = None) -> None:
        """Set the status (None: keep), publish it on a change (or ``periodic``), then run ``then`` (the trajectory
        send), under one lock: no trajectory follows a HOLD on the wire. ``only_if(status, reason)`` guards a
        watchdog update against the worker's; ``stats.holds`` counts every change into HOLD."""
        with self._lock:
            s = self.stats
            if only_if is not None and not only_if(s.last_status, s.last_reason):
                return
            status, reason = status or s.last_status, s.last_reason if reason is None else reason
            changed = status != s.last_status
            s.last_status, s.last_reason = status, reason
            s.holds += changed and status == "HOLD"
            if (changed or periodic) and self.publisher is not None:
                now = self.clock()
                phase, cycle_s = self._phase_now(now) if status != "HOLD" else (0.0, 0.0)
                self.publisher.publish_status(status, reason, walker_id=self.walker, phase=phase, cycle_s=cycle_s,
                                              t_input_ns=wall_ns(self.ring.latest_timestamp(), now, time.time_ns()),
                                              counters=self.counters(), inline=True)
            if then is not None:
                then()

    def imu_age(self) -> float:
        last = self.ring.latest_timestamp()
        return math.inf if last is None else self.clock() - last

    def _watchdog(self) -> None:
        period = self.config.runtime.status_period_s
        timeout = self.config.safety.staleness_timeout_s
        next_line = self.clock() + period
        while not self._stop.wait(min(0.02, timeout / 4, 1.0 / self.rate_hz)):  # HOLD within one IMU period
            age = self.imu_age()
            if age > timeout:  # HOLD, and a staleness reason refreshed with the current age
                ser = getattr(self.serial, "stats", None)
                error = ser.last_error if ser is not None and not ser.connected else ""  # e.g. the port is missing
                self._set_status("HOLD", stale_reason(age, timeout, error),
                                 only_if=lambda st, why: st != "HOLD" or is_input_reason(why))
            else:  # fresh input again: the HOLD stays until the worker has a fresh, complete cycle
                self._set_status("HOLD", RESUMED_REASON,
                                 only_if=lambda st, why: st == "HOLD" and is_input_reason(why))
            now = self.clock()
            if now >= next_line:
                next_line = now + period
                self._set_status(None, None, periodic=True)
                log.info("%s", self.status_line())

    def counters(self) -> Dict[str, int]:
        """Running counts, faults included (the status line; ``counters`` in every ``gait.status`` message)."""
        s, c, ser = self.stats, self.safety.counters, getattr(self.serial, "stats", None)
        out = {"samples": s.samples, "cycles": s.cycles, "published": s.published, "personalized": s.personalized,
               "holds": s.holds, "nan": s.nonfinite_samples, "drops": s.dropped_samples, "stale": self.gate.stale_samples,
               "gaps": self.gate.gaps, "rejected_cycles": c.implausible_cycle, "clipped_holds": c.clipped_hold,
               "profile_errors": len(self._profile_errors),
               "identity_conflicts": self.identity.conflicts if getattr(self, "identity", None) is not None else 0,
               "identity_expired": self.identity.expired if getattr(self, "identity", None) is not None else 0,
               **(self.continual.counters() if getattr(self, "continual", None) is not None else {})}
        if ser is not None:
            out.update(serial_frames=ser.frames, bad=ser.bad_frames, reconnects=ser.reconnects, open_failures=ser.open_failures)
        camera = getattr(self, "camera", None)
        if camera is not None:  # why camera frames gave no silhouette (edge cut, partial body, merged walkers, ...)
            out.update({f"camera_{k}": v for k, v in camera.counters.as_dict().items()})
        return out

    def status_line(self) -> str:
        s = self.stats
        gen = np.percentile(s.gen_ms, 50) if s.gen_ms else float("nan")
        return (f"status={s.last_status} walker={self.walker} conf={self.confidence:.2f} "
                + " ".join(f"{k}={v}" for k, v in self.counters().items()) + f" gen_p50={gen:.1f}ms")
