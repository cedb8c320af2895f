"""gait/phase from the default graph (`ros2 launch metagait_edge gait.launch.py`) on a real HuGaDB walk.

One GaitPhase per IMU sample from trajectory_node: its type, its rate against the IMU's, stamps at the IMU
samples, and phases in [0, 1) that advance through the strides of the walk; then SIGINT ends every node.
"""

from __future__ import annotations

import signal

import numpy as np
import pytest
from sensor_msgs.msg import Imu

from conftest import WALK, assert_clean_exit, launch_gait, spin_for, spin_until, wait_state
from metagait_edge import ros
from metagait_edge_interfaces.msg import GaitPhase
from metagait_edge_ros.common import SENSOR_QOS

NODES = {"imu_node", "trajectory_node", "calibration_node"}
IMU_RATE_HZ = 58.8  # imu_node's default imu_rate_hz: HuGaDB's rate


@pytest.fixture(scope="module")
def graph(tmp_path_factory, probe):
    tmp = tmp_path_factory.mktemp("phase")
    launched = launch_gait(tmp, "phase", {"serial_port": f"hugadb:{WALK}"}, {"calibration_dir": str(tmp / "walkers")})
    try:
        for node in ("imu_node", "trajectory_node"):
            assert wait_state(probe, node, "active", 90.0) == "active", launched.output()[-4000:]
        yield launched
    finally:
        if launched.returncode is None and launched.proc.poll() is None:
            launched.stop()


def test_gait_phase_at_the_imu_rate_with_advancing_phase(graph, probe):
    got, imu = [], []
    sub = probe.create_subscription(GaitPhase, f"/{ros.PHASE_TOPIC}", got.append, SENSOR_QOS)
    sub_imu = probe.create_subscription(Imu, f"/{ros.imu_topic('rs')}", imu.append, SENSOR_QOS)
    try:
        # The estimator warms up (HOLD) over its first samples; wait for the network's phase, then measure.
        assert spin_until(probe, lambda: any(m.status == GaitPhase.STATUS_OK for m in got), 60.0), graph.output()[-3000:]
        got.clear()
        imu.clear()
        spin_for(probe, 6.0)
    finally:
        probe.destroy_subscription(sub)
        probe.destroy_subscription(sub_imu)
    types = dict(probe.get_topic_names_and_types())
    assert types[f"/{ros.PHASE_TOPIC}"] == ["metagait_edge_interfaces/msg/GaitPhase"]
    stamps = np.array([m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in got])
    assert len(got) > 100 and (np.diff(stamps) > 0).all()  # one per IMU sample, in order
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    imu_stamps = np.array([m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in imu])
    imu_rate = (len(imu_stamps) - 1) / (imu_stamps[-1] - imu_stamps[0])
    # One phase per IMU sample: the rate the IMU measured here (58.8 Hz nominal), not a second one lost.
    assert 0.9 * imu_rate <= rate <= 1.1 * imu_rate, (rate, imu_rate)
    assert 0.8 * IMU_RATE_HZ <= rate <= 1.2 * IMU_RATE_HZ, (rate, imu_rate)
    ok = [m for m in got if m.status == GaitPhase.STATUS_OK]
    assert len(ok) > 0.9 * len(got), [(m.status, m.reason) for m in got if m.status != GaitPhase.STATUS_OK][:5]
    phase = np.array([m.phase_right for m in ok])
    assert ((phase >= 0) & (phase < 1)).all() and all(0 <= m.phase_left < 1 for m in ok)
    steps = np.diff(phase)
    assert np.mean((steps > 0) | (steps < -0.5)) > 0.95  # advances, wrapping once a stride
    assert (steps < -0.5).sum() >= 3  # several strides in 6 s of walking
    assert all(m.source == "phasenet" and m.mode in ("walking", "running", "stairs_up", "stairs_down") for m in ok)
    assert sum(m.mode == "walking" for m in ok) > 0.9 * len(ok)
    assert 0.5 < np.median([m.phase_rate for m in ok]) < 2.0  # cycles per second of a walk


def test_sigint_ends_every_node_cleanly(graph):
    graph.stop(signal.SIGINT)
    assert_clean_exit(graph, NODES)
