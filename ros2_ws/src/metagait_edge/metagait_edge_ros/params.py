"""Schema of the nodes' ROS parameters (config/gait.yaml), checked without ROS.

All nodes read one flat parameter set (``/**: ros__parameters:``); each declares every field with its
default and builds :class:`GaitParams` with ``metagait_edge.config.from_dict``, so an unknown or mistyped
key in the YAML fails loudly with its name.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import yaml

from metagait_edge.config import ConfigError, from_dict
from metagait_edge.runtime.camera_frontend import CameraConfig

#: Placeholder ``serial_port`` values that need no hardware.
SYNTHETIC_PORT = "synthetic"
BAG_PREFIX = "bag:"
HUGADB_PREFIX = "hugadb:"

#: Parameters that take effect while a node runs (``ros2 param set``); the others are read at ``configure``
#: (deactivate, cleanup, configure, activate to change them). docs/ros2.md lists the same names.
RUNTIME_PARAMS = frozenset({"walker", "trajectory_rate_hz", "status_rate_hz", "publish_joint_trajectory",
                            "frame_id", "calibration_timeout_s", "max_shots", "publish_embedding"})


@dataclasses.dataclass
class GaitParams:
    # imu_node: "synthetic" (demo stream), "hugadb:<file>" (replay a HuGaDB recording), "bag:<folder>" (replay a
    # rosbag2 bag) or a serial device / pyserial URL.
    serial_port: str = SYNTHETIC_PORT
    baud_rate: int = 115200
    imu_format: str = "binary"  # "binary" frames or HuGaDB "ascii" rows (docs/imu_protocol.md)
    imu_rate_hz: float = 58.8  # rate of the synthetic / bag stream
    frame_prefix: str = ""  # prefix of the Imu frame_ids (e.g. "wearer/" -> "wearer/rf")
    # camera_node: "" subscribes to sensor_msgs/Image on camera/image_raw; else a cv2 device index or path.
    use_camera: bool = False
    camera: str = ""
    camera_rate_hz: float = 30.0
    silhouette_window: int = 30  # frames per identity query
    # camera front end (EdgeConfig camera: section): mog2 | knn | segmentation; motion | hog; mediapipe-pose | onnx
    silhouette_method: str = "mog2"
    camera_detector: str = "motion"
    camera_segmenter: str = "mediapipe-pose"
    camera_segmenter_onnx: str = ""  # camera_segmenter onnx: the model file
    max_walkers: int = 3
    gallery_path: str = ""  # enrolled walkers; empty publishes silhouettes only
    identity_threshold: float = 0.0  # 0: the gallery's, else the recognition model's calibrated threshold
    publish_embedding: bool = False
    # trajectory_node
    backend: str = "auto"  # per-cycle generation: "auto" (TensorRT, else ONNX Runtime, else torch) or one of them
    model_path: str = ""  # personalization checkpoint folder; empty: the embedded default checkpoint
    engine_path: str = ""  # TensorRT engine cache folder (backend tensorrt); empty: next to the exported ONNX
    zmq_endpoint: str = "tcp://127.0.0.1:5557"  # "none" (or "") disables the ZeroMQ publisher
    trajectory_rate_hz: float = 20.0
    publish_joint_trajectory: bool = True
    joint_names: list[str] = dataclasses.field(default_factory=list)  # default: the channel names
    status_rate_hz: float = 1.0
    frame_id: str = "base_link"
    # calibration_node
    walker: str = ""  # walker whose adapted model the trajectory node runs; empty: population model
    calibration_dir: str = ""  # where adapted models are stored; empty: $METAGAIT_CACHE/walkers
    calibration_timeout_s: float = 120.0
    max_shots: int = 10

    def __post_init__(self) -> None:
        if self.imu_format not in ("binary", "ascii"):
            raise ValueError(f"imu_format must be 'binary' or 'ascii', got {self.imu_format!r}")
        if self.backend not in ("auto", "torch", "onnxruntime", "tensorrt"):
            raise ValueError(f"backend must be auto, torch, onnxruntime or tensorrt, got {self.backend!r}")
        for name in ("imu_rate_hz", "camera_rate_hz", "trajectory_rate_hz", "status_rate_hz"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 1 <= self.max_shots <= 100:
            raise ValueError(f"max_shots must be in 1..100, got {self.max_shots}")
        if self.calibration_timeout_s <= 0:
            raise ValueError(f"calibration_timeout_s must be > 0, got {self.calibration_timeout_s}")
        self.camera_config  # the camera front end's own checks, with its key names
        names = list(self.joint_names)
        if any(not isinstance(n, str) or not n.strip() for n in names) or len(set(names)) != len(names):
            raise ValueError(f"joint_names must be distinct non-empty names, got {names}")

    @property
    def camera_config(self) -> CameraConfig:
        return CameraConfig(silhouette_method=self.silhouette_method, detector=self.camera_detector,
                            segmenter=self.camera_segmenter, max_walkers=self.max_walkers,
                            segmenter_onnx=Path(self.camera_segmenter_onnx) if self.camera_segmenter_onnx else None)

    @property
    def zmq_output(self) -> str:
        """The endpoint to bind, or "" when the ZeroMQ output is off (`zmq_endpoint:=none`: ros2 launch refuses
        an empty argument value, and YAML reads `off` as false)."""
        return "" if self.zmq_endpoint.strip().lower() in ("", "none") else self.zmq_endpoint

    def check_joint_names(self, channel_names: list[str]) -> None:
        """``joint_names`` renames the runtime's channels one to one (empty: keep the channel names)."""
        if self.joint_names and len(self.joint_names) != len(channel_names):
            raise ValueError(f"joint_names must name the {len(channel_names)} channels {channel_names} in order, "
                             f"got {len(self.joint_names)}: {list(self.joint_names)}")


def defaults() -> dict[str, Any]:
    """Parameter name -> default value, in declaration order (what the nodes declare)."""
    return {f.name: dataclasses.asdict(GaitParams())[f.name] for f in dataclasses.fields(GaitParams)}


def params_from_ros_yaml(data: Mapping[str, Any], where: str = "parameters") -> GaitParams:
    """GaitParams from a ROS 2 parameter file's content (``/**: ros__parameters: {...}``)."""
    if not isinstance(data, Mapping) or set(data) != {"/**"}:
        keys = list(data) if isinstance(data, Mapping) else type(data).__name__
        raise ConfigError(f"{where}: expected exactly one top-level key '/**', got {keys}")
    section = data["/**"]
    if not isinstance(section, Mapping) or set(section) != {"ros__parameters"}:
        raise ConfigError(f"{where}: '/**' must hold exactly 'ros__parameters'")
    try:
        return from_dict(GaitParams, section["ros__parameters"])
    except ConfigError as exc:
        raise ConfigError(f"{where}: /**.ros__parameters: {exc}") from exc


def load_params_file(path: str | Path) -> GaitParams:
    path = Path(path)
    with path.open("r", encoding="utf-8") as fh:
        return params_from_ros_yaml(yaml.safe_load(fh), str(path))
