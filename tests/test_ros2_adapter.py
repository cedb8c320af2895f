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


def test_missing_runtime_pieces_fail_with_a_named_module(adapter):
    runtime_adapter, params = adapter
    try:
        import metagait_edge.runtime.orchestrator  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="metagait_edge.runtime.orchestrator.build_runtime"):
            runtime_adapter.load_runtime(params.GaitParams())
    else:
        pytest.skip("the runtime orchestrator exists: the nodes use it")


def test_trajectory_status_maps_to_runtime_zmq_statuses(adapter):
    runtime_adapter, _ = adapter
    from metagait_edge.ros import msgs
    from metagait_edge.runtime.messages import STATUSES

    assert set(runtime_adapter.ZMQ_STATUS) == {msgs.STATUS_OK, msgs.STATUS_CLAMPED, msgs.STATUS_FALLBACK, msgs.STATUS_STALE}
    assert set(runtime_adapter.ZMQ_STATUS.values()) <= set(STATUSES)
