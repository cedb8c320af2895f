"""A publisher stand-in that keeps every message the runtime sends, in order, for tests and the reliability
campaign (benchmarks/reliability.py): there the runtime's output is under test, not the ZeroMQ transport."""

from __future__ import annotations

import time
from collections import deque
from typing import Optional

import numpy as np


class WireRecorder:
    """``events``: ``("traj", float32 [C, 101], fields)``, ``("status", status, fields)`` or
    ``("identity", walker_id, fields)``, as the runtime called ``publish_*``. Trajectory fields add the
    ``channels``, the angle limits the safety envelope applied (``lo``/``hi``, when ``runtime`` is given)
    and, like every message, the host's ``mono`` (monotonic s) and ``wall_ns`` at the call. ``phases``: the
    newest ``gait.phase`` estimates apart from ``events`` (one per IMU sample: bounded, for soak runs)."""

    def __init__(self, runtime=None, keep_phases: int = 4096) -> None:
        self.runtime = runtime
        self.events: list = []
        self.phases: deque = deque(maxlen=keep_phases)

    def _note(self, kind: str, value, fields: dict) -> bool:
        self.events.append((kind, value, dict(fields, mono=time.monotonic(), wall_ns=time.time_ns())))
        return True

    def publish_trajectory(self, traj, channels, **kw) -> bool:
        last = self.runtime.safety.last_result if self.runtime is not None else None
        lo: Optional[np.ndarray] = None if last is None else last.lo
        hi: Optional[np.ndarray] = None if last is None else last.hi
        return self._note("traj", np.array(traj, np.float32), dict(kw, channels=list(channels), lo=lo, hi=hi))

    def publish_status(self, status, reason="", **kw) -> bool:
        return self._note("status", status, dict(kw, reason=reason))

    def publish_phase(self, estimate, **kw) -> bool:
        self.phases.append((estimate, kw))
        return True

    def publish_identity(self, walker_id, distance=float("nan"), confidence=0.0, **kw) -> bool:
        return self._note("identity", walker_id, dict(kw, distance=distance, confidence=confidence))

    def stop(self) -> None:
        pass
