"""trajectory_node: Imu topics -> runtime -> GaitTrajectory, JointTrajectory, GaitStatus and ZeroMQ.

Subscribes to the six ``imu/<sensor>`` topics (sensor-data QoS), regroups them into frames and pushes them
into the library's runtime (ring buffer, gait detector, model, safety envelope). It publishes the runtime's
current reference on ``gait/trajectory`` (+ ``gait/joint_trajectory``) at ``trajectory_rate_hz`` and at once
when a new cycle was computed, and, for controllers outside ROS, the same through the runtime's ZeroMQ
publisher on ``zmq_endpoint``. Every message is stamped with the newest IMU sample it was computed from, so
a subscriber sees how old its input is. While the runtime is in HOLD (stale or missing input, no valid
reference) it publishes ``STATUS_STALE`` with no samples and no JointTrajectory, and the reason on
``gait/status`` (immediately on every change, else at ``status_rate_hz``). Per IMU sample it publishes the
runtime's gait phase and locomotion mode on ``gait/phase`` (GaitPhase, stamped with the sample's time).

A calibration by ``calibration_node`` reaches this node through ``calibration/profile``: the profile is
re-read and that walker's personalized model runs from the next cycle on. With ``walker`` empty, the camera's
``walker_identity`` chooses whose profile runs (two agreeing answers switch, an unknown walker gets the
generic model at once), as in the runtime without ROS.
"""

from __future__ import annotations

import time
from collections import deque

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Imu
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from metagait_edge import ros
from metagait_edge.ros import msgs
from metagait_edge_interfaces.msg import GaitPhase, GaitStatus, GaitTrajectory, WalkerIdentity
from metagait_edge_ros.common import (
    DEFAULT_QOS, LATCHED_QOS, SENSOR_QOS, HostClock, RclpyFactory, configure_failed, declare_gait_params, on_runtime_params,
    read_gait_params, refuse_invalid_transitions, spin_node,
)
from metagait_edge_ros.runtime_adapter import hold_output, load_runtime, open_zmq_output, trajectory_output

#: Topic on which calibration_node announces a newly stored profile (std_msgs/String: the walker id).
PROFILE_TOPIC = "calibration/profile"


class TrajectoryNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("trajectory_node", **kwargs)
        self.factory = RclpyFactory()
        declare_gait_params(self)
        refuse_invalid_transitions(self)
        self.params = None  # set by configure
        self.runtime = None
        self.zmq = None
        self.active = False
        self.assembler = msgs.FrameAssembler()
        self.subscriptions_ = []
        self.timers_ = []
        self.frames_in = 0
        self.rate_window = (time.monotonic(), 0)
        self.imu_rate_hz = 0.0
        self.last_serial = -1
        self.last_state = None
        self.last_zmq_hold_s = -1.0
        self.host_clock = HostClock(self)
        self.new_cycle = self.create_guard_condition(self._on_new_cycle)
        self.phases = deque(maxlen=256)  # estimates from the runtime's worker thread, published by the executor
        self.new_phase = self.create_guard_condition(self._publish_phases)
        on_runtime_params(self, lambda: self.params is not None, self._apply_params)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            params = read_gait_params(self)
            runtime = load_runtime(params)
            try:
                params.check_joint_names(runtime.channel_names)
                zmq = open_zmq_output(params.zmq_output) if params.zmq_output else None
            except Exception:
                runtime.stop()
                raise
        except Exception as exc:  # a bad parameter or a missing model: stay unconfigured, say why
            return configure_failed(self, exc)
        self.params, self.runtime, self.zmq = params, runtime, zmq
        self.runtime.reference_listeners.append(self.new_cycle.trigger)
        self.pub_phase = self.create_lifecycle_publisher(GaitPhase, ros.PHASE_TOPIC, SENSOR_QOS)
        self.runtime.phase_listeners.append(self._queue_phase)
        self.pub_traj = self.create_lifecycle_publisher(GaitTrajectory, ros.TRAJECTORY_TOPIC, DEFAULT_QOS)
        self.pub_joint = self.create_lifecycle_publisher(JointTrajectory, ros.JOINT_TRAJECTORY_TOPIC, DEFAULT_QOS)
        self.pub_status = self.create_lifecycle_publisher(GaitStatus, ros.STATUS_TOPIC, DEFAULT_QOS)
        self.subscriptions_ = [
            self.create_subscription(Imu, ros.imu_topic(s), self._on_imu, SENSOR_QOS) for s in ros.SENSORS
        ] + [self.create_subscription(String, PROFILE_TOPIC, self._on_profile, LATCHED_QOS),
             self.create_subscription(WalkerIdentity, ros.IDENTITY_TOPIC, self._on_identity, DEFAULT_QOS)]
        self.get_logger().info(f"configured: backend {params.backend}, walker {params.walker or '(generic)'}, "
                               f"ZeroMQ {params.zmq_output or 'off'}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = True
        self._start_timers()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self._stop_timers()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        for pub in (self.pub_traj, self.pub_joint, self.pub_status, self.pub_phase):
            self.destroy_lifecycle_publisher(pub)
        self.params = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def release(self) -> None:
        """Give back the ZeroMQ socket, the runtime's threads and the subscriptions (cleanup, shutdown, exit)."""
        self.active = False
        self._stop_timers()
        for sub in self.subscriptions_:
            self.destroy_subscription(sub)
        self.subscriptions_ = []
        if self.zmq is not None:
            self.zmq.close()
            self.zmq = None
        if self.runtime is not None:
            self.runtime.stop()
            self.runtime = None

    def _start_timers(self) -> None:
        self._stop_timers()
        self.timers_ = [self.create_timer(1.0 / self.params.trajectory_rate_hz, self._publish_reference),
                        self.create_timer(1.0 / self.params.status_rate_hz, self._publish_status)]

    def _stop_timers(self) -> None:
        for timer in self.timers_:
            self.destroy_timer(timer)
        self.timers_ = []

    def _apply_params(self, params) -> None:
        walker_changed = params.walker != self.params.walker
        rates_changed = (params.trajectory_rate_hz, params.status_rate_hz) != (
            self.params.trajectory_rate_hz, self.params.status_rate_hz)
        params.check_joint_names(self.runtime.channel_names)
        self.params = params
        if walker_changed:
            self._use_walker(params.walker)
        if rates_changed and self.active:
            self._start_timers()

    def _use_walker(self, walker: str) -> None:
        if self.runtime.use_walker(walker or None):
            self.get_logger().info(f"running the personalized model of {walker!r}")
        elif walker:
            self.get_logger().warning(f"no usable profile for {walker!r}: the generic model runs (see the log above)")

    # ------------------------------------------------------------------ inputs
    def _on_imu(self, message: Imu) -> None:
        try:
            reading = msgs.imu_from_message(message, self.params.frame_prefix)
        except ValueError as exc:
            self.get_logger().warning(str(exc), throttle_duration_sec=5.0)
            return
        frame = self.assembler.add(reading)
        if frame is None:
            return
        now = time.monotonic()
        self.runtime.push_imu(frame[1], now)
        self.frames_in += 1
        start, count = self.rate_window
        if now - start >= 1.0:
            self.imu_rate_hz = (self.frames_in - count) / (now - start)
            self.rate_window = (now, self.frames_in)

    def _on_profile(self, message: String) -> None:
        walker = message.data.strip()
        if not walker or self.runtime is None:
            return
        if self.params.walker and self.params.walker != walker:
            self.get_logger().info(f"profile of {walker!r} updated; this node runs {self.params.walker!r}: unchanged")
            return
        self._use_walker(walker)

    def _on_identity(self, message: WalkerIdentity) -> None:
        """camera_node's answer chooses the profile, as in the runtime without ROS, unless ``walker`` is set."""
        if self.runtime is None or self.params.walker:
            return
        self.runtime.observe_identity(message.walker_id if message.known and message.walker_id else None,
                                      float(message.score), message.reason)

    # ------------------------------------------------------------------ outputs
    def _queue_phase(self, estimate) -> None:
        """Runtime worker thread: one estimate per IMU sample; the executor publishes it."""
        self.phases.append(estimate)
        self.new_phase.trigger()

    def _publish_phases(self) -> None:
        while self.phases:
            estimate = self.phases.popleft()
            if self.active:
                self.pub_phase.publish(msgs.phase_message(estimate, self.host_clock.ns(estimate.t_s), self.params.frame_id,
                                                          self.factory))
                if self.zmq is not None:  # the same estimate on the ZeroMQ output (gait.phase)
                    self.zmq.publish_phase(estimate, self.runtime.walker or "")

    def _on_new_cycle(self) -> None:
        if self.active:
            self._publish_reference()

    def _publish_reference(self) -> None:
        if not self.active or self.runtime is None:
            return
        ref = self.runtime.reference()
        frame_id = self.params.frame_id
        if ref is None:
            latest = self.runtime.ring.latest_timestamp()
            stamp = self.host_clock.ns(latest)
            out = hold_output(self.runtime.channel_names, stamp, self.runtime.walker or "", frame_id)
            self.pub_traj.publish(msgs.trajectory_message(out, self.factory))
            now = time.monotonic()
            if self.zmq is not None and now - self.last_zmq_hold_s >= 1.0:
                # HOLD goes out on ZeroMQ at once when it starts, then once a second (as the runtime's status).
                self.zmq.publish_hold(self.runtime.stats.last_reason, out.walker_id)
                self.last_zmq_hold_s = now
            self._publish_status_if_changed()
            return
        self.last_zmq_hold_s = -1.0  # the next HOLD is announced at once
        out = trajectory_output(ref, self.host_clock.ns(ref.input_time_s), frame_id)
        self.pub_traj.publish(msgs.trajectory_message(out, self.factory))
        if self.params.publish_joint_trajectory and ref.serial != self.last_serial:
            names = self.params.joint_names or None
            self.pub_joint.publish(msgs.joint_trajectory_message(out, self.factory, names))
        self.last_serial = ref.serial
        if self.zmq is not None:
            self.zmq.publish_reference(ref)
        self._publish_status_if_changed()

    def _state(self) -> tuple[int, str]:
        stats = self.runtime.stats
        if stats.last_status == "HOLD":
            return msgs.STATE_FAULT, stats.last_reason
        return msgs.STATE_RUNNING, stats.last_reason if stats.last_status != "OK" else ""

    def _publish_status_if_changed(self) -> None:
        if self._state() != self.last_state:
            self._publish_status()

    def _publish_status(self) -> None:
        if not self.active or self.runtime is None:
            return
        state, message = self._state()
        self.last_state = (state, message)
        rt = self.runtime
        stages = rt.records[-1].stages_s if rt.records else ()
        latency = (stages[-1] - stages[0]) * 1e3 if len(stages) > 1 else 0.0
        self.pub_status.publish(msgs.status_message(
            self.get_clock().now().nanoseconds, state, walker_id=rt.walker or "",
            personalized=rt.has_profile, imu_rate_hz=self.imu_rate_hz,
            dropped_samples=self.assembler.incomplete + rt.stats.dropped_samples, latency_ms=latency,
            backend=rt.personalizer.backend, message=message, frame_id=self.params.frame_id,
            factory=self.factory,
        ))


def main(args=None) -> None:
    spin_node("trajectory_node", TrajectoryNode, args=args)
