"""imu_node: IMU stream (serial port, bag replay or synthetic demo) -> sensor_msgs/Imu per sensor.

Managed (lifecycle) node: ``configure`` reads parameters and creates the publishers and the source,
``activate`` starts the reader thread, ``deactivate`` stops it. Each sample of the six IMUs becomes six
``sensor_msgs/Imu`` messages (frame ids rf, rs, rt, lf, ls, lt) with sensor-data QoS; the trajectory
node feeds them into the runtime's ring buffer.
"""

from __future__ import annotations

import rclpy
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Imu

from metagait_edge import ros
from metagait_edge.ros import msgs
from metagait_edge_ros.common import SENSOR_QOS, RclpyFactory, declare_gait_params, ros_stamp_ns
from metagait_edge_ros.runtime_adapter import open_imu_source


class ImuNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("imu_node", **kwargs)
        self.factory = RclpyFactory()
        self.params = None
        self.source = None
        self.publishers_by_sensor = {}
        self.frames = 0

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.params = declare_gait_params(self) if self.params is None else self.params
            self.source = open_imu_source(self.params, self._on_frame)
        except (ValueError, OSError, RuntimeError) as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.publishers_by_sensor = {
            s: self.create_lifecycle_publisher(Imu, ros.imu_topic(s), SENSOR_QOS) for s in ros.SENSORS
        }
        self.get_logger().info(f"IMU source {self.params.serial_port!r} configured")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.source.start()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.source.stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for pub in self.publishers_by_sensor.values():
            self.destroy_lifecycle_publisher(pub)
        self.publishers_by_sensor = {}
        self.source = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.source is not None:
            self.source.stop()
        return TransitionCallbackReturn.SUCCESS

    def _on_frame(self, frame, host_time_s: float) -> None:
        # Called on the source's reader thread; rclpy publishers are thread-safe.
        stamp = ros_stamp_ns(self, host_time_s)
        for reading in msgs.readings_from_raw(frame.raw, stamp):
            message = msgs.imu_message(reading, self.factory, self.params.frame_prefix)
            self.publishers_by_sensor[reading.sensor].publish(message)
        self.frames += 1


def main(args=None) -> None:
    rclpy.init(args=args)
    node = ImuNode()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        if node.source is not None:
            node.source.stop()
        node.destroy_node()
        rclpy.try_shutdown()
