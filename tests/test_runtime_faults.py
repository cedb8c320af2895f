"""Faults through the runtime: corrupted serial bytes, a port that vanishes and returns, NaN input, a
subscriber that stops reading, kill -9 during a profile write, a full disk on a profile write."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from metagait_edge.imu.protocol import FrameDecoder, encode_frame  # noqa: E402
from metagait_edge.runtime.profiles import Profile, ProfileStore  # noqa: E402
from metagait_edge.runtime.virtual_walker import synthetic_walker  # noqa: E402
from tests.test_orchestrator import _runtime  # noqa: E402

WALKER = synthetic_walker(seconds=20)
CLEAN = b"".join(encode_frame(k, k * 17000, WALKER.samples[k]) for k in range(600))


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.integers(0, len(CLEAN) * 8 - 1), max_size=40),
       junk=st.lists(st.tuples(st.integers(0, len(CLEAN)), st.binary(max_size=64)), max_size=8))
def test_corrupted_serial_bytes_never_reach_the_output_unbounded(tmp_path_factory, flips, junk):
    data = bytearray(CLEAN)
    for bit in flips:
        data[bit // 8] ^= 1 << (bit % 8)
    for pos, blob in sorted(junk, reverse=True):
        data[pos:pos] = blob
    rt, sim = _runtime(tmp_path_factory.mktemp("p"))
    rt.start()
    try:
        dec = FrameDecoder()
        k = 0
        for i in range(0, len(data), 97):
            for f in dec.feed(bytes(data[i:i + 97])):
                sim[0] = k / 58.8
                rt.push_imu(f.raw, sim[0], f.seq)
                k += 1
                if k % 40 == 0:
                    time.sleep(0.003)
        time.sleep(0.2)
    finally:
        rt.stop()
    assert dec.stats.frames <= 600 and rt.stats.worker_errors == 0
    assert (dec.stats.frames == 600) or flips or junk
    for traj, kw in rt.publisher.traj:
        assert np.isfinite(traj).all() and kw["status"] in ("OK", "DEGRADED")


def test_nan_samples_are_dropped_before_the_filters(tmp_path):
    rt, sim = _runtime(tmp_path)
    rt.start()
    try:
        for k in range(700):
            sim[0] = k / 58.8
            row = WALKER.samples[k].astype(np.float32)
            if k % 7 == 3:
                row[k % 36] = np.nan
            taken = rt.stats.samples + rt.stats.nonfinite_samples
            rt.ring.push(row * rt._scale, sim[0])  # physical rows, as a ROS float source would give
            rt._wake.set()
            deadline = time.monotonic() + 2.0  # the simulated clock moves on once the worker took the sample
            while rt.stats.samples + rt.stats.nonfinite_samples == taken and time.monotonic() < deadline:
                time.sleep(0.0002)
        time.sleep(0.3)
    finally:
        rt.stop()
    assert rt.stats.nonfinite_samples == 100
    assert rt.stats.published >= 5
    assert all(np.isfinite(t).all() for t, _ in rt.publisher.traj)


def test_port_disappears_and_returns(tmp_path):
    from metagait_edge.runtime.serial_source import SerialSource, SerialSourceConfig
    from metagait_edge.runtime.virtual_walker import PtySerialLink

    link = PtySerialLink(WALKER.samples, 200.0, tmp_path)
    src = SerialSource(SerialSourceConfig(port=str(link.path), reconnect_initial_s=0.02, reconnect_max_s=0.1))
    src.start()
    try:
        link.start()
        time.sleep(0.6)
        before = src.stats.frames
        link.unplug()
        time.sleep(0.4)
        assert not src.stats.connected
        link.replug()
        t0 = time.monotonic()
        while src.stats.frames < before + 50 and time.monotonic() - t0 < 5:
            time.sleep(0.05)
    finally:
        link.stop()
        src.stop()
    assert before > 50 and src.stats.frames >= before + 50 and src.stats.reconnects >= 1


def test_subscriber_that_stops_reading_does_not_slow_the_publisher():
    import zmq

    from metagait_edge.runtime.zmq_output import ZmqOutputConfig, ZmqPublisher

    pub = ZmqPublisher(ZmqOutputConfig(endpoints=["tcp://127.0.0.1:0"])).start()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 5)
    sub.connect(pub.bound_endpoints[0])
    try:
        time.sleep(0.2)
        sub.recv_multipart() if sub.poll(10) else None  # reads at most once, then never again
        traj = np.zeros((6, 101), np.float32)
        worst = 0.0
        for _ in range(3000):
            t0 = time.perf_counter()
            pub.publish_trajectory(traj, ["hip_r", "knee_r", "ankle_r", "hip_l", "knee_l", "ankle_l"],
                                   walker_id=None, personalized=False, phase=0.0, cycle_s=1.0, status="DEGRADED")
            worst = max(worst, time.perf_counter() - t0)
        time.sleep(0.3)
    finally:
        pub.stop()
        sub.close(0)
        ctx.term()
    assert worst < 0.05  # never waits on the stalled subscriber (typical: ~20 us)
    assert pub.stats.queued + pub.stats.dropped_queue_full == 3000 and pub.stats.sent > 0


def _profile(n: int, tag: float) -> Profile:
    return Profile("kim", {"w": np.full(n, tag, np.float32)}, np.full((2, 101), tag, np.float32),
                   np.ones(2, bool), {"tag": tag})


WRITER = """
import sys, numpy as np
from metagait_edge.runtime.profiles import Profile, ProfileStore
store = ProfileStore(sys.argv[1]); i = 1
print("ready", flush=True)
while True:
    i += 1
    store.save(Profile("kim", {"w": np.full(2_000_000, i, np.float32)}, np.full((2, 101), i, np.float32),
                       np.ones(2, bool), {"tag": float(i)}))
"""


def test_kill_9_during_profile_writes_leaves_a_loadable_profile(tmp_path):
    store = ProfileStore(tmp_path)
    store.save(_profile(2_000_000, 1.0))
    for delay in (0.05, 0.23, 0.41):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        p = store.load("kim")  # never raises: the old or a new complete profile
        assert np.all(p.weights["w"] == p.meta["tag"]) and np.all(p.template == p.meta["tag"])
    time.sleep(0.05)
    store.save(_profile(10, 9.0))  # the next save clears what killed writers left behind
    left = sorted(f.name for f in (tmp_path / "kim").iterdir())
    assert len(left) == 2 and "profile.json" in left and store.load("kim").meta["tag"] == 9.0, left


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_on_profile_write_keeps_the_old_profile(tiny_fs):
    store = ProfileStore(tiny_fs)
    store.save(_profile(10_000, 1.0))  # 40 kB
    with pytest.raises(OSError) as err:
        store.save(_profile(100_000, 2.0))  # 400 kB: does not fit in 256 kB
    assert err.value.errno == errno.ENOSPC
    p = store.load("kim")
    assert p.meta["tag"] == 1.0 and np.all(p.weights["w"] == 1.0)
    assert [f.name for f in (tiny_fs / "kim").iterdir() if f.name.startswith(".")] == []  # no temp left
