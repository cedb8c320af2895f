from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="the ROS identity record needs rosbags (dev extra)")

from metagait_edge.ros.recognition import build_recognizer  # noqa: E402


def _walker(seed: int, frames: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sil = np.zeros((frames, 64, 64), np.uint8)
    width = 8 + 3 * seed
    for t in range(frames):
        x0 = 32 - width // 2 + int(rng.integers(-1, 2))
        sil[t, 8:60, x0:x0 + width] = 255
    return sil


def _recognizer(threshold):
    rec = build_recognizer(threshold=threshold)
    rec.recognizer.enroll("thin", _walker(0))
    rec.recognizer.enroll("wide", _walker(4))
    return rec


def test_ros_recognizer_names_the_enrolled_walker_and_fills_the_record():
    rec = _recognizer(threshold=None)  # the shipped model's calibrated threshold
    threshold = rec.recognizer.gallery.threshold
    assert threshold is not None and threshold > 0
    out = rec.identify(_walker(4), stamp_ns=123)  # the enrolled silhouettes again: distance 0
    assert (out.walker_id, out.known, out.best_match, out.reason) == ("wide", True, "wide", "")
    assert out.stamp_ns == 123 and out.num_frames == 12 and out.threshold == threshold and 0.5 <= out.score <= 1.0
    assert out.embedding.dtype == np.float32 and out.embedding.size == rec.recognizer.embed(_walker(0)).size > 0


def test_ros_recognizer_rejects_an_unaccepted_walker_but_names_the_nearest():
    out = _recognizer(threshold=1e-9).identify(_walker(4, frames=10), stamp_ns=5)
    assert (out.walker_id, out.known, out.best_match) == ("", False, "wide")
    assert out.score == 0.0 and out.threshold == 1e-9 and out.reason.startswith("unknown: nearest wide")
    # a threshold that takes in both walkers: uncertain, rejected as well
    out = _recognizer(threshold=1e6).identify(_walker(4, frames=10), stamp_ns=5)
    assert (out.walker_id, out.known, out.best_match) == ("", False, "wide") and out.reason.startswith("uncertain:")
