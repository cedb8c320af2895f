from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("cyclonedds", reason="needs cyclonedds (pip install -e .[ros])")
pytest.importorskip("rosbags", reason="needs rosbags (pip install -e .[ros])")

from metagait_edge.ros import dds, msgs  # noqa: E402


def _reading(i: int) -> msgs.ImuReading:
    return msgs.ImuReading("rs", 1_000_000_000 * i + 17, (0.5 * i, -9.81, 1.25), (0.01 * i, 0.2, -0.3))


def test_names_follow_ros2_dds_mapping():
    assert dds.dds_type_name(msgs.IMU) == "sensor_msgs::msg::dds_::Imu_"
    assert dds.Imu.__idl_typename__ == "sensor_msgs::msg::dds_::Imu_"
    assert dds.GaitTrajectory.__idl_typename__ == dds.dds_type_name(msgs.GAIT_TRAJECTORY)
    assert dds.WalkerIdentity.__idl_typename__ == dds.dds_type_name(msgs.WALKER_IDENTITY)
    from metagait_edge import ros
    assert ros.dds_topic(ros.imu_topic("rf"), "robot1") == "rt/robot1/imu/rf"
    with pytest.raises(ValueError, match="pkg/msg/Name"):
        dds.dds_type_name("Imu")


def test_idl_serialization_equals_rosbags_cdr():
    # Built field by field on the cyclonedds side, independently of the rosbags message.
    r = _reading(3)
    cov = [-1.0] + [0.0] * 8
    sample = dds.Imu(
        header=dds.Header(dds.Time(3, 17), "rs"), orientation=dds.Quaternion(0.0, 0.0, 0.0, 1.0),
        orientation_covariance=cov, angular_velocity=dds.Vector3(*r.gyro),
        linear_acceleration=dds.Vector3(*r.accel),
    )
    assert sample.serialize(use_version_2=False) == msgs.serialize(msgs.imu_message(r), msgs.IMU)
    traj = np.arange(3 * 101, dtype=np.float32).reshape(3, 101) / 7
    out = msgs.TrajectoryOutput(traj, ["a", "bb", "ccc"], 5_000_000_123, "w", True, 0.25, 1.1, msgs.STATUS_FALLBACK)
    idl = dds.GaitTrajectory(dds.Header(dds.Time(5, 123), "base_link"), "w", True, 0.25, 1.1, ["a", "bb", "ccc"],
                             3, 101, [float(v) for v in traj.ravel()], msgs.STATUS_FALLBACK)
    assert idl.serialize(use_version_2=False) == msgs.serialize(msgs.trajectory_message(out), msgs.GAIT_TRAJECTORY)
    back = msgs.trajectory_from_message(dds.from_idl(idl, msgs.GAIT_TRAJECTORY))
    assert np.array_equal(back.trajectory, traj)


_PUBLISHER = textwrap.dedent("""
    import sys, time
    from metagait_edge.ros import dds, msgs
    domain, count = int(sys.argv[1]), int(sys.argv[2])
    transport = dds.DdsTransport(domain, "wire", dds.loopback_config())
    pub = transport.publisher("imu/rs", msgs.IMU, dds.reliable_qos(100))
    deadline = time.monotonic() + 15
    while pub.matched() == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    if pub.matched() == 0:
        sys.exit("publisher: no subscriber matched within 15 s")
    for i in range(count):
        pub.publish(msgs.imu_message(msgs.ImuReading("rs", 1_000_000_000 * i + 17, (0.5 * i, -9.81, 1.25),
                                                     (0.01 * i, 0.2, -0.3))))
    pub.writer.wait_for_acks(5_000_000_000)
""")


@pytest.mark.slow
def test_imu_stream_over_loopback_between_processes():
    """A second process publishes on rt/wire/imu/rs over UDP on lo (no multicast); we receive raw CDR."""
    count = 20
    domain = dds.random_domain_id()
    transport = dds.DdsTransport(domain, "wire", dds.loopback_config())
    sub = transport.subscriber("imu/rs", msgs.IMU, dds.reliable_qos(100))
    assert sub.topic == "rt/wire/imu/rs"
    proc = subprocess.Popen([sys.executable, "-c", _PUBLISHER, str(domain), str(count)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        raw = sub.wait(count, timeout_s=25.0, raw=True)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        transport.close()
    assert proc.returncode == 0, err
    assert len(raw) == count, f"received {len(raw)} of {count} samples; publisher stderr: {err}"
    expected = [msgs.serialize(msgs.imu_message(_reading(i)), msgs.IMU) for i in range(count)]
    assert raw == expected  # the bytes on the wire are exactly rosbags' CDR, in order
    assert [msgs.imu_from_message(msgs.deserialize(b, msgs.IMU)) for b in raw] == [_reading(i) for i in range(count)]
