"""rclpy glue shared by the nodes: message factory, parameter declaration, QoS, clock conversion."""

from __future__ import annotations

import array
import ctypes
import importlib
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np
import rclpy
import rclpy.logging
from lifecycle_msgs.srv import ChangeState
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.executors import Executor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from metagait_edge.config import from_dict
from metagait_edge_ros.params import RUNTIME_PARAMS, GaitParams, defaults

try:  # rclpy >= Humble
    from rclpy.exceptions import ParameterUninitializedException
except ImportError:  # pragma: no cover - older rclpy never leaves a declared parameter uninitialized
    class ParameterUninitializedException(Exception):
        pass

try:  # Jazzy raises it from spin() when a signal shut the context down; older releases raise KeyboardInterrupt
    from rclpy.executors import ExternalShutdownException
except ImportError:  # pragma: no cover
    class ExternalShutdownException(Exception):
        pass

SENSOR_QOS: QoSProfile = qos_profile_sensor_data
DEFAULT_QOS = QoSProfile(depth=10)
#: A late subscriber still gets the last value (profile updates from calibration_node).
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class RclpyFactory:
    """The ``MessageFactory`` of ``metagait_edge.ros.msgs`` backed by rclpy's generated message classes."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def _cls(self, typename: str) -> type:
        cls = self._classes.get(typename)
        if cls is None:
            pkg, kind, name = typename.split("/")
            cls = getattr(importlib.import_module(f"{pkg}.{kind}"), name)
            self._classes[typename] = cls
        return cls

    def new(self, typename: str, **fields: Any) -> Any:
        return self._cls(typename)(**fields)

    # rclpy wants array.array (or lists) for unbounded numeric sequences, numpy for fixed-size arrays.
    def float32_seq(self, values: Any) -> array.array:
        return array.array("f", np.asarray(values, dtype=np.float32).reshape(-1).tobytes())

    def float64_seq(self, values: Any) -> array.array:
        return array.array("d", np.asarray(values, dtype=np.float64).reshape(-1).tobytes())

    def float64_array(self, values: Any) -> np.ndarray:
        return np.asarray(values, dtype=np.float64).reshape(-1)

    def uint8_seq(self, values: Any) -> array.array:
        return array.array("B", np.ascontiguousarray(values, dtype=np.uint8).tobytes())


def declare_gait_params(node: Node) -> None:
    """Declare every GaitParams field on ``node``, defaults from the schema (read them with read_gait_params)."""
    # Declared with dynamic typing, so that a value of the wrong type (`-p baud_rate:=fast`) does not crash the
    # node while it is built: read_gait_params checks every value against the schema at configure and names
    # the parameter that is wrong.
    node.gait_param_errors = {}
    for name, default in defaults().items():
        if isinstance(default, list):
            # An empty list has no inferable parameter type (and a typed declaration cannot be dynamic):
            # declare the type; read_gait_params maps "unset" to the schema's default.
            try:
                node.declare_parameter(name, Parameter.Type.STRING_ARRAY)
            except InvalidParameterTypeException as exc:
                node.gait_param_errors[name] = f"{name}: expected a list of strings ({exc})"
                node.declare_parameter(name, Parameter.Type.STRING_ARRAY, ignore_override=True)
        else:
            node.declare_parameter(name, default, ParameterDescriptor(dynamic_typing=True))


def _value(node: Node, name: str, default: Any) -> Any:
    try:
        value = node.get_parameter(name).value
    except ParameterUninitializedException:
        value = None
    if value is None:
        return default
    return list(value) if isinstance(default, list) else value


def read_gait_params(node: Node, changes: Sequence[Parameter] = ()) -> GaitParams:
    """The node's parameters (with ``changes`` applied) checked against the schema; ValueError names the key."""
    errors = getattr(node, "gait_param_errors", {})
    if errors:
        raise ValueError("; ".join(errors.values()))
    values = {name: _value(node, name, default) for name, default in defaults().items()}
    for p in changes:
        values[p.name] = list(p.value) if isinstance(p.value, (list, tuple)) else p.value
    return from_dict(GaitParams, values)


def refuse_invalid_transitions(node: Node) -> None:
    """Answer an impossible lifecycle request (e.g. ``activate`` on an active node) with success=False and a
    warning: rclpy's lifecycle raises from its service callback there, which ends the whole node process."""
    for service in node.services:
        if service.srv_type is not ChangeState:
            continue
        original = service.callback

        def guarded(request, response, original=original):
            try:
                return original(request, response)
            except _rclpy.RCLError as exc:
                node.get_logger().warning(
                    f"refused lifecycle transition {request.transition.label or request.transition.id}: {exc}")
                response.success = False
                return response

        service.callback = guarded


def configure_failed(node: Node, exc: BaseException) -> TransitionCallbackReturn:
    """Log why configure failed (rclpy's lifecycle would only say "Failed to make transition") and fail it."""
    node.get_logger().error(f"configure failed: {exc}")
    return TransitionCallbackReturn.FAILURE


def on_runtime_params(node: Node, configured: Callable[[], bool], apply: Callable[[GaitParams], None]) -> None:
    """Accept ``ros2 param set`` of RUNTIME_PARAMS at any time (checked, then ``apply(new_params)``); the other
    parameters only while the node is unconfigured, because they take effect at ``configure``."""

    def check(changes: list[Parameter]) -> SetParametersResult:
        fixed = sorted(p.name for p in changes if p.name not in RUNTIME_PARAMS)
        if fixed and configured():
            return SetParametersResult(successful=False, reason=(
                f"{', '.join(fixed)}: read at configure; deactivate and clean up the node, set it, configure again"))
        try:
            params = read_gait_params(node, changes)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        if configured():
            apply(params)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(check)


def spin_node(name: str, make_node: Callable[[], Node], make_executor: Callable[[], Executor] | None = None,
              args=None) -> None:
    """Run a node until shutdown (SIGINT/SIGTERM from ``ros2 launch`` or the terminal) and exit cleanly.

    rclpy raises ``ExternalShutdownException`` (Jazzy) or ``KeyboardInterrupt`` when the context is shut down
    by a signal, also while the node is still being built (importing torch takes seconds): both end the
    process with status 0 after ``node.release()`` gave back ports, sockets and threads.
    """
    # SIGINT (launch's shutdown, Ctrl-C) and SIGTERM (systemd, launch escalating, parent death) end the process
    # the same way, also while the node is still being built. SIGINT is set explicitly: a process started from
    # a non-interactive shell with `&` inherits it ignored. rclpy's own handler, installed by init, runs first
    # and then chains to these.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    _end_with_parent()
    rclpy.init(args=args)
    node = executor = None
    try:
        try:
            executor = make_executor() if make_executor is not None else None
            node = make_node()
            if executor is not None:
                executor.add_node(node)
            # From here on a signal only shuts the context down and spin returns (or raises
            # ExternalShutdownException); it no longer raises KeyboardInterrupt, which could otherwise be
            # delivered a few bytecodes after spin returned, in the shutdown below, and end the process -2.
            _raise_on_signal(False)
            if executor is None:
                rclpy.spin(node)
            else:
                executor.spin()
        except (KeyboardInterrupt, ExternalShutdownException):
            raise
        except Exception:
            # A signal shuts the context down from another thread while the executor still takes messages or
            # the node is being built, and rclpy then raises from inside (e.g. "Unable to convert call
            # argument"): that is the shutdown, not a failure. Anything else is a failure.
            if not _shutdown_underway():
                raise
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Shutting down already: a second SIGINT (Ctrl-C reaches the whole process group, then launch sends
        # its own) must not kill the process half-way through giving its resources back.
        _ignore_signals()
        if node is not None:
            release = getattr(node, "release", None)
            if release is not None:
                release()
            if executor is not None:
                executor.shutdown()
            node.destroy_node()
        # Logged after destroy_node: the node's /rosout publisher is gone with its (shut down) context.
        rclpy.logging.get_logger(name).info("shut down: ports, sockets and threads released"
                                            + ("" if node is not None else " (before it was up)"))
        rclpy.try_shutdown()
        _ignore_signals()  # try_shutdown restores the handlers rclpy found


def _ignore_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _end_with_parent() -> None:
    """SIGTERM this process when its parent dies (Linux): ROS 2 launch, when it is itself sent SIGTERM, exits
    without stopping its processes ("can result in orphaned processes"); a node must not outlive it and keep
    driving an exoskeleton unsupervised."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl: the node just does not get the signal
        return
    if os.getppid() == 1:  # the parent died before prctl took effect: nothing started yet, nothing to release
        sys.exit(0)


_signalled = False


def _shutdown_underway(wait_s: float = 1.0) -> bool:
    """True once a shutdown signal was received or the context is down (waiting up to ``wait_s`` for either:
    the signal's Python handler runs between the sleeps and raises KeyboardInterrupt)."""
    deadline = time.monotonic() + wait_s
    while not _signalled and rclpy.ok():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


_raising = True


def _raise_on_signal(raising: bool) -> None:
    global _raising
    _raising = raising


def _interrupt(signum, frame) -> None:
    # The first SIGINT or SIGTERM starts the shutdown; any later one (Ctrl-C reaches the whole process group,
    # launch sends its own, the parent-death SIGTERM follows) is ignored from here on. Python ends a process
    # that dies of an unhandled KeyboardInterrupt with SIGINT (status -2), so KeyboardInterrupt is raised only
    # while the node is being built (importing torch takes seconds), inside spin_node's try. While spinning,
    # rclpy's own handler (which ran before this one) shuts the context down and spin ends by itself; the
    # try_shutdown makes sure of it, from a thread: this handler may run while the main thread holds the
    # context's lock inside the executor.
    global _signalled
    _signalled = True
    _ignore_signals()
    if _raising:
        raise KeyboardInterrupt(f"signal {signum}")
    threading.Thread(target=_try_shutdown, name="signal-shutdown", daemon=True).start()


def _try_shutdown() -> None:
    try:
        rclpy.try_shutdown()
    except Exception:  # noqa: BLE001 - rclpy's own handler got there first: shut down either way
        pass


class HostClock:
    """ROS time (ns) of events stamped with the host's ``time.monotonic()``, through one measured offset.

    Reading the ROS clock and the monotonic clock afresh for every stamp adds the gap between the two reads
    to the stamp: a thread preempted between them (likely on 2 busy cores) stamps a later IMU sample earlier
    than the one before. One offset keeps the host times' order and spacing; it is re-measured every
    ``refresh_s`` (the system clock may be slewed, or be simulation time) from the tightest of a few reads.
    """

    def __init__(self, node: Node, refresh_s: float = 5.0) -> None:
        self.node = node
        self.refresh_s = refresh_s
        self.offset_ns = 0
        self.measured_at = -math.inf

    def _measure(self) -> None:
        best_gap, offset = None, 0
        for _ in range(5):
            before = time.monotonic_ns()
            ros_now = self.node.get_clock().now().nanoseconds
            after = time.monotonic_ns()
            if best_gap is None or after - before < best_gap:
                best_gap, offset = after - before, ros_now - (before + after) // 2
        self.offset_ns, self.measured_at = offset, time.monotonic()

    def ns(self, monotonic_s: float | None = None) -> int:
        """ROS time of host ``time.monotonic()`` ``monotonic_s`` (default: now)."""
        if monotonic_s is None:
            return self.node.get_clock().now().nanoseconds
        if time.monotonic() - self.measured_at > self.refresh_s:
            self._measure()
        return int(monotonic_s * 1e9) + self.offset_ns
