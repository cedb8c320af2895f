from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="needs rosbags (pip install -e .[ros])")

from metagait_edge.cli import main  # noqa: E402
from metagait_edge.ros import bag, msgs  # noqa: E402


def _write_session(path, frames=30):
    session = bag.synthetic_session(frames, image_every=10, cycle_frames=12)
    with bag.BagWriter(path, namespace="exo") as writer:
        for raw, stamp in zip(session["rows"], session["stamps"]):
            writer.write_imu_frame(raw, int(stamp))
        for stamp, image in session["images"]:
            writer.write_image(image, stamp)
        for traj in session["trajectories"]:
            writer.write_trajectory(traj)
    return session


def test_bag_round_trip_is_exact(tmp_path):
    path = tmp_path / "session"
    session = _write_session(path)
    assert sorted(p.name for p in path.iterdir()) == ["metadata.yaml", "session.mcap"]
    assert [p.name for p in tmp_path.iterdir()] == ["session"]  # no temporary folder left behind
    with bag.BagReader(path) as reader:
        summary = reader.summary()
        assert summary.storage == "mcap"
        counts = {t.topic: t.count for t in summary.topics}
        assert counts["/exo/imu/rf"] == 30 and counts["/exo/camera/silhouette"] == 3
        assert counts["/exo/gait/trajectory"] == 2 and counts["/exo/gait/joint_trajectory"] == 2
        frames = list(reader.imu_frames())
        assert [f.seq for f in frames] == list(range(30))
        assert all(np.array_equal(f.raw, raw) for f, raw in zip(frames, session["rows"]))
        assert [f.t_us for f in frames] == [int(s) // 1000 for s in session["stamps"]]
        images = [(t, msgs.image_from_message(m)) for _, t, m in reader.messages(["/exo/camera/silhouette"])]
        assert [t for t, _ in images] == [s for s, _ in session["images"]]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(images, session["images"]))
        trajs = [msgs.trajectory_from_message(m) for _, _, m in reader.messages(["/exo/gait/trajectory"])]
        for got, want in zip(trajs, session["trajectories"]):
            assert np.array_equal(got.trajectory, want.trajectory) and got.stamp_ns == want.stamp_ns
        with pytest.raises(bag.BagError, match="no topic"):
            list(reader.messages(["/nope"]))


def test_incomplete_imu_frame_is_named_or_skipped(tmp_path):
    path = tmp_path / "gap"
    raw = np.arange(36, dtype=np.int16)
    with bag.BagWriter(path) as writer:
        writer.write_imu_frame(raw, 1000)
        for reading in msgs.readings_from_raw(raw, 2000)[:4]:
            writer.write_imu(reading)
        writer.write_imu_frame(raw, 3000)
    with bag.BagReader(path) as reader:
        with pytest.raises(bag.BagError, match="stamp 2000 ns lacks sensor.*ls, lt"):
            list(reader.imu_frames())
        frames = list(reader.imu_frames(strict=False))
        assert [f.t_us for f in frames] == [1, 3] and reader.incomplete_frames == 1


def test_writer_refuses_existing_bag_and_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "b"
    _write_session(path, frames=2)
    with pytest.raises(bag.BagError, match="exists already"):
        bag.BagWriter(path).__enter__()
    with pytest.raises(RuntimeError):
        with bag.BagWriter(tmp_path / "c") as writer:
            writer.write_imu_frame(np.zeros(36, np.int16), 0)
            raise RuntimeError("crash")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    with pytest.raises(bag.BagError, match="not found"):
        bag.BagReader(tmp_path / "missing").__enter__()


def test_hugadb_rows_parse_with_glitches(tmp_path):
    from metagait_edge.imu.protocol import HUGADB_COLUMNS

    f = tmp_path / "HuGaDB_v1_walking_99_00.txt"
    rows = np.arange(3 * 36).reshape(3, 36) - 50
    lines = ["#Activity\twalking", "#ActivityID\t1", "#Date 01-01", "\t".join(HUGADB_COLUMNS)]
    lines += ["\t".join(map(str, list(r) + [120, 121, 1])) for r in rows]
    lines.insert(5, "\t".join(["40000"] * 39))  # a serial glitch outside int16
    f.write_text("\n".join(lines) + "\n")
    parsed = bag.read_hugadb_rows(f)
    assert parsed.skipped == 1 and np.array_equal(parsed.rows, rows)
    empty = tmp_path / "empty.txt"
    empty.write_text("#Activity\n")
    with pytest.raises(bag.BagError, match="empty.txt: no HuGaDB data rows"):
        bag.read_hugadb_rows(empty)


def test_record_and_replay_commands(tmp_path, capsys):
    from metagait_edge.imu.protocol import HUGADB_COLUMNS

    f = tmp_path / "walk.txt"
    rows = (np.arange(10 * 36).reshape(10, 36) * 7) % 3000
    f.write_text("\t".join(HUGADB_COLUMNS) + "\n" + "\n".join("\t".join(map(str, list(r) + [0, 0, 1])) for r in rows))
    out = tmp_path / "rec"
    assert main(["record", "--out", str(out), "--source", "hugadb", str(f), str(f), "--rate", "50"]) == 0
    with bag.BagReader(out) as reader:
        frames = list(reader.imu_frames())
    assert len(frames) == 20
    assert np.array_equal(np.stack([fr.raw for fr in frames]), np.concatenate([rows, rows]))
    assert frames[1].t_us - frames[0].t_us == 20_000  # 50 Hz
    capsys.readouterr()
    assert main(["replay", str(out)]) == 0
    text = capsys.readouterr().out
    assert "/imu/rf" in text and "IMU frames: 20" in text
    assert main(["record", "--out", str(out), "--source", "hugadb", str(f)]) == 1
    assert "exists already" in capsys.readouterr().err
    assert main(["record", "--out", str(tmp_path / "x"), "--source", "hugadb"]) == 1
    assert main(["replay", str(tmp_path / "nope")]) == 1
    assert "bag not found" in capsys.readouterr().err


def test_synthetic_session_walks_like_the_synthetic_imu():
    """The session's IMU is the library's one synthetic walker: the gait detector finds one cycle per stride."""
    from metagait_edge.data.gait_events import CausalGaitDetector
    from metagait_edge.imu.protocol import CHANNEL_NAMES, channel_scale

    rate, cycle_frames = 58.8, 54
    session = bag.synthetic_session(20 * cycle_frames, rate_hz=rate, cycle_frames=cycle_frames)
    gyro = (session["rows"] * channel_scale(np.float32))[:, CHANNEL_NAMES.index("gyro_rs_y")]
    events = CausalGaitDetector(rate).run(gyro)
    assert 18 <= len(events) <= 20
    assert np.all(np.abs(np.diff([e.index for e in events]) - cycle_frames) <= 2)
    assert len(session["trajectories"]) == 20
    acc = session["rows"] * channel_scale(np.float32)
    for seg in ("rs", "ls", "rt", "lt"):  # HuGaDB's mounting: gravity along each shank's and thigh's -x
        assert -1.3 < acc[:, CHANNEL_NAMES.index(f"acc_{seg}_x")].mean() < -0.7
