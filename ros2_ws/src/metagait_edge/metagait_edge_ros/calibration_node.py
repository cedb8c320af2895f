"""calibration_node: the Calibrate action -- few-shot personalization of the gait model to a new wearer.

The goal names the walker and the number of gait cycles (shots). The execute callback collects that
many cycles from the IMU topics, adapts the model (``GaitRuntime.calibrate``), and reports the
reconstruction error before and after. It runs for seconds to minutes, so it runs in a
``ReentrantCallbackGroup`` on a ``MultiThreadedExecutor``: IMU callbacks keep flowing into the runtime
while it waits, and cancel requests are served. One calibration runs at a time. A successful calibration
stores the walker's profile (atomically, in ``calibration_dir``) and announces it on ``calibration/profile``
(latched): the trajectory node reloads it and runs the personalized model from its next cycle. A failed,
cancelled or timed-out calibration stores nothing: the previous profile stays in force.
"""

from __future__ import annotations

import threading
import time

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Imu
from std_msgs.msg import String

from metagait_edge import ros
from metagait_edge.ros import msgs
from metagait_edge_interfaces.action import Calibrate
from metagait_edge_ros.common import (
    LATCHED_QOS, SENSOR_QOS, declare_gait_params, on_runtime_params, read_gait_params, spin_node,
)
from metagait_edge_ros.runtime_adapter import load_runtime
from metagait_edge_ros.trajectory_node import PROFILE_TOPIC


class CalibrationNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("calibration_node", **kwargs)
        declare_gait_params(self)
        self.params = read_gait_params(self)
        self.runtime = load_runtime(self.params)
        on_runtime_params(self, lambda: True, self._apply_params)  # configured from construction on
        self.pub_profile = self.create_publisher(String, PROFILE_TOPIC, LATCHED_QOS)
        self.assembler = msgs.FrameAssembler()
        self.group = ReentrantCallbackGroup()
        # IMU callbacks one at a time (the frame assembler is not thread-safe), beside the long-running action.
        self.imu_group = MutuallyExclusiveCallbackGroup()
        self.busy = threading.Lock()
        for sensor in ros.SENSORS:
            self.create_subscription(Imu, ros.imu_topic(sensor), self._on_imu, SENSOR_QOS,
                                     callback_group=self.imu_group)
        self.server = ActionServer(
            self, Calibrate, ros.CALIBRATE_ACTION, execute_callback=self._execute,
            goal_callback=self._on_goal, cancel_callback=lambda goal: CancelResponse.ACCEPT,
            callback_group=self.group,
        )

    def _apply_params(self, params) -> None:
        self.params = params

    def release(self) -> None:
        if self.runtime is not None:
            self.runtime.stop()
            self.runtime = None

    def _on_imu(self, message: Imu) -> None:
        try:
            frame = self.assembler.add(msgs.imu_from_message(message, self.params.frame_prefix))
        except ValueError as exc:
            self.get_logger().warning(str(exc), throttle_duration_sec=5.0)
            return
        if frame is not None:
            self.runtime.push_imu(frame[1], time.monotonic())

    def _on_goal(self, goal: Calibrate.Goal) -> GoalResponse:
        if not goal.walker.strip():
            self.get_logger().warning("rejecting calibration: empty walker id")
            return GoalResponse.REJECT
        if not 1 <= goal.shots <= self.params.max_shots:
            self.get_logger().warning(f"rejecting calibration: shots {goal.shots} not in 1..{self.params.max_shots}")
            return GoalResponse.REJECT
        if self.busy.locked():
            self.get_logger().warning("rejecting calibration: another calibration is running")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _execute(self, goal_handle) -> Calibrate.Result:
        goal = goal_handle.request
        result = Calibrate.Result()
        if not self.busy.acquire(blocking=False):
            goal_handle.abort()
            result.reason = "another calibration is running"
            return result

        def feedback(collected: int, required: int) -> None:
            message = Calibrate.Feedback()
            message.cycles_collected, message.cycles_required = int(collected), int(required)
            goal_handle.publish_feedback(message)

        try:
            outcome = self.runtime.calibrate(
                goal.walker, int(goal.shots), feedback, lambda: goal_handle.is_cancel_requested,
                self.params.calibration_timeout_s,
            )
        except Exception as exc:  # report any library failure to the action client, not just the log
            self.get_logger().error(f"calibration of {goal.walker!r} failed: {exc}")
            goal_handle.abort()
            result.success, result.reason = False, str(exc)
            return result
        finally:
            self.busy.release()
        result.success = bool(outcome.success)
        result.error_before, result.error_after = float(outcome.error_before), float(outcome.error_after)
        result.reason = outcome.reason
        if goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif outcome.success:
            self.pub_profile.publish(String(data=goal.walker))
            self.get_logger().info(f"calibrated {goal.walker!r}: error {outcome.error_before:.4f} -> "
                                   f"{outcome.error_after:.4f}")
            goal_handle.succeed()
        else:
            self.get_logger().warning(f"calibration of {goal.walker!r} failed: {outcome.reason}")
            goal_handle.abort()
        return result


def main(args=None) -> None:
    spin_node("calibration_node", CalibrationNode, lambda: MultiThreadedExecutor(num_threads=4), args=args)
