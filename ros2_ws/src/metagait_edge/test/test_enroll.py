"""camera_node's `enroll` action (metagait_edge_interfaces/Enroll): enroll the walker of the live stream (here a
video-file camera of a rendered synthetic walker), then see that walker identified on `walker_identity`."""

from __future__ import annotations

import signal

import numpy as np
import pytest
from rclpy.action import ActionClient

from conftest import change_state, lifecycle_state, ros_run, spin_until
from metagait_edge import ros
from metagait_edge_interfaces.action import Enroll
from metagait_edge_interfaces.msg import WalkerIdentity
from metagait_edge_ros.common import DEFAULT_QOS

WALKER = "tall-01"


def _wait(probe, future, timeout: float):
    assert spin_until(probe, future.done, timeout), "no answer from the enroll action server"
    return future.result()


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from metagait_edge.runtime.virtual_walker import WalkerSpec, render_walker_video

    spec = WalkerSpec(WALKER, np.zeros((1, 36), np.int16), 58.8, 190, 95, "M", 100, "test")
    return render_walker_video(spec, tmp_path_factory.mktemp("enroll") / "camera.avi", n_frames=90, seed=11).path


def test_enroll_action_writes_the_gallery_and_the_walker_is_then_identified(video, probe, tmp_path):
    from metagait_edge.recognition.gallery import Gallery
    from metagait_edge.runtime.camera import load_recognition_model

    gallery = tmp_path / "galleries" / "walkers.safetensors"
    gallery.parent.mkdir()  # the folder must exist; the first enrollment writes the file
    node = ros_run("camera_node", "enroll_camera", {"camera": str(video), "gallery_path": str(gallery),
                                                    "silhouette_window": "30", "camera_rate_hz": "30.0"})
    identities: list = []
    sub = probe.create_subscription(WalkerIdentity, ros.IDENTITY_TOPIC, identities.append, DEFAULT_QOS)
    client = ActionClient(probe, Enroll, f"/{ros.ENROLL_ACTION}")
    try:
        assert lifecycle_state(probe, "enroll_camera", timeout=90.0) == "unconfigured", node.output()[-3000:]
        assert change_state(probe, "enroll_camera", "configure"), node.output()[-3000:]
        assert change_state(probe, "enroll_camera", "activate"), node.output()[-3000:]
        assert client.wait_for_server(timeout_sec=30.0)
        assert not _wait(probe, client.send_goal_async(Enroll.Goal(walker=" ", frames=30)), 30.0).accepted
        # nobody enrolled yet: whoever walks is unknown
        assert spin_until(probe, lambda: len(identities) >= 1, 60.0), node.output()[-3000:]
        assert not any(i.known for i in identities)

        handle = _wait(probe, client.send_goal_async(Enroll.Goal(walker=WALKER, frames=60)), 30.0)
        assert handle.accepted
        result = _wait(probe, handle.get_result_async(), 120.0).result
        assert result.success, (result.reason, node.output()[-3000:])
        assert (result.templates_added, result.templates_total, result.gallery_path) == (2, 2, str(gallery))
        written = Gallery.load(gallery)
        model = load_recognition_model()
        assert written.walkers == [WALKER] and written.num_sequences(WALKER) == 2
        assert written.model_fingerprint == model.fingerprint and written.threshold == model.open_set.threshold
        assert all(label.startswith("ROS camera_node") for label in written.labels(WALKER))

        identities.clear()
        assert spin_until(probe, lambda: any(i.known and i.walker_id == WALKER for i in identities), 60.0), (
            [(i.walker_id, i.best_match, i.score) for i in identities], node.output()[-3000:])
        again = _wait(probe, client.send_goal_async(Enroll.Goal(walker=WALKER, frames=30)), 30.0)
        assert _wait(probe, again.get_result_async(), 120.0).result.templates_total == 3  # a second pass adds
    finally:
        client.destroy()
        probe.destroy_subscription(sub)
        code = node.stop(signal.SIGTERM)
    assert code == 0, node.output()[-3000:]
