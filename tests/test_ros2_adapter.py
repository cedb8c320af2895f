"""The nodes' rclpy-free adapter to the runtime (ros2_ws/src/metagait_edge/metagait_edge_ros/runtime_adapter.py)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="needs rosbags (pip install -e .[ros])")

PKG = Path(__file__).resolve().parents[1] / "ros2_ws" / "src" / "metagait_edge"


@pytest.fixture
def adapter():
    sys.path.insert(0, str(PKG))
    try:
        from metagait_edge_ros import params, runtime_adapter
        yield runtime_adapter, params
    finally:
        sys.path.remove(str(PKG))


def test_bag_source_replays_recorded_frames(adapter, tmp_path):
    runtime_adapter, params = adapter
    from metagait_edge.ros import bag

    rows = bag.synthetic_session(8)["rows"]
    with bag.BagWriter(tmp_path / "b") as writer:
        for i, raw in enumerate(rows):
            writer.write_imu_frame(raw, 1_000_000 * i)
    got, done = [], threading.Event()

    def on_frame(frame, host_time):
        got.append(frame)
        if len(got) == len(rows):
            done.set()

    source = runtime_adapter.open_imu_source(
        params.GaitParams(serial_port=f"bag:{tmp_path / 'b'}", imu_rate_hz=400.0), on_frame)
    source.start()
    try:
        assert done.wait(5.0)
    finally:
        source.stop()
    assert all(np.array_equal(f.raw, r) for f, r in zip(got[: len(rows)], rows))


def test_unusable_sources_and_models_name_their_parameter(adapter, tmp_path):
    runtime_adapter, params = adapter
    on_frame = lambda frame, t: None  # noqa: E731
    for port, message in (("/dev/ttyMETAGAIT_NOPE", "serial_port: '/dev/ttyMETAGAIT_NOPE' does not exist"),
                          (f"bag:{tmp_path / 'none'}", "serial_port: bag folder"),
                          ("hugadb:/nonexistent/HuGaDB_v1_walking_99_99.txt", "serial_port: 'hugadb:")):
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            runtime_adapter.open_imu_source(params.GaitParams(serial_port=port), on_frame)
    # pyserial URLs are not paths: they are checked when the port opens, not here
    assert runtime_adapter.open_imu_source(params.GaitParams(serial_port="loop://"), on_frame) is not None
    with pytest.raises(ValueError, match="model_path: '/nonexistent/m.safetensors' does not exist"):
        runtime_adapter.load_runtime(params.GaitParams(model_path="/nonexistent/m.safetensors"))
    with pytest.raises(ValueError, match="gallery_path: .* does not exist \\(nor its folder\\)"):
        runtime_adapter.load_recognizer(params.GaitParams(gallery_path=str(tmp_path / "none" / "g.safetensors")))


def test_joint_names_are_checked_against_the_channels(adapter):
    _, params = adapter
    with pytest.raises(ValueError, match="distinct non-empty"):
        params.GaitParams(joint_names=["hip", "hip"])
    with pytest.raises(ValueError, match="must name the 2 channels"):
        params.GaitParams(joint_names=["hip"]).check_joint_names(["a", "b"])
    params.GaitParams(joint_names=["hip", "knee"]).check_joint_names(["a", "b"])
    params.GaitParams().check_joint_names(["a", "b"])


def test_reference_maps_to_trajectory_status_and_hold_has_no_samples(adapter):
    runtime_adapter, _ = adapter
    from metagait_edge.ros import msgs
    from metagait_edge.runtime.reference import Reference

    traj = np.zeros((6, 101), np.float32)
    ref = Reference(traj, [f"c{i}" for i in range(6)], "ana", True, 0.3, 1.1, "OK", "", False, 4, 12.5)
    assert runtime_adapter.trajectory_output(ref, 5, "base").status == msgs.STATUS_OK
    clamped = Reference(traj, ref.channel_names, "ana", True, 0.3, 1.1, "OK", "", True, 4, 12.5)
    assert runtime_adapter.trajectory_output(clamped, 5, "base").status == msgs.STATUS_CLAMPED
    generic = Reference(traj, ref.channel_names, "", False, 0.3, 1.1, "DEGRADED", "generic", False, 4, 12.5)
    out = runtime_adapter.trajectory_output(generic, 5, "base")
    assert out.status == msgs.STATUS_FALLBACK and out.stamp_ns == 5 and out.phase == pytest.approx(0.3)
    hold = runtime_adapter.hold_output(ref.channel_names, 9, "ana", "base")
    message = msgs.trajectory_message(hold)
    assert hold.status == msgs.STATUS_STALE and len(message.data) == 0 and message.num_channels == 6
