"""launch_testing: the default launch (synthetic IMU, no hardware) brings the pipeline up, and ends cleanly.

The managed nodes reach `active` by themselves, every IMU topic publishes, trajectories flow, and when the
test ends launch_testing's shutdown (SIGINT) ends every node with exit status 0.
"""

from __future__ import annotations

import os
import time
import unittest

import launch
import launch_testing
import launch_testing.actions
import launch_testing.asserts
import pytest
import rclpy
import rclpy.executors
from ament_index_python.packages import get_package_share_directory
from launch.launch_description_sources import PythonLaunchDescriptionSource
from sensor_msgs.msg import Imu

from metagait_edge import ros
from metagait_edge_interfaces.msg import GaitTrajectory
from metagait_edge_ros.common import DEFAULT_QOS, SENSOR_QOS


@pytest.mark.launch_test
def generate_test_description():
    gait = launch.actions.IncludeLaunchDescription(PythonLaunchDescriptionSource(
        os.path.join(get_package_share_directory("metagait_edge"), "launch", "gait.launch.py")),
        launch_arguments={"serial_port": "synthetic", "zmq_endpoint": "none", "namespace": "lt"}.items())
    return launch.LaunchDescription([gait, launch_testing.actions.ReadyToTest()])


class TestPipeline(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # A context of its own: colcon runs this file in the same pytest process as the other tests.
        cls.context = rclpy.Context()
        rclpy.init(context=cls.context)
        cls.node = rclpy.create_node("launch_probe", namespace="lt", context=cls.context)
        cls.executor = rclpy.executors.SingleThreadedExecutor(context=cls.context)
        cls.executor.add_node(cls.node)

    @classmethod
    def tearDownClass(cls):
        cls.executor.shutdown()
        cls.node.destroy_node()
        rclpy.shutdown(context=cls.context)

    def test_every_sensor_and_the_trajectory_publish(self):
        received = {s: [] for s in ros.SENSORS}
        trajectories = []
        for sensor in ros.SENSORS:
            self.node.create_subscription(Imu, ros.imu_topic(sensor),
                                          lambda m, s=sensor: received[s].append(m), SENSOR_QOS)
        self.node.create_subscription(GaitTrajectory, ros.TRAJECTORY_TOPIC, trajectories.append, DEFAULT_QOS)
        deadline = time.monotonic() + 90.0  # the nodes import torch first
        while time.monotonic() < deadline and not (
                all(len(v) >= 10 for v in received.values())
                and any(t.status != GaitTrajectory.STATUS_STALE for t in trajectories)):
            self.executor.spin_once(timeout_sec=0.1)
        for sensor, messages in received.items():
            self.assertGreaterEqual(len(messages), 10, f"too few Imu messages on imu/{sensor}")
            self.assertEqual(messages[-1].header.frame_id, sensor)
            self.assertEqual(messages[-1].orientation_covariance[0], -1.0)
        live = [t for t in trajectories if t.status != GaitTrajectory.STATUS_STALE]
        self.assertTrue(live, "no trajectory from the synthetic walker")
        self.assertEqual(len(live[-1].data), live[-1].num_channels * live[-1].num_points)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_every_node_exits_with_status_0(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0])
