"""metagait-edge: real-time gait recognition and few-shot gait personalization for robots.

The package imports nothing heavy at import time: torch, OpenCV, ZeroMQ, and above all rclpy and
tensorrt, are imported by the modules that need them, so the core runs and is tested everywhere.
"""

__version__ = "0.1.0"
