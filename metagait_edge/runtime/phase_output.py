"""The runtime's gait-phase output (``gait.phase``) and the phase its trajectories and status messages carry.

``PhaseOutput`` is the part of ``orchestrator.Runtime`` that feeds ``phase_stream.PhaseStream``: every decoded
IMU sample is estimated and sent on the thread that decoded it (``Runtime.push_imu``, the serial reader's
callback), with no hand-off to the gait worker and never behind a cycle's generation; a gap between samples
restarts the estimator. It reads the runtime's ``phase``, ``publisher``, ``config``, ``stats``, ``gate``,
``clock``, ``walker``, ``phase_listeners`` and ``phase_latency_s``, and holds only the last sample's time.
"""

from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np

from metagait_edge.runtime.input_gate import wall_ns

log = logging.getLogger("metagait_edge.runtime.orchestrator")


class PhaseOutput:
    _phase_t: Optional[float] = None  # host time of the last sample the phase stream took

    def _phase_input(self, x: np.ndarray, t: float, arrival_s: float) -> None:
        """Phase and mode of one decoded sample (physical units), ``arrival_s`` when it was decoded."""
        if self.phase is None or not np.isfinite(x).all():
            return
        try:
            if self._phase_t is not None and not 0 <= t - self._phase_t <= self.config.safety.max_sample_gap_s:
                self.phase.reset()
            self._phase_t = t
            self._publish_phase(x, t, arrival_s)
        except Exception as exc:  # the input thread must go on reading
            self.stats.worker_errors += 1
            log.exception("gait phase error: %s", exc)

    def _publish_phase(self, x: np.ndarray, t: float, arrival_s: float) -> None:
        est = self.phase.push(x, t)
        if self.publisher is not None:
            self.publisher.publish_phase(est, walker_id=self.walker, t_input_ns=wall_ns(t, self.clock(), time.time_ns()))
            self.phase_latency_s.append(time.monotonic() - arrival_s)
        for notify in self.phase_listeners:
            notify(est)
        why = self.phase.nongait_reason(t)  # standing, sitting: no periodic reference until a gait cycle again
        if why is not None and self.stats.last_status != "HOLD":
            self._set_status("HOLD", why)

    def _phase_now(self, now: float) -> tuple:
        """(phase in [0, 1) at ``now``, cycle s): the phase stream's estimate when usable, else time since the IC."""
        est = self.phase.latest if self.phase is not None else None
        if est is not None and est.usable and est.rate_hz > 0:
            return est.phase_at(now), 1.0 / est.rate_hz
        return self.gate.phase(now)
