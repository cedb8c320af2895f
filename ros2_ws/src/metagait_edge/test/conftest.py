"""Harness of the package's tests: real rclpy, real `ros2 launch` processes, loopback DDS.

Run by `colcon test` (and so `make test`) after sourcing ros2_ws/ros2-env.sh, which gives this test run its
own ROS_DOMAIN_ID and keeps Cyclone DDS on the loopback interface. No test here may skip: a skipped ROS test
is what let `ros2 launch` crash unnoticed before, so a run with skips fails.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest
import rclpy
import yaml
from ament_index_python.packages import get_package_prefix
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState

TRANSITIONS = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP}
#: The longest clean HuGaDB walk of walker 08 (the walker `make demo` streams): the
#: virtual walker of the graph tests. Real data, from $METAGAIT_DATA (make test sets it).
WALK = "HuGaDB_v1_walking_08_02"


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if skipped and exitstatus == 0:
        reporter.write_line(f"FAILED: {skipped} ROS test(s) skipped; every ROS test must run here", red=True)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def ros():
    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture(scope="session")
def probe(ros):
    node = rclpy.create_node("metagait_test_probe")
    yield node
    node.destroy_node()


def spin_until(node, done: Callable[[], bool], timeout: float) -> bool:
    """Spin ``node`` until ``done()`` or ``timeout`` seconds; returns done()."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    return done()


def spin_for(node, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)


def call(node, client, request, timeout: float = 10.0, retry_s: float | None = None):
    """Call a service. With ``retry_s`` the request is sent again every ``retry_s`` seconds until ``timeout``
    (only for idempotent requests): DDS discovery can still list a server of a process that just ended, and
    a request sent before the new server matched is lost."""
    assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} not available"
    deadline = time.monotonic() + timeout
    while True:
        future = client.call_async(request)
        slice_s = min(retry_s or timeout, max(0.1, deadline - time.monotonic()))
        if spin_until(node, future.done, slice_s):
            return future.result()
        if hasattr(client, "remove_pending_request"):  # not in every rclpy release
            client.remove_pending_request(future)
        assert time.monotonic() < deadline, f"no answer from {client.srv_name} in {timeout} s"


def lifecycle_state(node, name: str, timeout: float = 30.0) -> str:
    client = node.create_client(GetState, f"/{name}/get_state")
    try:
        return call(node, client, GetState.Request(), timeout, retry_s=3.0).current_state.label
    finally:
        node.destroy_client(client)


def wait_state(node, name: str, label: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = lifecycle_state(node, name, timeout=max(1.0, deadline - time.monotonic()))
        if state == label:
            return state
        spin_for(node, 0.2)
    return state


def change_state(node, name: str, transition: str) -> bool:
    client = node.create_client(ChangeState, f"/{name}/change_state")
    try:
        request = ChangeState.Request()
        request.transition.id = TRANSITIONS[transition]
        return bool(call(node, client, request, 60.0).success)
    finally:
        node.destroy_client(client)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Launched:
    """A process started as a user starts it (`ros2 launch ...`, `ros2 run ...`), output kept in a file."""

    def __init__(self, argv: list[str], name: str) -> None:
        folder = Path(tempfile.mkdtemp(prefix=f"metagait-{name}-"))
        self.log = folder / "output.txt"
        self.ros_log_dir = folder / "ros_log"  # each node's own log file (rcl), which outlives a killed launch
        self._fh = self.log.open("w")
        # A process started from a non-interactive shell inherits SIGINT ignored; restore it so that SIGINT
        # reaches launch and the nodes as it does from a terminal.
        self.proc = subprocess.Popen(argv, stdout=self._fh, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "ROS_LOG_DIR": str(self.ros_log_dir)},
                                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.returncode: int | None = None

    def output(self) -> str:
        if not self._fh.closed:
            self._fh.flush()
        return self.log.read_text(errors="replace")

    def wait_output(self, pattern: str, timeout: float) -> re.Match | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output())
            if match or self.proc.poll() is not None:
                return match
            time.sleep(0.2)
        return None

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
                raise AssertionError(f"{self.proc.args} did not end within {timeout} s of {sig!r}:\n{self.output()[-3000:]}")
        self.returncode = self.proc.returncode
        self._fh.close()
        return self.returncode

    def node_pids(self) -> dict[str, int]:
        """Node name -> pid, from launch's "process started with pid [N]" lines."""
        return {m.group(1): int(m.group(2)) for m in re.finditer(r"\[INFO\] \[(\w+)-\d+\]: process started with pid \[(\d+)\]",
                                                                 self.output())}


def ros_run(executable: str, name: str, params: dict[str, str]) -> Launched:
    """The node's process as `ros2 run metagait_edge EXECUTABLE` starts it (without the CLI in between, so that
    signals and /proc reach the node itself)."""
    path = Path(get_package_prefix("metagait_edge")) / "lib" / "metagait_edge" / executable
    argv = [str(path), "--ros-args", "-r", f"__node:={name}"]
    for key, value in params.items():
        argv += ["-p", f"{key}:={value}"]
    return Launched(argv, name)


def launch_gait(tmp: Path, name: str, args: dict[str, str], params: dict | None = None) -> Launched:
    """`ros2 launch metagait_edge gait.launch.py` with launch ``args`` and a params_file of ``params``."""
    argv = ["ros2", "launch", "metagait_edge", "gait.launch.py"]
    if params:
        path = tmp / f"{name}.params.yaml"
        path.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
        argv.append(f"params_file:={path}")
    argv += [f"{k}:={v}" for k, v in args.items()]
    return Launched(argv, name)


@pytest.fixture(scope="session", autouse=True)
def subreaper():
    """Make this test process the reaper of orphaned descendants (Linux PR_SET_CHILD_SUBREAPER): when a test
    kills `ros2 launch`, its nodes become children of this process, so their exit status can be read."""
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
    yield


def wait_exit_codes(pids: dict[str, int], timeout: float) -> dict[str, int | None]:
    """Exit status of each (adopted) node process, None if it is still running after ``timeout``."""
    codes: dict[str, int | None] = {name: None for name in pids}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(c is None for c in codes.values()):
        for name, pid in pids.items():
            if codes[name] is None:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[name] = os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    return codes


def assert_nodes_ended_cleanly_after_sigterm(launched: Launched, expected_nodes: set[str]) -> None:
    """SIGTERM to ros2 launch: upstream launch dies without stopping its processes ("can result in orphaned
    processes"); each node gets SIGTERM from the kernel when its parent dies (PR_SET_PDEATHSIG) and must
    end with status 0 within seconds (read here as their adoptive parent), with no traceback anywhere."""
    pids = launched.node_pids()
    assert expected_nodes <= set(pids), pids
    codes = wait_exit_codes(pids, 20.0)
    assert all(code == 0 for code in codes.values()), codes
    assert "Traceback" not in launched.output(), launched.output()[-4000:]


def assert_clean_exit(launched: Launched, expected_nodes: set[str]) -> None:
    """Every node ended with status 0 and nothing printed a traceback."""
    out = launched.output()
    assert launched.returncode == 0, f"ros2 launch exited {launched.returncode}:\n{out[-4000:]}"
    clean = set(re.findall(r"\[INFO\] \[(\w+)-\d+\]: process has finished cleanly", out))
    assert expected_nodes <= clean, f"not every node finished cleanly ({clean}):\n{out[-4000:]}"
    assert "Traceback" not in out, out[-4000:]
    assert "process has died" not in out, out[-4000:]
