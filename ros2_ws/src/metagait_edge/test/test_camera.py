"""`ros2 launch metagait_edge gait.launch.py use_camera:=true camera:=<video file>`: silhouettes and identity.

The video is the project's rendered side view of the HuGaDB walker whose IMU walk feeds the graph; the
gallery is enrolled (as `metagait-edge demo` does) from another rendering of the same walker plus a
synthetic distractor. The launch is ended with SIGTERM, as a service manager ends it (test_graph.py ends its
launch with SIGINT).
"""

from __future__ import annotations

import signal
import time

import cv2
import numpy as np
import pytest
from rclpy.action import ActionClient
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import Image

from conftest import WALK, assert_nodes_ended_cleanly_after_sigterm, launch_gait, spin_for, spin_until, wait_state
from metagait_edge import ros
from metagait_edge_interfaces.action import Calibrate
from metagait_edge_interfaces.msg import GaitTrajectory, WalkerIdentity
from metagait_edge_ros.common import DEFAULT_QOS, SENSOR_QOS

WALKER = 8  # HuGaDB walker of WALK


def _frames(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(frame)


@pytest.fixture(scope="module")
def video_and_gallery(tmp_path_factory):
    from metagait_edge.recognition.gallery import Gallery
    from metagait_edge.runtime.camera import Recognizer, SilhouetteExtractor, load_recognition_model, silhouettes_from_frames
    from metagait_edge.runtime.virtual_walker import load_walker, render_walker_video, synthetic_walker

    tmp = tmp_path_factory.mktemp("camera")
    spec = load_walker(WALKER)
    video = render_walker_video(spec, tmp / "camera.avi", n_frames=90, seed=11).path
    recognizer = Recognizer(load_recognition_model(), Gallery())
    for k, (walker, name) in enumerate([(spec, spec.name), (synthetic_walker(), "synthetic-01")]):
        enroll = render_walker_video(walker, tmp / f"enroll_{k}.avi", n_frames=90, seed=100 + k).path
        recognizer.enroll(name, silhouettes_from_frames(_frames(enroll), SilhouetteExtractor())[-30:])
    gallery = tmp / "gallery.npz"
    recognizer.gallery.save(gallery)
    return tmp, video, gallery, {spec.name, "synthetic-01"}


def test_video_file_camera_publishes_silhouettes_and_identity(video_and_gallery, probe):
    tmp, video, gallery, enrolled = video_and_gallery
    launched = launch_gait(tmp, "camera", {"serial_port": f"hugadb:{WALK}", "use_camera": "true", "camera": str(video)},
                           {"gallery_path": str(gallery), "silhouette_window": 30, "camera_rate_hz": 30.0,
                            "zmq_endpoint": ""})
    silhouettes, identities, trajectories = [], [], []
    sub_s = probe.create_subscription(Image, ros.SILHOUETTE_TOPIC, silhouettes.append, SENSOR_QOS)
    sub_i = probe.create_subscription(WalkerIdentity, ros.IDENTITY_TOPIC, identities.append, DEFAULT_QOS)
    sub_t = probe.create_subscription(GaitTrajectory, ros.TRAJECTORY_TOPIC, trajectories.append, DEFAULT_QOS)
    try:
        assert wait_state(probe, "camera_node", "active", 90.0) == "active", launched.output()[-4000:]
        calibrate = ActionClient(probe, Calibrate, "/calibrate")
        assert calibrate.wait_for_server(timeout_sec=90.0)  # every node is up before the SIGTERM below
        calibrate.destroy()
        assert spin_until(probe, lambda: len(identities) >= 3 and len(silhouettes) >= 30, 90.0), (
            len(silhouettes), len(identities), launched.output()[-3000:])
        # QoS as docs/ros2.md states it: silhouettes as sensor data, identities reliable
        for topic, want in ((f"/{ros.SILHOUETTE_TOPIC}", ReliabilityPolicy.BEST_EFFORT),
                            (f"/{ros.IDENTITY_TOPIC}", ReliabilityPolicy.RELIABLE)):
            pubs = probe.get_publishers_info_by_topic(topic)
            assert pubs and all(p.qos_profile.reliability == want for p in pubs), (topic, pubs)
        # The camera accepts only the walker of the video (the shipped model's calibrated threshold) or rejects a
        # window as unknown (with that threshold about every other window of this loop is rejected); the
        # trajectory node runs the walker after two agreeing answers and the generic model at once after a
        # rejected one: never another walker, never a profile (none is stored).
        from metagait_edge.runtime.virtual_walker import load_walker

        walker = load_walker(WALKER).name
        spin_for(probe, 15.0)
        assert {i.walker_id for i in identities if i.known} <= {walker}, identities
        assert all(i.best_match in enrolled for i in identities)
        # a rejected window says why; an accepted one has nothing to explain
        assert all(bool(i.reason) != i.known for i in identities), [(i.known, i.reason) for i in identities]
        assert {t.walker_id for t in trajectories} <= {"", walker}, {t.walker_id for t in trajectories}
        assert not any(t.personalized for t in trajectories)
    finally:
        probe.destroy_subscription(sub_s)
        probe.destroy_subscription(sub_i)
        probe.destroy_subscription(sub_t)
        launched.stop(signal.SIGTERM)
    assert all((s.encoding, s.height, s.width) == ("mono8", 64, 64) for s in silhouettes)
    filled = [float((np.frombuffer(bytes(s.data), np.uint8) > 127).mean()) for s in silhouettes]
    assert 0.005 < float(np.median(filled)) < 0.6, filled  # a walker-sized blob, neither empty nor the whole frame
    ident = identities[-1]
    assert ident.num_frames == 30 and ident.best_match in enrolled
    assert np.isfinite(ident.score)
    assert_nodes_ended_cleanly_after_sigterm(launched, {"imu_node", "trajectory_node", "calibration_node", "camera_node"})
