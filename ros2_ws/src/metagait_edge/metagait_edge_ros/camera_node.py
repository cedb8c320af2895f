"""camera_node: camera frames -> silhouettes (mono8) -> walker identity.

Frames come from ``sensor_msgs/Image`` on ``camera/image_raw`` (``camera`` parameter empty), from a
camera device opened with OpenCV (``camera`` = device index or /dev/video path), or from a video file
(``camera`` = its path; played at ``camera_rate_hz`` and looped). The library's camera front end
(``runtime.camera_frontend``; parameters ``silhouette_method``, ``camera_detector``, ``camera_segmenter``,
``camera_segmenter_onnx``, ``max_walkers``) tracks each walker in view and gives its pretreated silhouettes
(64x64, as the recognizer was trained), published mono8 on ``camera/silhouette``. With a gallery
configured, every ``silhouette_window`` silhouettes of one track are matched by the library's recognizer
and a ``WalkerIdentity`` is published on ``walker_identity``.

The ``enroll`` action (``Enroll``) enrolls the walker in view from the same stream: the goal's number of
silhouettes is collected (while identification goes on), every ``silhouette_window`` of them becomes one
template, and the gallery file (``gallery_path``, created by the first enrollment when its folder exists) is
rewritten atomically. It runs in a reentrant callback group on a multi-threaded executor, so frames keep
flowing while it waits; one enrollment at a time.
"""

from __future__ import annotations

import os
import threading
import time

import cv2
import numpy as np
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Image

from metagait_edge import ros
from metagait_edge.ros import msgs
from metagait_edge.runtime.camera_frontend import CameraFrontEnd
from metagait_edge_interfaces.action import Enroll
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
        self.enroll_server = None
        self.enrolling: dict[int, list[np.ndarray]] | None = None  # per track, for the running Enroll goal
        self.enroll_crowded = 0  # frames with several walkers in view while enrolling
        self.enroll_busy = threading.Lock()
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
        if self.recognizer is not None:
            self.enroll_server = ActionServer(
                self, Enroll, ros.ENROLL_ACTION, execute_callback=self._execute_enroll,
                goal_callback=self._on_enroll_goal, cancel_callback=lambda goal: CancelResponse.ACCEPT,
                callback_group=ReentrantCallbackGroup(),
            )
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
        if self.enroll_server is not None:
            self.enroll_server.destroy()
            self.enroll_server = None
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
        if self.enrolling is not None and len({s.track for s in result.silhouettes}) > 1:
            self.enroll_crowded += 1
        for track in result.ended_tracks:
            self.windows.pop(track, None)
        for sil in result.silhouettes:
            self._on_silhouette(sil.silhouette, sil.track, stamp_ns)

    def _on_silhouette(self, silhouette: np.ndarray, track: int, stamp_ns: int) -> None:
        self.pub_silhouette.publish(msgs.image_message(silhouette, stamp_ns, "camera", self.factory, "mono8"))
        if self.recognizer is None:
            return
        enrolling = self.enrolling
        if enrolling is not None:
            enrolling.setdefault(track, []).append(silhouette)
        window = self.windows.setdefault(track, [])
        window.append(silhouette)
        if len(window) >= self.params.silhouette_window:
            identity = self.recognizer.identify(np.stack(window), stamp_ns)
            if not self.params.publish_embedding:
                identity.embedding = np.zeros(0, np.float32)
            self.pub_identity.publish(msgs.identity_message(identity, self.factory))
            window.clear()

    def _on_enroll_goal(self, goal: Enroll.Goal) -> GoalResponse:
        if not goal.walker.strip():
            self.get_logger().warning("rejecting enrollment: empty walker id")
            return GoalResponse.REJECT
        if self.timer is None and self.subscription is None:
            self.get_logger().warning("rejecting enrollment: camera_node is not active")
            return GoalResponse.REJECT
        if self.enroll_busy.locked():
            self.get_logger().warning("rejecting enrollment: another enrollment is running")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _execute_enroll(self, goal_handle) -> Enroll.Result:
        goal, result = goal_handle.request, Enroll.Result()
        result.gallery_path = self.params.gallery_path
        if not self.enroll_busy.acquire(blocking=False):
            goal_handle.abort()
            result.reason = "another enrollment is running"
            return result
        required = int(goal.frames) or 3 * self.params.silhouette_window
        # A walker crossing the view gives a silhouette in most frames; four times as long is plenty.
        deadline = time.monotonic() + max(30.0, 4.0 * required / self.params.camera_rate_hz)
        tracks: dict[int, list[np.ndarray]] = {}

        def collected() -> int:
            return max((len(v) for v in list(tracks.values())), default=0)

        try:
            self.enroll_crowded = 0
            self.enrolling = tracks
            while collected() < required and not goal_handle.is_cancel_requested and time.monotonic() < deadline:
                feedback = Enroll.Feedback()
                feedback.frames_collected, feedback.frames_required = min(collected(), required), required
                goal_handle.publish_feedback(feedback)
                time.sleep(0.2)
            self.enrolling = None
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
                result.reason = "cancelled"
                return result
            if self.enroll_crowded:  # whose silhouettes would they be? Enrollment needs the walker alone in view.
                goal_handle.abort()
                result.reason = (f"several walkers in view in {self.enroll_crowded} frame(s) while enrolling; "
                                 f"enrollment needs the walker alone")
                return result
            if collected() < required:
                goal_handle.abort()
                result.reason = f"{collected()} of {required} silhouettes before the timeout: is the walker in view?"
                return result
            silhouettes = max(tracks.values(), key=len)  # one walker, maybe over consecutive tracks (re-entering)
            done = self.recognizer.enroll(goal.walker, np.stack(silhouettes[:required]), self.params.silhouette_window)
        except Exception as exc:  # report any library failure to the action client, not just the log
            self.get_logger().error(f"enrollment of {goal.walker!r} failed: {exc}")
            goal_handle.abort()
            result.reason = str(exc)
            return result
        finally:
            self.enrolling = None
            self.enroll_busy.release()
        result.success = True
        result.templates_added, result.templates_total = len(done.added), int(done.templates)
        self.get_logger().info(f"enrolled {goal.walker!r}: {len(done.added)} template(s), {done.templates} in "
                               f"{self.params.gallery_path}")
        goal_handle.succeed()
        return result


def main(args=None) -> None:
    spin_node("camera_node", CameraNode, lambda: MultiThreadedExecutor(num_threads=2), args=args)
