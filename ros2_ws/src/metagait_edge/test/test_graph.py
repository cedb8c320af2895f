"""The default graph as a user starts it: `ros2 launch metagait_edge gait.launch.py`, fed by a real HuGaDB walk.

One launch for the module (starting the nodes imports torch twice: seconds on 2 cores); the tests run in
file order on it: topics, rates and QoS as docs/ros2.md states them, the ZeroMQ output read by
`metagait-edge listen`, gait/phase at the IMU rate, runtime parameters, the Calibrate action, lifecycle transitions, and last the
SIGINT that must end every node with status 0.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from action_msgs.msg import GoalStatus
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.action import ActionClient
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
from sensor_msgs.msg import Imu
from trajectory_msgs.msg import JointTrajectory

from conftest import (
    WALK, assert_clean_exit, call, change_state, free_port, launch_gait, lifecycle_state,
    port_is_free, spin_for, spin_until, wait_state,
)
from metagait_edge import ros
from metagait_edge_interfaces.action import Calibrate
from metagait_edge_interfaces.msg import GaitPhase, GaitStatus, GaitTrajectory
from metagait_edge_ros.common import DEFAULT_QOS, SENSOR_QOS

NODES = {"imu_node", "trajectory_node", "calibration_node"}
IMU_RATE_HZ = 58.8  # imu_node's default imu_rate_hz: HuGaDB's rate


@pytest.fixture(scope="module")
def graph(tmp_path_factory, probe):
    tmp = tmp_path_factory.mktemp("graph")
    port = free_port()
    launched = launch_gait(tmp, "graph", {"serial_port": f"hugadb:{WALK}", "zmq_endpoint": f"tcp://127.0.0.1:{port}"},
                           {"calibration_dir": str(tmp / "walkers"), "trajectory_rate_hz": 20.0,
                            "status_rate_hz": 1.0, "calibration_timeout_s": 60.0})
    launched.port, launched.walkers = port, tmp / "walkers"
    try:
        for node in ("imu_node", "trajectory_node"):
            assert wait_state(probe, node, "active", 90.0) == "active", launched.output()[-4000:]
        # Measured rates must not include calibration_node's start (importing torch takes both cores for seconds)
        calibrate = ActionClient(probe, Calibrate, "/calibrate")
        assert calibrate.wait_for_server(timeout_sec=90.0), launched.output()[-4000:]
        calibrate.destroy()
        yield launched
    finally:
        if launched.returncode is None and launched.proc.poll() is None:
            launched.stop()


class Recorder:
    """Messages of one topic with their arrival times."""

    def __init__(self, node, msg_type, topic: str, qos) -> None:
        self.items: list[tuple[float, object]] = []
        self.node = node
        self.sub = node.create_subscription(msg_type, topic, lambda m: self.items.append((time.monotonic(), m)), qos)

    def rate_hz(self, since: float) -> float:
        times = [t for t, _ in self.items if t >= since]
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 else 0.0

    def messages(self, since: float = 0.0) -> list:
        return [m for t, m in self.items if t >= since]

    def close(self) -> None:
        self.node.destroy_subscription(self.sub)


def record(probe, seconds: float, specs: dict) -> dict[str, Recorder]:
    recorders = {topic: Recorder(probe, t, topic, qos) for topic, (t, qos) in specs.items()}
    spin_for(probe, seconds)
    for r in recorders.values():
        r.close()
    return recorders


def set_param(probe, node: str, name: str, value) -> tuple[bool, str]:
    pv = ParameterValue()
    if isinstance(value, bool):
        pv.type, pv.bool_value = ParameterType.PARAMETER_BOOL, value
    elif isinstance(value, float):
        pv.type, pv.double_value = ParameterType.PARAMETER_DOUBLE, value
    elif isinstance(value, int):
        pv.type, pv.integer_value = ParameterType.PARAMETER_INTEGER, value
    else:
        pv.type, pv.string_value = ParameterType.PARAMETER_STRING, value
    client = probe.create_client(SetParameters, f"/{node}/set_parameters")
    try:
        result = call(probe, client, SetParameters.Request(parameters=[ParameterMsg(name=name, value=pv)]))
    finally:
        probe.destroy_client(client)
    return result.results[0].successful, result.results[0].reason


def trajectories(probe, seconds: float) -> list[GaitTrajectory]:
    return record(probe, seconds, {ros.TRAJECTORY_TOPIC: (GaitTrajectory, DEFAULT_QOS)})[ros.TRAJECTORY_TOPIC].messages()


# ----------------------------------------------------------------------------------------- topics
def test_topics_types_qos_and_rates(graph, probe):
    imu_topics = {f"/{ros.imu_topic(s)}": (Imu, SENSOR_QOS) for s in ros.SENSORS}
    specs = {**imu_topics, f"/{ros.TRAJECTORY_TOPIC}": (GaitTrajectory, DEFAULT_QOS),
             f"/{ros.JOINT_TRAJECTORY_TOPIC}": (JointTrajectory, DEFAULT_QOS),
             f"/{ros.STATUS_TOPIC}": (GaitStatus, DEFAULT_QOS)}
    # Let the walk pass its first strides (the runtime holds until it has a cycle), then measure.
    assert spin_until(probe, lambda: len(trajectories(probe, 1.0)) > 0 and True, 40.0)
    start = time.monotonic()
    rec = record(probe, 8.0, specs)
    types = dict(probe.get_topic_names_and_types())
    expected_types = {"/" + ros.imu_topic(s): "sensor_msgs/msg/Imu" for s in ros.SENSORS}
    expected_types.update({f"/{ros.TRAJECTORY_TOPIC}": "metagait_edge_interfaces/msg/GaitTrajectory",
                           f"/{ros.JOINT_TRAJECTORY_TOPIC}": "trajectory_msgs/msg/JointTrajectory",
                           f"/{ros.STATUS_TOPIC}": "metagait_edge_interfaces/msg/GaitStatus"})
    for topic, type_name in expected_types.items():
        assert types.get(topic) == [type_name], (topic, types.get(topic))
    # calibration/profile is latched (reliable, transient local) so that a restarted trajectory node catches up
    profile = probe.get_publishers_info_by_topic("/calibration/profile")
    assert profile and all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                           and p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in profile), profile
    # QoS as documented: IMU best effort (sensor data), outputs reliable.
    for topic in expected_types:
        pubs = probe.get_publishers_info_by_topic(topic)
        assert pubs, topic
        want = ReliabilityPolicy.BEST_EFFORT if topic.startswith("/imu/") else ReliabilityPolicy.RELIABLE
        assert all(p.qos_profile.reliability == want for p in pubs), (topic, [p.qos_profile for p in pubs])
    # Rates: IMU at the recording's 58.8 Hz per sensor; trajectories at trajectory_rate_hz (20) plus one per
    # new cycle; one JointTrajectory per new cycle (a stride is about 1 s); status at 1 Hz plus changes.
    for topic in imu_topics:
        assert 50.0 <= rec[topic].rate_hz(start) <= 68.0, (topic, rec[topic].rate_hz(start))
    traj_rate = rec[f"/{ros.TRAJECTORY_TOPIC}"].rate_hz(start)
    assert 17.0 <= traj_rate <= 24.0, traj_rate
    assert 0.5 <= rec[f"/{ros.JOINT_TRAJECTORY_TOPIC}"].rate_hz(start) <= 2.5
    assert 0.8 <= rec[f"/{ros.STATUS_TOPIC}"].rate_hz(start) <= 3.0
    graph.rates = {"imu": rec["/imu/rs"].rate_hz(start), "trajectory": traj_rate}


def test_trajectories_are_bounded_stamped_and_phased(graph, probe):
    got = trajectories(probe, 4.0)
    assert len(got) >= 60
    # the runtime may HOLD (a cycle outside the envelope, a late sample): then there is nothing to track
    held = [m for m in got if m.status == GaitTrajectory.STATUS_STALE]
    assert all(m.num_points == 0 and len(m.data) == 0 for m in held)
    got = [m for m in got if m.status != GaitTrajectory.STATUS_STALE]
    assert len(got) >= 40, f"{len(held)} of {len(held) + len(got)} messages held"
    now = probe.get_clock().now().nanoseconds
    phases = []
    for m in got:
        assert m.status in (GaitTrajectory.STATUS_OK, GaitTrajectory.STATUS_CLAMPED, GaitTrajectory.STATUS_FALLBACK)
        data = np.asarray(m.data, np.float32)
        assert m.num_channels == len(m.channel_names) and data.size == m.num_channels * m.num_points == len(data)
        assert m.num_points == 101 and np.isfinite(data).all()
        assert 0.4 < m.cycle_duration < 2.5
        assert 0.0 <= m.phase < 1.0
        phases.append(m.phase)
        # the stamp is the newest IMU sample used: it can be a few samples old, never seconds
        age_s = (now - (m.header.stamp.sec * 10**9 + m.header.stamp.nanosec)) / 1e9
        assert -0.05 < age_s < 5.0
    # phase advances through the cycle between heel strikes
    assert np.ptp(phases) > 0.5, phases


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
    pubs = probe.get_publishers_info_by_topic(f"/{ros.PHASE_TOPIC}")  # sensor data QoS, as docs/ros2.md states
    assert pubs and all(p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in pubs), pubs
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


def test_zeromq_output_of_the_graph_is_read_by_listen(graph):
    result = subprocess.run([sys.executable, "-m", "metagait_edge", "listen", "--endpoint", f"tcp://127.0.0.1:{graph.port}",
                             "--count", "300", "--timeout", "20", "--quiet", "--require", "gait.phase"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ", 0 invalid" in result.stdout, result.stdout
    received = {m[0]: int(m[1]) for m in __import__("re").findall(r"  (\S+): (\d+) received", result.stdout)}
    assert received.get("gait.trajectory", 0) >= 20, result.stdout
    assert received.get("gait.phase", 0) >= 100, result.stdout  # one per IMU sample (58.8 Hz)


# ----------------------------------------------------------------------------------------- parameters
def test_runtime_parameters_take_effect_and_bad_values_are_refused(graph, probe):
    ok, reason = set_param(probe, "trajectory_node", "trajectory_rate_hz", 5.0)
    assert ok, reason
    start = time.monotonic()
    rec = record(probe, 5.0, {f"/{ros.TRAJECTORY_TOPIC}": (GaitTrajectory, DEFAULT_QOS)})
    slow = rec[f"/{ros.TRAJECTORY_TOPIC}"].rate_hz(start)
    assert 4.0 <= slow <= 8.0, slow  # 5 Hz plus the new cycles
    assert set_param(probe, "trajectory_node", "trajectory_rate_hz", 20.0)[0]
    ok, reason = set_param(probe, "trajectory_node", "trajectory_rate_hz", -1.0)
    assert not ok and "trajectory_rate_hz" in reason
    ok, reason = set_param(probe, "trajectory_node", "serial_port", "/dev/ttyUSB0")
    assert not ok and "serial_port" in reason and "configure" in reason
    ok, reason = set_param(probe, "calibration_node", "max_shots", 0)
    assert not ok and "max_shots" in reason


# ----------------------------------------------------------------------------------------- calibration
@pytest.fixture(scope="module")
def calibrate_client(graph, probe):
    client = ActionClient(probe, Calibrate, "/calibrate")
    assert client.wait_for_server(timeout_sec=90.0), graph.output()[-3000:]
    yield client
    client.destroy()


def send_goal(probe, client, walker: str, shots: int, feedback: list | None = None):
    future = client.send_goal_async(Calibrate.Goal(walker=walker, shots=shots),
                                    feedback_callback=(lambda m: feedback.append(m.feedback)) if feedback is not None else None)
    assert spin_until(probe, future.done, 20.0)
    return future.result()


def wait_result(probe, handle, timeout: float):
    future = handle.get_result_async()
    assert spin_until(probe, future.done, timeout), "no calibration result in time"
    return future.result()


def test_calibrate_rejects_bad_goals(graph, probe, calibrate_client):
    assert not send_goal(probe, calibrate_client, "", 5).accepted
    assert not send_goal(probe, calibrate_client, "ana", 0).accepted
    assert not send_goal(probe, calibrate_client, "ana", 11).accepted  # max_shots 10


def test_calibrate_succeeds_and_the_trajectory_node_runs_the_profile(graph, probe, calibrate_client):
    feedback: list = []
    handle = send_goal(probe, calibrate_client, "ana", 5, feedback)
    assert handle.accepted
    result = wait_result(probe, handle, 120.0)
    assert result.status == GoalStatus.STATUS_SUCCEEDED, (result.result.reason, graph.output()[-3000:])
    assert result.result.success and math.isfinite(result.result.error_after)
    assert result.result.error_after < result.result.error_before
    assert feedback and all(f.cycles_required == 5 for f in feedback)
    assert feedback[-1].cycles_collected == 5
    assert (graph.walkers / "ana").is_dir()
    # the running trajectory node runs the new profile without a restart: personalized references for "ana"
    assert spin_until(probe, lambda: any(m.personalized and m.walker_id == "ana" for m in trajectories(probe, 1.0)), 60.0)


def _profile_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cancel_and_failure_keep_the_previous_profile(graph, probe, calibrate_client):
    before = _profile_bytes(graph.walkers / "ana")
    assert before
    handle = send_goal(probe, calibrate_client, "ana", 5, [])
    assert handle.accepted
    spin_for(probe, 1.5)
    cancel = handle.cancel_goal_async()
    assert spin_until(probe, cancel.done, 10.0)
    assert wait_result(probe, handle, 30.0).status == GoalStatus.STATUS_CANCELED
    # a calibration that cannot finish (no IMU data) times out and stores nothing
    assert change_state(probe, "imu_node", "deactivate")
    assert set_param(probe, "calibration_node", "calibration_timeout_s", 3.0)[0]
    handle = send_goal(probe, calibrate_client, "ana", 5, [])
    result = wait_result(probe, handle, 30.0)
    assert result.status == GoalStatus.STATUS_ABORTED and not result.result.success and result.result.reason
    assert _profile_bytes(graph.walkers / "ana") == before
    assert set_param(probe, "calibration_node", "calibration_timeout_s", 60.0)[0]
    assert change_state(probe, "imu_node", "activate")
    assert spin_until(probe, lambda: any(m.personalized and m.walker_id == "ana" for m in trajectories(probe, 1.0)), 60.0)


def test_walker_parameter_switches_the_profile_at_runtime(graph, probe):
    assert set_param(probe, "trajectory_node", "walker", "nobody")[0]  # no profile: generic model, flagged
    assert spin_until(probe, lambda: any(m.walker_id == "nobody" for m in trajectories(probe, 1.0)), 20.0)
    got = [m for m in trajectories(probe, 2.0) if m.walker_id == "nobody" and m.status != GaitTrajectory.STATUS_STALE]
    assert got and all(not m.personalized and m.status == GaitTrajectory.STATUS_FALLBACK for m in got)
    assert graph.wait_output(r"no usable profile for 'nobody'", 5.0)
    assert set_param(probe, "trajectory_node", "walker", "ana")[0]
    assert spin_until(probe, lambda: any(m.personalized and m.walker_id == "ana" for m in trajectories(probe, 1.0)), 60.0)


# ----------------------------------------------------------------------------------------- lifecycle
def test_an_impossible_transition_is_refused_and_the_node_lives_on(graph, probe):
    assert lifecycle_state(probe, "imu_node") == "active"
    assert not change_state(probe, "imu_node", "activate")  # already active: rclpy alone would kill the node
    assert lifecycle_state(probe, "imu_node") == "active"
    assert graph.wait_output(r"\[imu_node\]: refused lifecycle transition", 5.0)


def test_deactivate_stops_and_activate_resumes(graph, probe):
    imu = {f"/{ros.imu_topic('rs')}": (Imu, SENSOR_QOS)}
    traj = {f"/{ros.TRAJECTORY_TOPIC}": (GaitTrajectory, DEFAULT_QOS)}
    assert change_state(probe, "imu_node", "deactivate")
    spin_for(probe, 0.5)
    rec = record(probe, 1.5, {**imu, **traj})
    assert not rec[f"/{ros.imu_topic('rs')}"].messages()
    # without input the trajectory node holds: STATUS_STALE, no samples
    stale = rec[f"/{ros.TRAJECTORY_TOPIC}"].messages()
    assert stale and all(m.status == GaitTrajectory.STATUS_STALE and len(m.data) == 0 for m in stale[-5:])
    assert change_state(probe, "imu_node", "activate")
    assert spin_until(probe, lambda: len(record(probe, 1.0, imu)[f"/{ros.imu_topic('rs')}"].messages()) > 30, 10.0)

    assert change_state(probe, "trajectory_node", "deactivate")
    spin_for(probe, 0.3)
    assert not record(probe, 1.5, traj)[f"/{ros.TRAJECTORY_TOPIC}"].messages()
    assert change_state(probe, "trajectory_node", "activate")
    assert spin_until(probe, lambda: len(trajectories(probe, 1.0)) > 5, 15.0)


def test_cleanup_releases_the_zeromq_socket_and_configure_rebinds_it(graph, probe):
    assert not port_is_free(graph.port)
    assert change_state(probe, "trajectory_node", "deactivate")
    assert change_state(probe, "trajectory_node", "cleanup")
    assert port_is_free(graph.port)
    assert change_state(probe, "trajectory_node", "configure")
    assert not port_is_free(graph.port)
    assert change_state(probe, "trajectory_node", "activate")
    assert spin_until(probe, lambda: len(trajectories(probe, 1.0)) > 5, 30.0)


def test_sigint_ends_every_node_cleanly(graph):
    graph.stop(signal.SIGINT)
    assert_clean_exit(graph, NODES)
