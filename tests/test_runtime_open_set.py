"""An unknown or uncertain walker gets the generic model at once, flagged (issue 18 item 3): the runtime fed the
camera recognizer's answers (runtime/orchestrator.py _on_identity), with a calibrated profile for the nearest
walker that must NOT be handed over."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

pytest.importorskip("torch")

from metagait_edge.runtime.camera import IdentityResult  # noqa: E402
from metagait_edge.runtime.safety import NO_PROFILE  # noqa: E402
from test_orchestrator import Collect, _feed, _runtime  # noqa: E402

from metagait_edge.runtime.virtual_walker import synthetic_walker  # noqa: E402


class CollectIdentity(Collect):
    def publish_identity(self, walker_id, distance, confidence, **kw):
        self.identity.append((walker_id, distance, confidence, kw))
        return True


def _answer(walker, nearest, reason=""):
    accepted = walker is not None
    return IdentityResult(walker_id=walker, nearest_id=nearest, distance=0.002 if accepted else 0.009,
                          confidence=0.8 if accepted else 0.0, num_frames=30, embedding=np.zeros(4, np.float32),
                          reason=reason)


@pytest.mark.slow
def test_unknown_or_uncertain_walker_gets_the_generic_model_flagged_not_the_nearest_profile(tmp_path):
    walker = synthetic_walker(seconds=40)
    rt, sim = _runtime(tmp_path)
    rt.publisher = CollectIdentity()
    rt.start()
    try:
        result = {}
        th = threading.Thread(target=lambda: result.setdefault("o", rt.calibrate("alice", 5, lambda n, k: None,
                                                                                 timeout_s=30)))
        th.start()
        _feed(rt, sim, walker.samples, 0, 700)
        th.join(30)
        assert result["o"].success, result["o"].reason
        for _ in range(2):  # two agreeing accepted answers: alice's profile
            rt._on_identity(_answer("alice", "alice"))
        assert rt.walker == "alice" and rt.publisher.identity[-1][3]["personalized"] is True
        n0 = len(rt.publisher.traj)
        _feed(rt, sim, walker.samples, 700, 900)
        assert all(kw["personalized"] for _, kw in rt.publisher.traj[n0 + 1:])

        for reason in ("unknown: nearest alice at 0.009 > threshold 0.0045",
                       "uncertain: alice and bob both within threshold 0.0045"):
            rt._on_identity(_answer("alice", "alice"))
            rt._on_identity(_answer("alice", "alice"))
            rt._on_identity(_answer(None, "alice", reason))  # one rejected answer drops alice at once
            assert rt.walker is None and rt.confidence == 0.0
            walker_id, distance, confidence, kw = rt.publisher.identity[-1]
            assert walker_id is None and confidence == 0.0 and kw["personalized"] is False and math.isfinite(distance)
            assert kw.get("reason"), kw  # flagged: why nobody's profile runs (the camera's reason, or a conflict)
            n1 = len(rt.publisher.traj)
            _feed(rt, sim, walker.samples, 900, 1100)
            generic = rt.publisher.traj[n1 + 1:]
            assert generic and all(not kw["personalized"] and kw["walker_id"] is None and kw["status"] == "DEGRADED"
                                   and kw["reason"].startswith(NO_PROFILE) for _, kw in generic)
    finally:
        rt.stop()
