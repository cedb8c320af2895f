"""Single nodes started as `ros2 run` starts them (the installed executable): bad parameters, a real serial link (a pseudo-terminal), release of the port.

Bad parameters must leave a node unconfigured with a log line that names the parameter and the reason
(rclpy's lifecycle alone would only say "Failed to make transition").
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from sensor_msgs.msg import Imu

from conftest import WALK, change_state, lifecycle_state, ros_run, spin_until
from metagait_edge import ros
from metagait_edge_ros.common import SENSOR_QOS


BAD = {
    # node name: (executable, parameters, what the log must say)
    "bad_port": ("imu_node", {"serial_port": "/dev/ttyMETAGAIT_NOPE"}, r"serial_port: '/dev/ttyMETAGAIT_NOPE' does not exist"),
    "bad_baud": ("imu_node", {"baud_rate": "fast"}, r"baud_rate"),
    "bad_backend": ("trajectory_node", {"backend": "tensorrt10"}, r"backend must be auto, torch, onnxruntime or tensorrt"),
    "bad_model": ("trajectory_node", {"model_path": "/nonexistent/model.safetensors", "zmq_endpoint": "none"},
                  r"model_path: '/nonexistent/model.safetensors' does not exist"),
    "bad_joints": ("trajectory_node", {"joint_names": "[hip_r, hip_r]", "zmq_endpoint": "none"},
                   r"joint_names must be distinct non-empty names"),
    "short_joints": ("trajectory_node", {"joint_names": "[hip_r, knee_r]", "zmq_endpoint": "none"},
                     r"joint_names must name the \d+ channels"),
}


@pytest.fixture(scope="module")
def bad_nodes(probe):
    procs = {name: ros_run(exe, name, params) for name, (exe, params, _) in BAD.items()}
    yield procs
    for p in procs.values():
        p.stop()


@pytest.mark.parametrize("name", list(BAD))
def test_bad_parameter_leaves_the_node_unconfigured_and_says_why(bad_nodes, probe, name):
    launched = bad_nodes[name]
    assert lifecycle_state(probe, name, timeout=90.0) == "unconfigured", launched.output()
    assert not change_state(probe, name, "configure")
    assert lifecycle_state(probe, name) == "unconfigured"
    pattern = BAD[name][2]
    assert launched.wait_output(r"configure failed: .*" + pattern, 10.0), launched.output()[-3000:]


def open_fds(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            out.add(os.readlink(fd))
        except OSError:
            pass
    return out


def test_serial_imu_node_publishes_and_releases_the_port(probe, tmp_path):
    from metagait_edge.ros.bag import read_hugadb_rows, resolve_hugadb_file
    from metagait_edge.runtime.virtual_walker import PtySerialLink

    board = PtySerialLink(read_hugadb_rows(resolve_hugadb_file(WALK)).rows[:3000], 58.8, tmp_path).start()
    device = os.path.realpath(board.path)  # the pseudo-terminal, as /proc/<pid>/fd shows it
    node = ros_run("imu_node", "serial_imu", {"serial_port": str(board.path)})
    try:
        assert lifecycle_state(probe, "serial_imu", timeout=60.0) == "unconfigured"
        got: list = []
        sub = probe.create_subscription(Imu, ros.imu_topic("rs"), got.append, SENSOR_QOS)
        assert change_state(probe, "serial_imu", "configure"), node.output()
        assert change_state(probe, "serial_imu", "activate")
        assert spin_until(probe, lambda: len(got) >= 60, 15.0), node.output()[-2000:]
        assert got[-1].header.frame_id == "rs"
        assert device in open_fds(node.proc.pid)
        assert change_state(probe, "serial_imu", "deactivate")
        assert change_state(probe, "serial_imu", "cleanup")
        assert device not in open_fds(node.proc.pid)
        got.clear()
        assert change_state(probe, "serial_imu", "configure") and change_state(probe, "serial_imu", "activate")
        assert spin_until(probe, lambda: len(got) >= 20, 15.0)
        probe.destroy_subscription(sub)
    finally:
        code = node.stop(signal.SIGTERM)
        board.stop()
    assert code == 0, node.output()[-3000:]
    assert "Traceback" not in node.output(), node.output()[-3000:]
