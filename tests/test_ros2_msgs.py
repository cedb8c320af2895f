from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="needs rosbags (pip install -e .[ros])")

from rosbags.typesys import get_types_from_msg  # noqa: E402

from metagait_edge import ros  # noqa: E402
from metagait_edge.ros import msgs  # noqa: E402

IFACES = Path(__file__).resolve().parents[1] / "ros2_ws" / "src" / "metagait_edge_interfaces"


def test_interface_files_parse_and_match_library_definitions():
    files = sorted(IFACES.glob("msg/*.msg"))
    assert {f"metagait_edge_interfaces/msg/{f.stem}" for f in files} == set(msgs.MSG_DEFINITIONS)
    for f in files:
        name = f"metagait_edge_interfaces/msg/{f.stem}"
        assert get_types_from_msg(f.read_text(), name) == get_types_from_msg(msgs.MSG_DEFINITIONS[name], name)
    actions = sorted(IFACES.glob("action/*.action"))
    assert {f"metagait_edge_interfaces/action/{f.stem}" for f in actions} == set(msgs.ACTION_DEFINITIONS)
    for f in actions:
        name = f"metagait_edge_interfaces/action/{f.stem}"
        assert msgs.action_types(name, f.read_text()) == msgs.action_types(name, msgs.ACTION_DEFINITIONS[name])


def test_library_ships_the_interface_files_of_the_ros_package_unchanged():
    """One schema: the library reads ros2_ws/src/metagait_edge_interfaces' own files (package data), no copy."""
    from metagait_edge.ros.msgs import schema

    for kind in ("msg", "action"):
        shipped = schema.interface_files(kind)
        in_ws = {f"metagait_edge_interfaces/{kind}/{f.stem}": f for f in sorted(IFACES.glob(f"{kind}/*.{kind}"))}
        assert set(shipped) == set(in_ws) and shipped, kind
        for name, f in in_ws.items():
            assert shipped[name].read_bytes() == f.read_bytes(), f"{name}: the library's copy diverged"
    # the constants the code uses are the files' constants
    traj = (IFACES / "msg" / "GaitTrajectory.msg").read_text()
    assert schema.constants(traj) == {"STATUS_OK": msgs.STATUS_OK, "STATUS_CLAMPED": msgs.STATUS_CLAMPED,
                                      "STATUS_FALLBACK": msgs.STATUS_FALLBACK, "STATUS_STALE": msgs.STATUS_STALE}
    assert schema.strip_comments("# a comment\nuint8 X=1  # why\n\nstring s\n") == "uint8 X=1\nstring s\n"


def test_cmake_lists_every_interface_file():
    cmake = (IFACES / "CMakeLists.txt").read_text()
    for f in list(IFACES.glob("msg/*.msg")) + list(IFACES.glob("action/*.action")):
        assert f'"{f.parent.name}/{f.name}"' in cmake, f"{f.name} missing from rosidl_generate_interfaces"


def test_typestore_registers_project_and_action_types():
    store = msgs.typestore()
    for name in (*msgs.MSG_DEFINITIONS, "metagait_edge_interfaces/action/Calibrate_Goal",
                 "metagait_edge_interfaces/action/Calibrate_Result",
                 "metagait_edge_interfaces/action/Calibrate_FeedbackMessage"):
        assert name in store.types
    goal = store.types["metagait_edge_interfaces/action/Calibrate_Goal"](walker="ana", shots=5)
    back = msgs.deserialize(msgs.serialize(goal, "metagait_edge_interfaces/action/Calibrate_Goal"),
                            "metagait_edge_interfaces/action/Calibrate_Goal")
    assert (back.walker, back.shots) == ("ana", 5)
    assert store.types[msgs.GAIT_TRAJECTORY].STATUS_STALE == msgs.STATUS_STALE


def test_action_without_three_sections_is_rejected():
    with pytest.raises(ValueError, match="Broken.*section"):
        msgs.split_action("string a\n---\nbool b\n", "Broken")


def test_trajectory_round_trips_exactly_through_cdr():
    rng = np.random.default_rng(1)
    out = msgs.TrajectoryOutput(rng.normal(size=(6, 101)).astype(np.float32), [f"c{i}" for i in range(6)],
                                1_700_000_000_123_456_789, "walker-7", True, 0.375, 1.05, msgs.STATUS_CLAMPED,
                                "pelvis")
    data = msgs.serialize(msgs.trajectory_message(out), msgs.GAIT_TRAJECTORY)
    back = msgs.trajectory_from_message(msgs.deserialize(data, msgs.GAIT_TRAJECTORY))
    assert back.trajectory.dtype == np.float32 and back.trajectory.shape == (6, 101)
    assert np.array_equal(back.trajectory, out.trajectory)
    for field in ("channel_names", "stamp_ns", "walker_id", "personalized", "status", "frame_id"):
        assert getattr(back, field) == getattr(out, field)
    assert back.phase == np.float32(0.375) and back.cycle_duration == np.float32(1.05)


def test_trajectory_validation_names_the_problem():
    with pytest.raises(ValueError, match="2 channel name"):
        msgs.TrajectoryOutput(np.zeros((3, 101)), ["a", "b"], 0)
    with pytest.raises(ValueError, match="NaN"):
        msgs.TrajectoryOutput(np.full((1, 101), np.nan), ["a"], 0)
    bad = msgs.trajectory_message(msgs.TrajectoryOutput(np.zeros((2, 5)), ["a", "b"], 0))
    bad.num_points = 6
    with pytest.raises(ValueError, match="num_channels"):
        msgs.trajectory_from_message(bad)


def test_joint_trajectory_times_points_over_the_cycle():
    out = msgs.TrajectoryOutput(np.arange(2 * 101, dtype=np.float32).reshape(2, 101), ["hip", "knee"], 5, cycle_duration=1.0)
    jt = msgs.deserialize(msgs.serialize(msgs.joint_trajectory_message(out), msgs.JOINT_TRAJECTORY), msgs.JOINT_TRAJECTORY)
    assert list(jt.joint_names) == ["hip", "knee"] and len(jt.points) == 101
    assert np.array_equal(jt.points[10].positions, out.trajectory[:, 10].astype(np.float64))
    last = jt.points[-1].time_from_start
    assert (last.sec, last.nanosec) == (1, 0)
    assert jt.points[50].time_from_start.nanosec == 500_000_000


def test_identity_and_image_round_trip():
    ident = msgs.IdentityOutput("bob", True, 0.83, 0.6, 99, "bob", 30, np.linspace(-1, 1, 256))
    back = msgs.identity_from_message(msgs.deserialize(msgs.serialize(msgs.identity_message(ident), msgs.WALKER_IDENTITY), msgs.WALKER_IDENTITY))
    assert back.walker_id == "bob" and back.known and back.num_frames == 30 and back.stamp_ns == 99
    assert np.array_equal(back.embedding, ident.embedding)
    assert back.score == np.float32(0.83) and back.reason == ""
    # a rejected walker says why (the runtime reports it on the trajectory and falls back to the generic model)
    unknown = msgs.IdentityOutput("", False, 0.0, 0.6, 5, "bob", 30, reason="no calibrated threshold")
    back = msgs.identity_from_message(msgs.deserialize(msgs.serialize(msgs.identity_message(unknown), msgs.WALKER_IDENTITY), msgs.WALKER_IDENTITY))
    assert (back.known, back.best_match, back.reason) == (False, "bob", "no calibrated threshold")
    sil = (np.random.default_rng(0).random((64, 44)) > 0.5).astype(np.uint8) * 255
    msg = msgs.deserialize(msgs.serialize(msgs.image_message(sil, 12), msgs.IMAGE), msgs.IMAGE)
    assert msg.encoding == "mono8" and msg.step == 44
    assert np.array_equal(msgs.image_from_message(msg), sil)
    color = np.random.default_rng(1).integers(0, 255, (4, 5, 3), dtype=np.uint8)
    assert np.array_equal(msgs.image_from_message(msgs.image_message(color, 0)), color)
    with pytest.raises(ValueError, match="uint8"):
        msgs.image_message(np.zeros((4, 4), np.float32), 0)


def test_imu_reading_round_trip_and_units():
    raw = np.arange(-18, 18, dtype=np.int16) * 911
    readings = msgs.readings_from_raw(raw, 5_000_000_001)
    assert [r.sensor for r in readings] == list(ros.SENSORS)
    # rf acc x: counts / 16384 g * 9.80665; rf gyro x: counts / 16.4 deg/s in rad/s
    assert readings[0].accel[0] == pytest.approx(raw[0] / 16384 * 9.80665)
    assert readings[0].gyro[0] == pytest.approx(np.deg2rad(raw[3] / 16.4))
    decoded = []
    for r in readings:
        msg = msgs.deserialize(msgs.serialize(msgs.imu_message(r, frame_prefix="w/"), msgs.IMU), msgs.IMU)
        assert msg.header.frame_id == f"w/{r.sensor}" and msg.orientation_covariance[0] == -1.0
        back = msgs.imu_from_message(msg, frame_prefix="w/")
        assert back == r
        decoded.append(back)
    assert np.array_equal(msgs.raw_from_readings(reversed(decoded)), raw)
    with pytest.raises(ValueError, match="lacks sensor"):
        msgs.raw_from_readings(decoded[:5])
    with pytest.raises(ValueError, match="unknown sensor"):
        msgs.ImuReading("xx", 0, (0, 0, 0), (0, 0, 0))


def test_frame_assembler_completes_frames_and_counts_incomplete():
    asm = msgs.FrameAssembler()
    raw1 = np.arange(36, dtype=np.int16)
    raw2 = raw1 * 2
    r1, r2 = msgs.readings_from_raw(raw1, 100), msgs.readings_from_raw(raw2, 200)
    assert asm.add(r1[0]) is None
    outs = [asm.add(r) for r in r2]  # stamp 100 never completes
    assert outs[:-1] == [None] * 5
    stamp, raw = outs[-1]
    assert stamp == 200 and np.array_equal(raw, raw2)
    assert asm.incomplete == 1 and not asm.pending


def test_gait_phase_message_carries_the_runtime_estimate_and_its_status():
    from metagait_edge.runtime.phase_stream import PhaseEstimate

    ok = PhaseEstimate(1.0, (0.25, 0.75), 1.1, "stairs_up", 2, 0.9, "OK", "", "phasenet")
    back = msgs.deserialize(msgs.serialize(msgs.phase_message(ok, 1_500_000_000, "hip"), msgs.GAIT_PHASE), msgs.GAIT_PHASE)
    assert (back.phase_right, back.phase_left, back.mode, back.mode_index, back.source) == (0.25, 0.75, "stairs_up", 2, "phasenet")
    assert back.phase_rate == pytest.approx(1.1) and back.confidence == pytest.approx(0.9)
    assert msgs.stamp_ns(back.header.stamp) == 1_500_000_000 and back.header.frame_id == "hip"
    assert back.status == back.STATUS_OK == msgs.PHASE_STATUS["OK"]
    hold = PhaseEstimate(1.0, (0.0, 0.0), 0.0, "standing", 4, 0.97, "HOLD", "mode standing: no gait phase", "phasenet")
    h = msgs.phase_message(hold, 1)
    assert h.status == msgs.PHASE_STATUS["HOLD"] == 2 and h.reason == "mode standing: no gait phase"
    base = PhaseEstimate(1.0, (0.5, 0.1), 1.0, "unknown", -1, 0.0, "DEGRADED", "baseline", "baseline")
    assert msgs.phase_message(base, 1).status == msgs.PHASE_STATUS["DEGRADED"] == 1
    with pytest.raises(ValueError, match="unknown status 'STALE'"):
        msgs.phase_message(PhaseEstimate(1.0, (0.5, 0.1), 1.0, "unknown", -1, 0.0, "STALE", "", "baseline"), 1)
    assert ros.PHASE_TOPIC == "gait/phase" and ros.resolve(ros.PHASE_TOPIC) == "/gait/phase"
