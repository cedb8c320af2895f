from __future__ import annotations

import os
import threading
import time
import tty

import numpy as np
import pytest
import serial

from metagait_edge.cli import main
from metagait_edge.commands import imu_sim
from metagait_edge.imu import protocol as P
from metagait_edge.imu.replay import load_hugadb_samples, stream_frames
from metagait_edge.imu.synthetic import synthetic_imu
from metagait_edge.runtime.ringbuffer import RingBuffer
from metagait_edge.runtime.serial_source import SerialSource, SerialSourceConfig


def _wait_for(cond, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def _raw(k):
    r = np.zeros(36, np.int16)
    r[0::6] = 16384  # acc x: 1 g
    r[3::6] = 164  # gyro x: 10 deg/s
    r[5] = k  # a marker per frame (gyro_rf_z)
    return r


def _pty(tmp_path, name="imu0"):
    master, slave = os.openpty()
    tty.setraw(slave)
    link = tmp_path / name
    tmp = tmp_path / (name + ".new")
    os.symlink(os.ttyname(slave), tmp)
    os.replace(tmp, link)  # like udev re-pointing /dev/serial/by-id/... on replug
    return master, slave, str(link)


def test_loop_port_frames_are_decoded_scaled_and_counted():
    port = serial.serial_for_url("loop://", timeout=0.02)
    ring = RingBuffer(256, 36)
    src = SerialSource(SerialSourceConfig(port="loop://"), ring, port_factory=lambda: port)
    with src:
        good = [P.encode_frame(s, 1000 * s, _raw(s)) for s in (0, 1, 2, 5, 6)]
        corrupt = bytearray(P.encode_frame(3, 3000, _raw(3)))
        corrupt[40] ^= 0xFF
        port.write(b"noise" + good[0] + good[1] + b"\x00\xA5" + good[2] + bytes(corrupt) + good[3] + good[4])
        assert _wait_for(lambda: src.stats.frames == 5)
    st = src.stats
    assert st.bad_frames == 1 and st.gaps == 1 and st.missing == 2 and st.connected is False
    assert st.bytes == 5 + 2 + 5 * 90 + 90
    w = ring.latest(10)
    assert len(w) == 5
    assert np.allclose(w.data[:, 0::6], 1.0) and np.allclose(w.data[:, 3::6], 10.0)
    assert np.allclose(w.data[:, 5] * 16.4, [0, 1, 2, 5, 6])
    assert np.all(np.diff(w.timestamps) >= 0)
    assert src.last_frame_time == w.timestamps[-1]


def test_ascii_mode_reads_hugadb_rows():
    port = serial.serial_for_url("loop://", timeout=0.02)
    src = SerialSource(SerialSourceConfig(port="loop://", format="ascii"), port_factory=lambda: port)
    with src:
        port.write(b"#Activity\twalking\n" + b"".join(P.encode_ascii_row(_raw(k), (1, 2, 1)) for k in range(4)))
        assert _wait_for(lambda: src.stats.frames == 4)
    assert np.allclose(src.ring.latest(4).data[:, 5] * 16.4, [0, 1, 2, 3])


def test_pty_port_disappears_and_comes_back(tmp_path):
    master, slave, link = _pty(tmp_path)
    cfg = SerialSourceConfig(port=link, read_timeout_s=0.02, reconnect_initial_s=0.02, reconnect_max_s=0.1)
    src = SerialSource(cfg).start()
    try:
        assert _wait_for(lambda: src.stats.connected)
        os.write(master, b"".join(P.encode_frame(s, s, _raw(s)) for s in range(3)))
        assert _wait_for(lambda: src.stats.frames == 3)
        # Unplug: the device goes away entirely, then a new one appears under the same name.
        os.close(master)
        os.close(slave)
        assert _wait_for(lambda: not src.stats.connected)
        time.sleep(0.15)  # a few failed reopen attempts with backoff
        master, slave, _ = _pty(tmp_path)
        assert _wait_for(lambda: src.stats.connected)
        os.write(master, b"".join(P.encode_frame(s, s, _raw(s)) for s in range(100, 104)))
        assert _wait_for(lambda: src.stats.frames == 7)
        st = src.stats
        assert st.reconnects == 1 and st.bad_frames == 0
        # The sequence tracker restarts with the connection: a new sender is not a gap.
        assert st.gaps == 0 and st.missing == 0
        assert "imu0" in st.last_error
    finally:
        src.stop()
        for fd in (master, slave):
            try:
                os.close(fd)
            except OSError:
                pass
    assert not src.stats.connected
    assert np.allclose(src.ring.latest(7).data[:, 5] * 16.4, [0, 1, 2, 100, 101, 102, 103])


def test_missing_port_keeps_retrying_and_stops_cleanly(tmp_path):
    cfg = SerialSourceConfig(port=str(tmp_path / "nope"), reconnect_initial_s=0.01, reconnect_max_s=0.05)
    src = SerialSource(cfg).start()
    time.sleep(0.2)
    t = time.monotonic()
    src.stop()
    assert time.monotonic() - t < 0.5
    st = src.stats
    assert not st.connected and st.frames == 0 and "nope" in st.last_error


def test_config_and_ring_checks():
    with pytest.raises(ValueError, match="width"):
        SerialSource(SerialSourceConfig(), RingBuffer(8, 6))
    with pytest.raises(ValueError, match="read_timeout_s"):
        SerialSourceConfig(read_timeout_s=0)


def test_stream_frames_keeps_an_absolute_schedule():
    now = [0.0]
    sleeps = []

    def sleep(dt):
        sleeps.append(dt)
        now[0] += dt

    def write(_b):
        now[0] += 0.004  # each write costs 4 ms of a 10 ms period

    out = stream_frames(write, synthetic_imu(10), 100.0, clock=lambda: now[0], sleep=sleep)
    assert out.frames == 10
    # Frame k goes out at k * 10 ms exactly: the 4 ms write time is absorbed, not accumulated.
    assert sleeps == pytest.approx([0.006] * 9)  # frame 0 is due at once
    assert out.seconds == pytest.approx(0.094)


def test_synthetic_imu_looks_like_walking():
    x = synthetic_imu(600, 60.0)
    assert x.shape == (600, 36) and x.dtype == np.int16
    acc_x = x[:, 6] / 16384.0  # right shank: HuGaDB mounting, gravity along -x when upright
    assert -1.3 < acc_x.mean() < -0.7
    gyro = x[:, 10] / 16.4  # gyro_rs_y: the sagittal swing the gait detector keys on
    spectrum = np.abs(np.fft.rfft(gyro - gyro.mean()))[:16]  # up to 1.5 Hz: the stride fundamental
    assert abs(np.argmax(spectrum) * 60.0 / 600 - 0.9) < 0.15  # cadence


def _reader(master, sink, stop):
    while not stop.is_set():
        try:
            sink += os.read(master, 4096)
        except BlockingIOError:
            time.sleep(0.005)
        except OSError:
            return


@pytest.mark.parametrize("fmt", ["binary", "ascii"])
def test_imu_sim_command_streams_a_hugadb_file_into_a_port(tmp_path, fmt, capsys):
    raw = np.stack([_raw(k) for k in range(40)])
    lines = ["#Activity\twalking", "#ActivityID\t1", "#Date\t01-01-2017", "\t".join(P.HUGADB_COLUMNS)]
    lines += ["\t".join(str(int(v)) for v in r) + "\t10\t20\t1" for r in raw]
    rec = tmp_path / "HuGaDB_v1_walking_01_00.txt"
    rec.write_text("\n".join(lines) + "\n")
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    sink, stop = bytearray(), threading.Event()
    th = threading.Thread(target=_reader, args=(master, sink, stop))
    th.start()
    try:
        rc = main(["imu-sim", "--port", os.ttyname(slave), "--source", "hugadb", str(rec), "--rate", "400",
                   "--format", fmt, "--no-progress"])
        time.sleep(0.1)
    finally:
        stop.set()
        th.join(2)
        os.close(master)
        os.close(slave)
    assert rc == 0
    out = capsys.readouterr().out
    assert f"sent 40 {fmt} frames" in out
    dec = P.make_decoder(fmt)
    frames = dec.feed(bytes(sink))
    assert [f.seq for f in frames] == list(range(40))
    assert all(np.array_equal(f.raw, raw[f.seq]) for f in frames)
    if fmt == "binary":
        assert frames[-1].t_us == round(39 / 400 * 1e6)
    else:
        assert frames[0].extra == (10, 20, 1)


def test_imu_sim_end_to_end_into_serial_source(tmp_path):
    master, slave, link = _pty(tmp_path)
    src = SerialSource(SerialSourceConfig(port=link, read_timeout_s=0.02)).start()
    try:
        assert _wait_for(lambda: src.stats.connected)
        samples = synthetic_imu(150, 300.0)
        summary = stream_frames(lambda b: os.write(master, b), samples, 300.0)
        assert _wait_for(lambda: src.stats.frames == 150)
    finally:
        src.stop()
        os.close(master)
        os.close(slave)
    assert summary.rate_hz == pytest.approx(300.0, rel=0.05)
    w = src.ring.latest(150)
    assert np.allclose(w.data, samples * P.channel_scale(), atol=1e-6)
    # Sensor timestamps map onto host time: spacing follows the 300 Hz schedule, not arrival bursts.
    assert np.median(np.diff(w.timestamps)) == pytest.approx(1 / 300, rel=0.1)
    assert src.stats.gaps == 0 and src.stats.bad_frames == 0


def test_imu_sim_rejects_bad_source():
    with pytest.raises(ValueError, match="hugadb needs exactly one FILE"):
        imu_sim.run(imu_sim_args(["--pty", "--source", "hugadb"]))
    with pytest.raises(ValueError, match="synthetic"):
        imu_sim.run(imu_sim_args(["--pty", "--source", "webcam"]))


def imu_sim_args(argv):
    import argparse

    p = argparse.ArgumentParser()
    imu_sim.add_arguments(p)
    return p.parse_args(argv)


@pytest.mark.slow
def test_imu_sim_pty_mode_feeds_a_serial_source():
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "metagait_edge", "imu-sim", "--pty", "--source", "synthetic", "--rate", "200",
         "--max-frames", "300", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("pty: /dev/"), first + proc.stderr.read()
        src = SerialSource(SerialSourceConfig(port=first.split(": ", 1)[1].strip(), read_timeout_s=0.02)).start()
        try:
            out, err = proc.communicate(timeout=20)
        finally:
            src.stop()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "sent 300 binary frames" in out
    st = src.stats
    assert st.frames >= 200 and st.bad_frames <= 1
    w = src.ring.latest(10)
    assert 0.5 < float(np.mean(w.data[:, 2])) < 1.5  # acc_rf_z around 1 g


def test_load_hugadb_samples_reads_the_dataset_format_and_names_a_bad_file(tmp_path):
    # One HuGaDB reader (data.hugadb.parse_file): its four header lines, its file names, its glitch-row rule.
    rec = tmp_path / "HuGaDB_v1_walking_01_00.txt"
    rows = ["\t".join(str(v) for v in list(_raw(k)) + [3, 4, 1]) for k in range(5)]
    glitch = "\t".join(["40000"] + ["0"] * 35 + ["3", "4", "1"])
    rec.write_text("#Activity\twalking\n#ActivityID\t1\n#Date\t2017\n" + "\t".join(P.HUGADB_COLUMNS) + "\n"
                   + "\n".join(rows[:2] + [glitch] + rows[2:]) + "\n")
    raw, extra, rate = load_hugadb_samples(str(rec))
    assert raw.shape == (5, 36) and raw.dtype == np.int16 and np.array_equal(raw[3], _raw(3))
    assert extra.tolist()[0] == [3, 4, 1] and rate == pytest.approx(58.8)
    empty = tmp_path / "HuGaDB_v1_walking_01_01.txt"
    empty.write_text("#Activity\twalking\n")
    with pytest.raises(ValueError, match="HuGaDB_v1_walking_01_01.txt: only 1 line"):
        load_hugadb_samples(str(empty))


def test_serial_config_from_yaml_mapping():
    from metagait_edge.config import ConfigError, from_dict

    cfg = from_dict(SerialSourceConfig, {"port": "/dev/ttyUSB0", "format": "ascii", "baudrate": 921600})
    assert cfg.format == "ascii" and cfg.baudrate == 921600
    with pytest.raises(ConfigError, match="format"):
        from_dict(SerialSourceConfig, {"format": "json"})
    with pytest.raises(ConfigError, match="baud_rate"):
        from_dict(SerialSourceConfig, {"baud_rate": 9600})
