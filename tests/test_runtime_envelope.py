"""What leaves the runtime around IMU stalls: no trajectory under HOLD, no reference from stale backlog,
plausible cycles only, limits at the published cycle_s, real phase, refreshed HOLD reasons, HOLDs counted.

One scenario on a simulated clock (the worker takes each sample before the clock moves on, as in real
time): walk, a 10 s stall whose backlog then arrives in a burst with its old timestamps (a sender that
keeps its schedule), walk, a 3 s stall without backlog, walk.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from metagait_edge.runtime.config import CalibrationConfig, EdgeConfig  # noqa: E402
from metagait_edge.runtime.orchestrator import Runtime  # noqa: E402
from metagait_edge.runtime.profiles import ProfileStore  # noqa: E402
from metagait_edge.runtime.virtual_walker import synthetic_walker  # noqa: E402
from metagait_edge.runtime.wire_recorder import WireRecorder  # noqa: E402

RATE = 58.8


def _taken(rt) -> int:
    return rt.stats.samples + rt.stats.nonfinite_samples + rt.gate.stale_samples


def _wait(rt, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while _taken(rt) < n and time.monotonic() < deadline:
        time.sleep(0.0002)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("envelope")
    walker = synthetic_walker(seconds=60)
    sim = [0.0]
    rt = Runtime(EdgeConfig(sources=[], calibration=CalibrationConfig(directory=tmp)), store=ProfileStore(tmp),
                 clock=lambda: sim[0])
    rt.publisher = WireRecorder(rt)
    marks = {}
    k = [0]  # next sample index; its sensor time is k / RATE

    def walk(n):
        for _ in range(n):
            sim[0] = max(sim[0], k[0] / RATE)
            taken = _taken(rt)
            rt.push_imu(walker.samples[k[0] % len(walker.samples)], k[0] / RATE)
            k[0] += 1
            _wait(rt, taken + 1)

    def stall(seconds, backlog):
        start = len(rt.publisher.events)
        for _ in range(int(seconds * 50)):  # the watchdog runs meanwhile (20 ms steps of simulated time)
            sim[0] += 0.02
            time.sleep(0.001)
        time.sleep(0.05)
        n = int(seconds * RATE)
        if backlog:  # the sender catches up: every overdue frame at once, each with its scheduled time
            taken = _taken(rt)
            for _ in range(n):
                rt.push_imu(walker.samples[k[0] % len(walker.samples)], k[0] / RATE)
                k[0] += 1
            _wait(rt, taken + n)
        else:
            k[0] += n
        return start

    rt.start()
    try:
        walk(500)
        marks["stall1"] = stall(10.0, backlog=True)
        marks["burst_end"] = len(rt.publisher.events)
        walk(400)
        marks["stall2"] = stall(3.0, backlog=False)
        walk(400)
        time.sleep(0.1)
    finally:
        rt.stop()
    return rt, rt.publisher.events, marks


def _trajectories(events):
    return [(i, kw) for i, (kind, _, kw) in enumerate(events) if kind == "traj"]


def test_every_trajectory_follows_a_status_that_is_not_hold(scenario):
    _, events, _ = scenario
    status = "HOLD"  # the runtime starts in HOLD ("starting")
    n = 0
    for kind, value, _kw in events:
        if kind == "status":
            status = value
        else:
            assert status != "HOLD", "trajectory published while the last status was HOLD"
            n += 1
    assert n >= 15


def test_stale_backlog_is_dropped_and_counted_never_turned_into_references(scenario):
    rt, events, marks = scenario
    burst = events[marks["stall1"]:marks["burst_end"]]
    assert not [e for e in burst if e[0] == "traj"], "a trajectory was computed from the stall's backlog"
    assert rt.gate.stale_samples >= int(10.0 * RATE) - 10  # the backlog, all of it
    assert "stale=" in rt.status_line()


def test_a_gap_restarts_detection_and_every_cycle_is_plausible(scenario):
    rt, events, _ = scenario
    cycles = [kw["cycle_s"] for _, kw in _trajectories(events)]
    assert rt.gate.gaps >= 2  # after the backlog (dropped) and after the stall without backlog
    assert all(0.4 <= c <= 2.0 for c in cycles), cycles


def test_published_values_respect_angle_and_rate_limits_at_their_own_cycle_s(scenario):
    rt, events, _ = scenario
    limits = rt.safety.config.joint_limits
    for kind, traj, kw in events:
        if kind != "traj":
            continue
        for row, name, lo, hi in zip(traj, kw["channels"], kw["lo"], kw["hi"]):
            assert lo - 1e-4 <= row.min() and row.max() <= hi + 1e-4
            step = np.abs(np.diff(row.astype(np.float64)))
            assert step.max() <= limits[name].max_rate_dps * kw["cycle_s"] / 100 + 1e-3


def test_phase_is_the_estimate_at_publish_time_not_zero(scenario):
    _, events, _ = scenario
    phases = [kw["phase"] for _, kw in _trajectories(events)]
    # The IC is detected behind the detector's low-pass (a few samples): the phase at publish time is past 0.
    assert all(0.0 < p < 0.3 for p in phases), phases
    for _, kw in _trajectories(events):  # t_input_ns: the newest IMU sample used, never after t_ns
        assert 0 < kw["t_input_ns"] <= kw["t_ns"] and kw["t_ns"] - kw["t_input_ns"] < 0.1e9
    ok_status = [kw["phase"] for kind, s, kw in events if kind == "status" and s != "HOLD"]
    assert ok_status and all(0.0 <= p < 1.0 for p in ok_status) and max(ok_status) > 0.0


def test_hold_reason_is_refreshed_and_holds_are_counted(scenario):
    rt, events, marks = scenario
    stall = events[marks["stall1"]:marks["burst_end"]]
    reasons = [kw["reason"] for kind, s, kw in stall if kind == "status" and s == "HOLD"]
    assert len(set(r for r in reasons if r.startswith("IMU stale"))) >= 3, reasons  # the age grows
    statuses = ["HOLD"] + [s for kind, s, _ in events if kind == "status"]  # the runtime starts in HOLD
    entered = sum(1 for a, b in zip(statuses, statuses[1:]) if a != "HOLD" and b == "HOLD")
    assert rt.stats.holds >= 2 and rt.stats.holds == entered  # both stalls; the summary's holds= counts them
    last = [kw["counters"] for kind, _, kw in events if kind == "status"][-1]  # counted on the wire too
    assert last["holds"] == rt.stats.holds and last["stale"] == rt.gate.stale_samples > 0 and last["gaps"] >= 2
