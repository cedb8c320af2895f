"""FileImuSource: a recorded HuGaDB file or rosbag2 bag replays, sample for sample, into a runtime's push_imu."""

from __future__ import annotations

import time

import numpy as np
import pytest

from metagait_edge.imu import protocol as P
from metagait_edge.imu.replay import FileImuSource, PacedThread, pace, read_rows
from metagait_edge.runtime.config import SourceConfig


class _Sink:
    def __init__(self) -> None:
        self.rows, self.seqs = [], []

    def push_imu(self, raw, t, seq) -> None:
        self.rows.append(np.array(raw, copy=True))
        self.seqs.append(seq)


def _replay(src: SourceConfig, expected: int) -> _Sink:
    sink = _Sink()
    source = FileImuSource(src, sink)
    source.start()
    deadline = time.monotonic() + 10
    while len(sink.rows) < expected and time.monotonic() < deadline:
        time.sleep(0.01)
    source.stop()
    return sink


def test_a_hugadb_replay_source_pushes_every_row_in_order(tmp_path):
    rows = np.arange(7 * 36, dtype=np.int16).reshape(7, 36)
    rec = tmp_path / "HuGaDB_v1_walking_02_00.txt"
    lines = ["\t".join(str(v) for v in list(r) + [0, 0, 1]) for r in rows]
    rec.write_text("#Activity\twalking\n#ActivityID\t1\n#Date\t2017\n" + "\t".join(P.HUGADB_COLUMNS) + "\n"
                   + "\n".join(lines) + "\n")
    sink = _replay(SourceConfig(kind="replay", path=rec, rate_hz=1000.0), len(rows))
    assert sink.seqs == list(range(7))
    assert np.array_equal(np.stack(sink.rows), rows)


def test_a_recorded_bag_replays_every_imu_frame_into_the_runtime(tmp_path):
    """The runtime takes a rosbag2 bag (as ``metagait-edge record`` writes it) as its IMU input."""
    pytest.importorskip("rosbags", reason="bags need rosbags (dev extra)")
    from metagait_edge.cli import main
    from metagait_edge.ros.bag import BagReader  # importing it registers the rosbag reader

    bag = tmp_path / "session"
    assert main(["record", "--out", str(bag), "--source", "synthetic", "--frames", "120"]) == 0
    with BagReader(bag) as reader:
        expected = np.stack([f.raw for f in reader.imu_frames(strict=False)])
    sink = _replay(SourceConfig(kind="rosbag", path=bag, rate_hz=2000.0), len(expected))
    assert len(expected) == 120
    assert np.array_equal(np.stack(sink.rows), expected)


def test_an_unknown_recorded_kind_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="'camera'"):
        read_rows("camera", tmp_path / "x")


def test_pace_keeps_an_absolute_schedule_loops_and_stops_during_a_wait():
    now, calls = [0.0], []

    def sleep(dt):
        now[0] += dt

    def emit(k):
        calls.append((k, round(now[0], 9)))
        now[0] += 0.03 if k == 1 else 0.001  # call 1 is late by 2 periods' worth

    sent, _ = pace(emit, 3, 100.0, loop=True, max_frames=7, clock=lambda: now[0], sleep=sleep)
    assert sent == 7 and [k for k, _ in calls] == list(range(7))
    # item k at k * 10 ms; the late ones go at once and the schedule is kept (item 5 back on time)
    assert [t for _, t in calls] == pytest.approx([0.0, 0.01, 0.04, 0.041, 0.042, 0.05, 0.06])
    stopped = []
    sent, _ = pace(lambda k: stopped.append(k), 5, 100.0, clock=lambda: now[0],
                   sleep=lambda dt: None, should_stop=lambda: len(stopped) == 2)
    assert sent == 2 and stopped == [0, 1]


def test_paced_thread_stops_without_one_more_call_and_refuses_nothing_to_play():
    calls = []
    player = PacedThread(calls.append, 4, 2.0, thread_name="t", loop=True).start()  # a call every 0.5 s
    time.sleep(0.1)
    t0 = time.monotonic()
    player.stop(2.0)
    assert time.monotonic() - t0 < 0.3 and calls == [0]  # stop ends the wait at once; no call after it
    done = PacedThread(calls.append, 3, 500.0, thread_name="t").start()
    done.wait(2.0)
    assert calls == [0, 0, 1, 2]
    with pytest.raises(ValueError, match="nothing to replay"):
        PacedThread(calls.append, 0, 10.0, thread_name="empty")
