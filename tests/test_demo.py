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


@pytest.mark.slow
def test_demo_without_the_hugadb_data_uses_synthetic_walkers_and_still_identifies(tmp_path):
    """A user without the data set: the walker and both distractors are synthetic, each another body (the demo
    used to enroll one synthetic walker under two names and stop: "impostor distances are empty")."""
    import os

    env = dict(os.environ, METAGAIT_DATA=str(tmp_path / "no-data-here"))
    out = tmp_path / "demo.json"
    proc = subprocess.run([sys.executable, "-m", "metagait_edge", "demo", "--json", str(out), "--plot",
                           str(tmp_path / "p.png"), "--seconds", "3", "--workdir", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=150, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "using a synthetic IMU walker" in proc.stderr + proc.stdout
    s = json.loads(out.read_text())
    assert s["walker_true"] == s["walker_identified"] == "synthetic-01"
    assert s["calibration"]["accepted"] and s["messages"]["received"] == s["messages"]["published"] > 0


def test_synthetic_walkers_of_other_seeds_are_other_bodies():
    from metagait_edge.runtime.virtual_walker import synthetic_walker

    a, b, c = (synthetic_walker(seconds=2, seed=k) for k in (0, 1, 2))
    assert (a.name, a.height_cm, a.weight_kg, a.sex) == ("synthetic-01", 172.0, 68.0, "F")  # as shipped before
    assert len({a.name, b.name, c.name}) == 3
    assert len({(w.height_cm, w.weight_kg, w.cadence_spm) for w in (a, b, c)}) == 3
