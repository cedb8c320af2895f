"""trajectory_node: Imu topics -> runtime -> GaitTrajectory, JointTrajectory, GaitStatus and ZeroMQ.

Subscribes to the six ``imu/<sensor>`` topics (sensor-data QoS), regroups them into frames, pushes them
into the runtime (ring buffer, model, safety envelope), and at ``trajectory_rate_hz`` publishes the
runtime's bounded trajectory on ``gait/trajectory`` (+ ``gait/joint_trajectory``) and, for controllers
outside ROS, through the runtime's own ZeroMQ publisher on ``zmq_endpoint``: the same trajectory.
"""

from __future__ import annotations

import time

import rclpy
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Imu
from trajectory_msgs.msg import JointTrajectory

from metagait_edge import ros
from metagait_edge.ros import msgs
from metagait_edge_interfaces.msg import GaitStatus, GaitTrajectory
from metagait_edge_ros.common import DEFAULT_QOS, SENSOR_QOS, RclpyFactory, declare_gait_params
from metagait_edge_ros.runtime_adapter import load_runtime, open_zmq_output


class TrajectoryNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("trajectory_node", **kwargs)
        self.factory = RclpyFactory()
        self.params = None
        self.runtime = None
        self.zmq = None
        self.assembler = msgs.FrameAssembler()
        self.subscriptions_ = []
        self.timers_ = []
        self.frames_in = 0
        self.last_frame_host = None
        self.rate_window = (time.monotonic(), 0)
        self.imu_rate_hz = 0.0

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.params = declare_gait_params(self) if self.params is None else self.params
            self.runtime = load_runtime(self.params)
            self.zmq = open_zmq_output(self.params.zmq_endpoint) if self.params.zmq_endpoint else None
        except (ValueError, OSError, RuntimeError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.pub_traj = self.create_lifecycle_publisher(GaitTrajectory, ros.TRAJECTORY_TOPIC, DEFAULT_QOS)
        self.pub_joint = self.create_lifecycle_publisher(JointTrajectory, ros.JOINT_TRAJECTORY_TOPIC, DEFAULT_QOS)
        self.pub_status = self.create_lifecycle_publisher(GaitStatus, ros.STATUS_TOPIC, DEFAULT_QOS)
        self.subscriptions_ = [
            self.create_subscription(Imu, ros.imu_topic(s), self._on_imu, SENSOR_QOS) for s in ros.SENSORS
        ]
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.timers_ = [
            self.create_timer(1.0 / self.params.trajectory_rate_hz, self._on_step),
            self.create_timer(1.0 / self.params.status_rate_hz, self._on_status),
        ]
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        for timer in self.timers_:
            self.destroy_timer(timer)
        self.timers_ = []
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for sub in self.subscriptions_:
            self.destroy_subscription(sub)
        self.subscriptions_ = []
        if self.zmq is not None:
            self.zmq.close()
            self.zmq = None
        self.runtime = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.zmq is not None:
            self.zmq.close()
        return TransitionCallbackReturn.SUCCESS

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
        self.last_frame_host = now
        start, count = self.rate_window
        if now - start >= 1.0:
            self.imu_rate_hz = (self.frames_in - count) / (now - start)
            self.rate_window = (now, self.frames_in)

    def _on_step(self) -> None:
        out = self.runtime.step(self.get_clock().now().nanoseconds)
        if out is None:
            return
        out.frame_id = self.params.frame_id
        self.pub_traj.publish(msgs.trajectory_message(out, self.factory))
        if self.params.publish_joint_trajectory and out.cycle_duration > 0:
            names = self.params.joint_names or None
            self.pub_joint.publish(msgs.joint_trajectory_message(out, self.factory, names))
        if self.zmq is not None:
            self.zmq.publish(out)

    def _on_status(self) -> None:
        stale = self.last_frame_host is None or time.monotonic() - self.last_frame_host > 0.5
        state = msgs.STATE_FAULT if stale else msgs.STATE_RUNNING
        self.pub_status.publish(msgs.status_message(
            self.get_clock().now().nanoseconds, state, walker_id=self.params.walker,
            personalized=bool(self.params.walker), imu_rate_hz=self.imu_rate_hz,
            dropped_samples=self.assembler.incomplete, backend=self.params.backend,
            message="no IMU data" if stale else "", frame_id=self.params.frame_id, factory=self.factory,
        ))


def main(args=None) -> None:
    rclpy.init(args=args)
    node = TrajectoryNode()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
