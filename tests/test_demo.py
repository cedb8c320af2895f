"""``metagait-edge demo`` end to end (virtual walker through a pty + camera video, subscriber process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("zmq")


@pytest.mark.slow
def test_demo_identifies_calibrates_and_delivers(tmp_path):
    out = tmp_path / "demo.json"
    proc = subprocess.run([sys.executable, "-m", "metagait_edge", "demo", "--json", str(out), "--plot",
                           str(tmp_path / "p.png"), "--seconds", "6", "--workdir", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    s = json.loads(out.read_text())
    assert set(s) == {"walker_true", "walker_identified", "calibration", "messages", "latency_ms", "serial", "dropped"}
    assert s["walker_identified"] == s["walker_true"]
    assert s["calibration"]["accepted"] and s["calibration"]["error_after"] < s["calibration"]["error_before"]
    assert s["messages"]["received"] == s["messages"]["published"] > 5
    assert 0 < s["latency_ms"]["p50"] <= s["latency_ms"]["p99"] < 500
    assert s["serial"]["frames"] > 500 and s["serial"]["bad_frames"] == 0 and s["dropped"] == 0
    assert (tmp_path / "p.png").stat().st_size > 10_000
