"""The runtime orchestrator (metagait_edge/runtime/orchestrator.py) on a simulated clock, no hardware."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from metagait_edge.runtime.calibration import CycleRecord  # noqa: E402
from metagait_edge.runtime.config import CalibrationConfig, EdgeConfig, IdentityConfig  # noqa: E402
from metagait_edge.runtime.orchestrator import Runtime  # noqa: E402
from metagait_edge.runtime.profiles import ProfileStore  # noqa: E402
from metagait_edge.runtime.virtual_walker import synthetic_walker  # noqa: E402


class Collect:
    """A publisher stand-in that records calls (the orchestrator, not the ZeroMQ layer, is under test)."""

    def __init__(self):
        self.traj, self.status, self.identity, self.phase = [], [], [], []

    def publish_trajectory(self, traj, channels, **kw):
        assert np.isfinite(traj).all()
        self.traj.append((traj, kw))
        return True

    def publish_status(self, status, reason="", **kw):
        self.status.append((status, reason))
        return True

    def publish_identity(self, *a, **kw):
        self.identity.append((a, kw))
        return True

    def publish_phase(self, estimate, **kw):
        self.phase.append((estimate, kw))
        return True

    def stop(self):
        pass


def _runtime(tmp_path, identity=None, **kw):
    torch.set_num_threads(1)
    sim = [0.0]
    cfg = EdgeConfig(sources=[], calibration=CalibrationConfig(directory=tmp_path, max_gap_s=0.1),
                     identity=identity or IdentityConfig())
    rt = Runtime(cfg, publisher=Collect(), store=ProfileStore(tmp_path), clock=lambda: sim[0], **kw)
    return rt, sim


def _taken(rt) -> int:
    return rt.stats.samples + rt.stats.nonfinite_samples + rt.gate.stale_samples


def _feed(rt, sim, samples, start, stop, rate=58.8, values=None):
    """Push samples on the simulated clock, which moves on only once the worker has taken the previous
    sample, as in real time (the runtime drops a sample that is already stale when the worker gets to it)."""
    for k in range(start, stop):
        sim[0] = k / rate
        taken = _taken(rt)
        rt.push_imu(samples[k % len(samples)] if values is None else values, sim[0])
        deadline = time.monotonic() + 2.0
        while _taken(rt) == taken and time.monotonic() < deadline:
            time.sleep(0.0002)
    time.sleep(0.1)


def _calibrate_while_walking(rt, sim, samples, name, stop, **kw):
    """Calibrate ``name`` (5 shots) on a thread while samples 0..stop are fed; the outcome."""
    result = {}
    th = threading.Thread(target=lambda: result.setdefault("o", rt.calibrate(name, 5, timeout_s=30, **kw)))
    th.start()
    _feed(rt, sim, samples, 0, stop)
    th.join(30)
    return result["o"]


@pytest.fixture(scope="module")
def walker():
    return synthetic_walker(seconds=40)


def test_cycles_become_bounded_generic_trajectories(tmp_path, walker):
    rt, sim = _runtime(tmp_path)
    rt.start()
    try:
        _feed(rt, sim, walker.samples, 0, 900)
    finally:
        rt.stop()
    pub = rt.publisher
    assert rt.stats.cycles >= 10  # 0.9 Hz gait over 15 s
    assert len(pub.traj) == rt.stats.published >= 10
    traj, kw = pub.traj[-1]
    assert traj.shape == (6, 101) and kw["personalized"] is False and kw["status"] == "DEGRADED"
    assert 0.8 < kw["cycle_s"] < 1.4 and 0 <= kw["phase"] < 1
    last = rt.safety.last_result  # the limits applied to the last trajectory, in the published frame
    assert np.array_equal(last.trajectory, traj)
    for j, name in enumerate(rt.channel_names):
        assert last.lo[j] - 1e-4 <= traj[j].min() and traj[j].max() <= last.hi[j] + 1e-4


def test_stale_imu_publishes_hold_and_reference_is_withdrawn(tmp_path, walker):
    rt, sim = _runtime(tmp_path)
    rt.start()
    try:
        _feed(rt, sim, walker.samples, 0, 400)
        fresh = rt.reference()
        sim[0] += 1.0  # no sample for a second
        time.sleep(0.2)
        stale = rt.reference()
    finally:
        rt.stop()
    assert ("HOLD" in [s for s, _ in rt.publisher.status])
    assert any("IMU stale" in r for s, r in rt.publisher.status if s == "HOLD")
    assert fresh is not None and fresh.status in ("OK", "DEGRADED")
    assert stale is None and rt.stats.last_status == "HOLD"  # nothing to follow while the input is stale


def test_calibration_then_personalized_output_and_confidence_gate(tmp_path, walker):
    rt, sim = _runtime(tmp_path, IdentityConfig(imu=False))  # identity set by hand below, not from the strides
    rt.start()
    progress = []
    try:
        o = _calibrate_while_walking(rt, sim, walker.samples, "alice", 700, feedback=lambda n, k: progress.append(n))
        assert o.success, o.reason
        assert o.error_after < o.error_before
        assert progress[-1] == 5 and ProfileStore(tmp_path).exists("alice")
        rt.set_identity("alice", 0.9)
        n0 = len(rt.publisher.traj)
        _feed(rt, sim, walker.samples, 700, 1000)
        personalized = rt.publisher.traj[n0 + 1:]  # the first may have been generated before the switch
        assert personalized and all(kw["personalized"] and kw["status"] == "OK" for _, kw in personalized)
        rt.set_identity("alice", 0.2)  # below the gate: generic model, flagged
        n1 = len(rt.publisher.traj)
        _feed(rt, sim, walker.samples, 1000, 1250)
        gated = rt.publisher.traj[n1 + 1:]
        assert gated and all(not kw["personalized"] and kw["status"] == "DEGRADED" for _, kw in gated)
    finally:
        rt.stop()


def test_calibration_enrolls_the_wearer_whom_the_strides_then_identify(tmp_path, walker):
    rt, sim = _runtime(tmp_path)
    rt.start()
    try:
        o = _calibrate_while_walking(rt, sim, walker.samples, "alice", 700)
        assert o.success, o.reason
        assert "imu_identity" in ProfileStore(tmp_path).load("alice").meta
        _feed(rt, sim, walker.samples, 700, 1300)  # nobody named the walker: the IMU alone finds alice
        assert rt.identity.imu.walker_id == "alice" and rt.walker == "alice" and rt.has_profile
        assert rt.publisher.traj[-1][1]["personalized"], (rt.identity.imu, rt.publisher.traj[-1][1])
        rt.observe_identity("bob", 0.9)  # the camera disagrees: generic model, conflict counted and explained
        assert rt.walker is None and rt.counters()["identity_conflicts"] == 1
        assert "camera says bob, imu says alice" in rt.identity.fused.reason
        rt.use_walker("nobody")  # named by the operator (ROS walker parameter): the strides do not override it
        _feed(rt, sim, walker.samples, 1300, 1600)
        assert rt.walker == "nobody" and rt.identity.imu.walker_id == "alice"
        seen = []
        rt.identity.observe_stride = lambda cycle, now_s: seen.append(cycle)  # which strides count as evidence
        rt.use_walker(None)
        for mode in ("stairs_up", "walking", "running"):  # the embedding knows walking strides only
            rt._observe_stride(CycleRecord(np.zeros((42, 101), np.float32), np.ones(42, bool), 1.0, 0.02, 0.0, 0, mode))
        assert len(seen) == 1
    finally:
        rt.stop()


def test_a_camera_answer_expires_when_the_camera_falls_silent(tmp_path, walker):
    # IMU identity off: the camera alone names the walker, then loses them from view for longer than
    # identity.evidence_max_age_s; the next cycle runs the generic model, with the reason said and counted.
    rt, sim = _runtime(tmp_path, IdentityConfig(imu=False, evidence_max_age_s=5.0))
    rt.start()
    try:
        _feed(rt, sim, walker.samples, 0, 120)
        for _ in range(2):  # two agreeing answers switch the walker (IdentityVote)
            rt.observe_identity("alice", 0.9)
        assert rt.walker == "alice"
        _feed(rt, sim, walker.samples, 120, 120 + int(4 * 58.8))  # 4 s later: still within the age limit
        assert rt.walker == "alice" and rt.counters()["identity_expired"] == 0
        _feed(rt, sim, walker.samples, 120 + int(4 * 58.8), 120 + int(8 * 58.8))  # 8 s: the answer has expired
        assert rt.walker is None and rt.counters()["identity_expired"] == 1
        assert "identity evidence expired (camera" in rt.identity.fused.reason
        assert rt.publisher.identity[-1][1]["reason"] == rt.identity.fused.reason
        rt.use_walker("alice")  # an operator's choice is not evidence: it does not expire
        _feed(rt, sim, walker.samples, 120 + int(8 * 58.8), 120 + int(16 * 58.8))
        assert rt.walker == "alice"
    finally:
        rt.stop()


def test_build_runtime_rejects_an_unknown_backend_by_name():
    from metagait_edge.runtime.orchestrator import build_runtime

    with pytest.raises(ValueError, match="'cuda'"):
        build_runtime(backend="cuda")


def test_realtime_priority_is_applied_or_refused_with_the_thread_unchanged():
    import os

    from metagait_edge.runtime.realtime import set_realtime_priority

    if not hasattr(os, "sched_getscheduler"):
        pytest.skip("no POSIX scheduling API on this OS")
    release = threading.Event()
    th = threading.Thread(target=release.wait, name="control-like")
    th.start()
    try:
        before = os.sched_getscheduler(th.native_id)
        granted = set_realtime_priority([th], 10)
        policy = os.sched_getscheduler(th.native_id)
        if granted:
            assert policy == os.SCHED_FIFO and os.sched_getparam(th.native_id).sched_priority == 10
        else:  # no CAP_SYS_NICE here: a warning, and the thread keeps its normal policy
            assert policy == before != os.SCHED_FIFO
        assert os.sched_getscheduler(0) != os.SCHED_FIFO  # the caller's own thread is untouched
    finally:
        release.set()
        th.join()
