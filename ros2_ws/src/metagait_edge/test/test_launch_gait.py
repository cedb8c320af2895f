"""launch_testing: the demo launch brings up the pipeline and publishes all six Imu topics.

Runs only where ROS 2 is installed (``colcon test --packages-select metagait_edge``); see docs/ros2.md.
"""

from __future__ import annotations

import os
import time
import unittest

import launch
import launch_testing
import launch_testing.actions
import pytest
import rclpy
from ament_index_python.packages import get_package_share_directory
from launch.launch_description_sources import PythonLaunchDescriptionSource
from sensor_msgs.msg import Imu

from metagait_edge import ros
from metagait_edge_ros.common import SENSOR_QOS


@pytest.mark.launch_test
def generate_test_description():
    gait = launch.actions.IncludeLaunchDescription(PythonLaunchDescriptionSource(
        os.path.join(get_package_share_directory("metagait_edge"), "launch", "gait.launch.py")),
        launch_arguments={"serial_port": "synthetic", "zmq_endpoint": "", "namespace": "lt"}.items())
    return launch.LaunchDescription([gait, launch_testing.actions.ReadyToTest()])


class TestImuTopics(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node("imu_probe", namespace="lt")

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def test_every_sensor_publishes(self):
        received = {s: [] for s in ros.SENSORS}
        for sensor in ros.SENSORS:
            self.node.create_subscription(Imu, ros.imu_topic(sensor),
                                          lambda m, s=sensor: received[s].append(m), SENSOR_QOS)
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline and not all(len(v) >= 10 for v in received.values()):
            rclpy.spin_once(self.node, timeout_sec=0.1)
        for sensor, messages in received.items():
            self.assertGreaterEqual(len(messages), 10, f"too few Imu messages on imu/{sensor}")
            self.assertEqual(messages[-1].header.frame_id, sensor)
            self.assertEqual(messages[-1].orientation_covariance[0], -1.0)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_imu_node_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
