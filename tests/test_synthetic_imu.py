"""The synthetic virtual IMU walks like a HuGaDB recording: same mounting, same detector, cycles end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest

from metagait_edge.data.gait_events import CausalGaitDetector
from metagait_edge.imu.protocol import CHANNEL_NAMES, channel_scale
from metagait_edge.imu.synthetic import synthetic_imu
from metagait_edge.runtime.capture import free_tcp_port

RATE = 58.8
GYRO_RS_Y = CHANNEL_NAMES.index("gyro_rs_y")


def _events(raw: np.ndarray) -> list:
    return CausalGaitDetector(RATE).run((raw * channel_scale(np.float32))[:, GYRO_RS_Y])


def test_synthetic_imu_has_one_gait_cycle_per_stride_on_the_detectors_channel():
    seconds, cadence = 40.0, 0.9
    raw = synthetic_imu(int(seconds * RATE), RATE, seed=3, cadence_hz=cadence)
    events = _events(raw)
    # One IC per stride, bar the first (the detector needs a swing before it).
    assert abs(len(events) - seconds * cadence) <= 2
    strides = np.diff([e.index for e in events]) / RATE
    assert np.all(np.abs(strides - 1 / cadence) < 0.25 / cadence)
    x = raw * channel_scale(np.float32)
    for seg in ("rs", "ls", "rt", "lt"):  # gravity along each shank's and thigh's -x, as HuGaDB mounts them
        assert -1.3 < x[:, CHANNEL_NAMES.index(f"acc_{seg}_x")].mean() < -0.7


def test_synthetic_imu_swing_matches_a_real_hugadb_walk():
    from metagait_edge.data.gyro_validity import corrupted_gyros
    from metagait_edge.data.hugadb import HuGaDB

    try:
        db = HuGaDB.open()
    except (FileNotFoundError, OSError, ValueError) as exc:
        pytest.skip(f"HuGaDB not available: {exc}")
    file_id = next(f for f in db.select("walking", [8]) if not corrupted_gyros(f))
    real = db.load(file_id).raw
    synth = synthetic_imu(len(real), RATE)
    peaks = []
    for raw in (real, synth):
        events = _events(raw)
        assert len(events) > 0.6 * len(raw) / RATE  # about one cycle a second on both
        gyro = (raw * channel_scale(np.float32))[:, GYRO_RS_Y]
        peaks.append(np.percentile(-gyro, 99))  # the swing: negative on HuGaDB's mounting
    assert 0.5 < peaks[1] / peaks[0] < 2.0


@pytest.mark.slow
def test_readme_virtual_imu_into_run_publishes_trajectories(tmp_path):
    """`imu-sim --pty --source synthetic` into `run` (the README's commands, as subprocesses)."""
    from metagait_edge.commands.listen import listen

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    sim = subprocess.Popen([sys.executable, "-m", "metagait_edge", "imu-sim", "--pty", "--source", "synthetic",
                            "--loop", "--no-progress"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = sim.stdout.readline()
        assert line.startswith("pty: "), line
        endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
        cfg = tmp_path / "edge.yaml"
        cfg.write_text(f"sources:\n  - kind: serial\n    port: {line.split()[1]}\n    rate_hz: {RATE}\n"
                       f"sinks:\n  zmq:\n    endpoints: [\"{endpoint}\"]\n"
                       f"calibration:\n  directory: {tmp_path / 'walkers'}\n")
        got = {}
        sub = threading.Thread(target=lambda: got.update(s=listen(endpoint, ["gait.trajectory"], timeout=25.0,
                                                                    out=lambda _l: None)))
        sub.start()
        run = subprocess.run([sys.executable, "-m", "metagait_edge", "run", "--config", str(cfg), "--duration", "12"],
                             capture_output=True, text=True, env=env, timeout=120)
        sub.join()
    finally:
        sim.terminate()
        sim.wait(10)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = run.stdout.strip().splitlines()[-1]
    cycles = int(re.search(r"cycles=(\d+)", summary).group(1))
    published = int(re.search(r"published=(\d+)", summary).group(1))
    assert cycles >= 5 and published >= 3, summary  # 0.9 strides/s for 12 s (the old generator: 0 cycles)
    assert got["s"].invalid == 0 and got["s"].received.get("gait.trajectory", 0) >= 3
