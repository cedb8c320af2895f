"""Launch the metagait-edge gait pipeline: imu_node, trajectory_node, calibration_node, camera_node.

Defaults start the demo configuration: a synthetic IMU stream (no hardware), the embedded default
checkpoint on the fastest available generation backend (TensorRT, else ONNX Runtime, else torch), ZeroMQ
output on tcp://127.0.0.1:5557, no camera. The managed nodes are configured and activated automatically.

    ros2 launch metagait_edge gait.launch.py serial_port:=/dev/ttyACM0 use_camera:=true camera:=0
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from lifecycle_msgs.msg import Transition

#: Launch arguments: name -> (default, description). docs/ros2.md lists the same names.
ARGUMENTS = {
    "serial_port": ("synthetic", "IMU source: a serial port or pyserial URL, 'hugadb:<file>', 'bag:<folder>', "
                                 "or 'synthetic'"),
    "camera": ("", "camera device index, device path or video file; empty subscribes to camera/image_raw"),
    "zmq_endpoint": ("tcp://127.0.0.1:5557", "ZeroMQ endpoint of the trajectory publisher; 'none' disables it"),
    "backend": ("auto", "generation backend: auto, torch, onnxruntime or tensorrt"),
    "model_path": ("", "model checkpoint (.safetensors) or .onnx; empty uses the embedded default checkpoint"),
    "engine_path": ("", "TensorRT engine cache folder (backend tensorrt)"),
    "use_camera": ("false", "start camera_node (silhouettes and walker identity)"),
    "namespace": ("", "ROS namespace of all nodes and topics"),
    "params_file": ("", "a parameter file (config/gait.yaml's schema) applied last, over config/gait.yaml and "
                        "the other arguments"),
}


def _managed(node: LifecycleNode, condition=None) -> list:
    """Configure ``node`` at startup and activate it once it is inactive (all three under ``condition``).

    The activation handler fires once, on the first configure: a node that is cleaned up and configured
    again by hand (`ros2 lifecycle set`) is left inactive for its operator to activate.
    """
    configure = EmitEvent(event=ChangeState(
        lifecycle_node_matcher=matches_action(node), transition_id=Transition.TRANSITION_CONFIGURE),
        condition=condition)
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
        entities=[EmitEvent(event=ChangeState(
            lifecycle_node_matcher=matches_action(node), transition_id=Transition.TRANSITION_ACTIVATE))],
        handle_once=True,
    ), condition=condition)
    return [node, activate, configure]


def _nodes(context) -> list:
    arg = {name: LaunchConfiguration(name) for name in ARGUMENTS}
    overrides = {"use_camera": ParameterValue(arg["use_camera"], value_type=bool)}
    # Empty strings from launch arguments must stay strings, not become "no value".
    for name in ("camera", "zmq_endpoint", "model_path", "engine_path", "serial_port", "backend"):
        overrides[name] = ParameterValue(arg[name], value_type=str)
    defaults = os.path.join(get_package_share_directory("metagait_edge"), "config", "gait.yaml")
    extra = arg["params_file"].perform(context)
    # Order: the package's gait.yaml, the launch arguments, then params_file (it wins where it sets a key).
    parameters = [defaults, overrides] + ([extra] if extra else [])

    def lifecycle(executable: str, **kwargs) -> LifecycleNode:
        return LifecycleNode(package="metagait_edge", executable=executable, name=executable,
                             namespace=arg["namespace"], parameters=parameters, output="screen", **kwargs)

    imu = lifecycle("imu_node")
    trajectory = lifecycle("trajectory_node")
    use_camera = IfCondition(arg["use_camera"])
    camera = lifecycle("camera_node", condition=use_camera)
    calibration = Node(package="metagait_edge", executable="calibration_node", name="calibration_node",
                       namespace=arg["namespace"], parameters=parameters, output="screen")
    # camera_node's lifecycle is driven only when it is started.
    return _managed(imu) + _managed(trajectory) + [calibration] + _managed(camera, condition=use_camera)


def generate_launch_description() -> LaunchDescription:
    actions = [DeclareLaunchArgument(name, default_value=default, description=description)
               for name, (default, description) in ARGUMENTS.items()]
    return LaunchDescription(actions + [OpaqueFunction(function=_nodes)])
