"""imu_node: IMU stream (serial port, HuGaDB or bag replay, synthetic demo) -> sensor_msgs/Imu per sensor.

Managed (lifecycle) node: ``configure`` reads and checks the parameters and creates the publishers and the
source (a serial device that does not exist fails here, naming ``serial_port``), ``activate`` starts the
reader thread, ``deactivate`` stops it and closes the port, ``cleanup``/``shutdown`` release everything.
Each sample of the six IMUs becomes six ``sensor_msgs/Imu`` messages (frame ids rf, rs, rt, lf, ls, lt)
with sensor-data QoS and one shared stamp; the trajectory and calibration nodes regroup them by stamp.
"""

from __future__ import annotations

from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Imu

from metagait_edge import ros
from metagait_edge.ros import msgs
from metagait_edge_ros.common import (
    SENSOR_QOS, RclpyFactory, configure_failed, declare_gait_params, on_runtime_params, read_gait_params,
    HostClock, refuse_invalid_transitions, spin_node,
)
from metagait_edge_ros.runtime_adapter import open_imu_source


class ImuNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("imu_node", **kwargs)
        self.factory = RclpyFactory()
        declare_gait_params(self)
        refuse_invalid_transitions(self)
        self.params = None
        self.source = None
        self.running = False
        self.publishers_by_sensor = {}
        self.frames = 0
        self.host_clock = HostClock(self)
        on_runtime_params(self, lambda: self.params is not None, self._apply_params)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            params = read_gait_params(self)
            source = open_imu_source(params, self._on_frame)
        except Exception as exc:  # a bad parameter or an unusable port: stay unconfigured, say why
            return configure_failed(self, exc)
        self.params, self.source = params, source
        self.publishers_by_sensor = {
            s: self.create_lifecycle_publisher(Imu, ros.imu_topic(s), SENSOR_QOS) for s in ros.SENSORS
        }
        self.get_logger().info(f"IMU source {params.serial_port!r} configured")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)
        self.source.start()
        self.running = True
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_source()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        for pub in self.publishers_by_sensor.values():
            self.destroy_lifecycle_publisher(pub)
        self.publishers_by_sensor = {}
        self.params = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_source(self) -> None:
        self.running = False
        if self.source is not None:
            self.source.stop()  # joins the reader thread; a serial source closes its port

    def release(self) -> None:
        """Stop the reader and give the serial port back (cleanup, shutdown, process exit)."""
        self._stop_source()
        self.source = None

    def _apply_params(self, params) -> None:
        self.params = params

    def _on_frame(self, frame, host_time_s: float) -> None:
        # Called on the source's reader thread; rclpy publishers are thread-safe.
        if not self.running:
            return
        stamp = self.host_clock.ns(host_time_s)
        try:
            for reading in msgs.readings_from_raw(frame.raw, stamp):
                message = msgs.imu_message(reading, self.factory, self.params.frame_prefix)
                self.publishers_by_sensor[reading.sensor].publish(message)
        except _rclpy.RCLError:
            if self.context.ok():
                raise
            return  # a signal shut the context down while this reader thread was publishing
        self.frames += 1


def main(args=None) -> None:
    spin_node("imu_node", ImuNode, args=args)
