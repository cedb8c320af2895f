"""ROS 2 nodes of metagait-edge (the ``metagait_edge`` ROS package).

The nodes are thin wrappers: IMU decoding, silhouettes, message contents, safety and ZeroMQ output all
come from the ``metagait_edge`` library (installed with pip next to ROS 2, see docs/ros2.md). This module
is named ``metagait_edge_ros`` so that it never shadows that library.
"""
