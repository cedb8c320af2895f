"""camera_node: camera frames -> silhouettes (mono8) -> walker identity.

Frames come from ``sensor_msgs/Image`` on ``camera/image_raw`` (``camera`` parameter empty), from a
camera device opened with OpenCV (``camera`` = device index or /dev/video path), or from a video file
(``camera`` = its path; played at ``camera_rate_hz`` and looped). The library's camera front end
(``runtime.camera_frontend``; parameters ``silhouette_method``, ``camera_detector``, ``camera_segmenter``,
``camera_segmenter_onnx``, ``max_walkers``) tracks each walker in view and gives its pretreated silhouettes
(64x64, as the recognizer was trained), published mono8 on ``camera/silhouette``. With a gallery
configured, every ``silhouette_window`` silhouettes of one track are matched by the library's recognizer
and a ``WalkerIdentity`` is published on ``walker_identity``.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Image

from metagait_edge import ros
from metagait_edge.ros import msgs
from metagait_edge.runtime.camera_frontend import CameraFrontEnd
from metagait_edge_interfaces.msg import WalkerIdentity
from metagait_edge_ros.common import (
    DEFAULT_QOS, SENSOR_QOS, RclpyFactory, configure_failed, declare_gait_params, on_runtime_params,
    read_gait_params, refuse_invalid_transitions, spin_node,
)
from metagait_edge_ros.runtime_adapter import load_recognizer


class CameraNode(LifecycleNode):
    def __init__(self, **kwargs) -> None:
        super().__init__("camera_node", **kwargs)
        self.factory = RclpyFactory()
        declare_gait_params(self)
        refuse_invalid_transitions(self)
        self.params = None
        self.capture = None
        self.subscription = None
        self.timer = None
        self.recognizer = None
        self.windows: dict[int, list[np.ndarray]] = {}  # per camera track: silhouettes of the next identity query
        self.front_end = None
        on_runtime_params(self, lambda: self.params is not None, self._apply_params)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            params = read_gait_params(self)
            camera = params.camera
            if camera and not camera.isdigit() and not os.path.exists(camera):
                raise ValueError(f"camera: {camera!r} does not exist (a device index, a /dev/video path or a video file)")
            self.recognizer = load_recognizer(params) if params.gallery_path else None
            front_end = CameraFrontEnd(params.camera_config)  # e.g. segmentation without mediapipe: say so now
        except Exception as exc:  # a bad parameter or an unusable gallery: stay unconfigured, say why
            return configure_failed(self, exc)
        self.params = params
        if self.recognizer is None:
            self.get_logger().info("no gallery_path: publishing silhouettes only")
        self.front_end = front_end
        self.pub_silhouette = self.create_lifecycle_publisher(Image, ros.SILHOUETTE_TOPIC, SENSOR_QOS)
        self.pub_identity = self.create_lifecycle_publisher(WalkerIdentity, ros.IDENTITY_TOPIC, DEFAULT_QOS)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        camera = self.params.camera
        if camera:
            self.capture = cv2.VideoCapture(int(camera) if camera.isdigit() else camera)
            if not self.capture.isOpened():
                self.get_logger().error(f"cannot open camera {camera!r}")
                return TransitionCallbackReturn.FAILURE
            self.timer = self.create_timer(1.0 / self.params.camera_rate_hz, self._on_capture)
        else:
            self.subscription = self.create_subscription(Image, ros.IMAGE_TOPIC, self._on_image, SENSOR_QOS)
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.timer is not None:
            self.destroy_timer(self.timer)
            self.timer = None
        if self.subscription is not None:
            self.destroy_subscription(self.subscription)
            self.subscription = None
        if self.capture is not None:
            self.capture.release()
            self.capture = None
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        self.destroy_lifecycle_publisher(self.pub_silhouette)
        self.destroy_lifecycle_publisher(self.pub_identity)
        self.params = self.recognizer = None
        self.windows.clear()
        if self.front_end is not None:
            self.front_end.close()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def release(self) -> None:
        if self.capture is not None:
            self.capture.release()
            self.capture = None

    def _apply_params(self, params) -> None:
        self.params = params

    def _on_capture(self) -> None:
        ok, frame = self.capture.read()
        if not ok and not self.params.camera.isdigit():
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)  # a video file: play it again
            self.front_end.close()  # a new pass of the video: learn its scene and tracks again
            self.front_end = CameraFrontEnd(self.params.camera_config)
            self.windows.clear()
            ok, frame = self.capture.read()
        if ok:
            self._process(frame, self.get_clock().now().nanoseconds)

    def _on_image(self, message: Image) -> None:
        try:
            frame = msgs.image_from_message(message)
        except ValueError as exc:
            self.get_logger().warning(str(exc), throttle_duration_sec=5.0)
            return
        if message.encoding == "rgb8":
            frame = frame[..., ::-1]
        self._process(frame, msgs.stamp_ns(message.header.stamp))

    def _process(self, frame: np.ndarray, stamp_ns: int) -> None:
        result = self.front_end.process(frame)
        self.get_logger().info(f"camera front end: {self.front_end.counters.as_dict()}", throttle_duration_sec=30.0)
        for track in result.ended_tracks:
            self.windows.pop(track, None)
        for sil in result.silhouettes:
            self._on_silhouette(sil.silhouette, sil.track, stamp_ns)

    def _on_silhouette(self, silhouette: np.ndarray, track: int, stamp_ns: int) -> None:
        self.pub_silhouette.publish(msgs.image_message(silhouette, stamp_ns, "camera", self.factory, "mono8"))
        if self.recognizer is None:
            return
        window = self.windows.setdefault(track, [])
        window.append(silhouette)
        if len(window) >= self.params.silhouette_window:
            identity = self.recognizer.identify(np.stack(window), stamp_ns)
            if not self.params.publish_embedding:
                identity.embedding = np.zeros(0, np.float32)
            self.pub_identity.publish(msgs.identity_message(identity, self.factory))
            window.clear()


def main(args=None) -> None:
    spin_node("camera_node", CameraNode, args=args)
