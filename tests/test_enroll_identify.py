"""`metagait-edge enroll` then `metagait-edge identify` on rendered videos of synthetic walkers (issue 18 item 2),
with the shipped recognition model and the open-set threshold fitted on its validation identities."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("cv2")
pytest.importorskip("torch")

from metagait_edge.cli import main  # noqa: E402
from metagait_edge.recognition.gallery import Gallery  # noqa: E402
from metagait_edge.runtime.enrollment import windows  # noqa: E402
from metagait_edge.runtime.virtual_walker import WalkerSpec, render_walker_video  # noqa: E402

TALL = WalkerSpec("tall", np.zeros((1, 36), np.int16), 58.8, 190, 95, "M", 100, "test")
SMALL = WalkerSpec("small", np.zeros((1, 36), np.int16), 58.8, 160, 55, "F", 120, "test")


def _identify(capsys, video, gallery) -> dict:
    assert main(["identify", "--video", str(video), "--gallery", str(gallery), "--json"]) == 0
    (track,) = json.loads(capsys.readouterr().out)["tracks"]  # one walker in view: one track
    return track


def test_windows_cover_a_track_without_overlap():
    assert windows(95, 30) == [(0, 30), (30, 60), (60, 90)]
    assert windows(20, 30) == [(0, 20)] and windows(10, 30) == []
    with pytest.raises(ValueError, match="window must be >= 2"):
        windows(10, 1)


@pytest.mark.slow
def test_enroll_then_identify_accepts_the_walker_rejects_a_stranger_and_passes_add_views(tmp_path, capsys):
    # Two side-view passes of "tall" enrolled; probes: a third side-view walk, a never-enrolled walker, and an
    # oblique view (60 degrees) before and after an oblique pass is enrolled too.
    renders = [("tall_side_1", TALL, 1, 90), ("tall_side_2", TALL, 6, 90), ("tall_side_probe", TALL, 7, 90),
               ("small_side", SMALL, 3, 90), ("tall_oblique_1", TALL, 4, 60), ("tall_oblique_probe", TALL, 5, 60)]
    video = {key: render_walker_video(spec, tmp_path / f"{key}.avi", n_frames=90, seed=seed, view_deg=view).path
             for key, spec, seed, view in renders}
    gallery = tmp_path / "galleries" / "walkers.safetensors"
    for name in ("tall_side_1", "tall_side_2"):
        assert main(["enroll", "--video", str(video[name]), "--walker", "tall", "--gallery", str(gallery)]) == 0
        assert "enrolled 'tall'" in capsys.readouterr().out
    written = Gallery.load(gallery)
    assert written.walkers == ["tall"] and written.mode == "all" and written.threshold is not None
    labels = written.labels("tall")
    assert len(labels) >= 2 and {label.split()[1] for label in labels} == {"tall_side_1.avi", "tall_side_2.avi"}

    same_view = _identify(capsys, video["tall_side_probe"], gallery)  # another walk, an enrolled view
    assert (same_view["walker_id"], same_view["accepted"]) == ("tall", True), same_view
    assert same_view["confidence"] >= 0.5 and same_view["distance"] <= written.threshold
    stranger = _identify(capsys, video["small_side"], gallery)  # never enrolled
    assert (stranger["walker_id"], stranger["accepted"], stranger["nearest_id"]) == (None, False, "tall"), stranger
    assert "unknown" in stranger["reason"] and stranger["distance"] > written.threshold

    # A view never enrolled is not accepted; a pass at that view adds templates, and then it is.
    oblique = _identify(capsys, video["tall_oblique_probe"], gallery)
    assert not oblique["accepted"], oblique
    templates = written.num_sequences("tall")
    assert main(["enroll", "--video", str(video["tall_oblique_1"]), "--walker", "tall", "--gallery", str(gallery)]) == 0
    capsys.readouterr()
    assert Gallery.load(gallery).num_sequences("tall") > templates
    oblique_after = _identify(capsys, video["tall_oblique_probe"], gallery)
    assert oblique_after["accepted"] and oblique_after["distance"] < oblique["distance"], (oblique, oblique_after)
    assert _identify(capsys, video["tall_side_probe"], gallery)["accepted"]  # the side view still is
    assert not _identify(capsys, video["small_side"], gallery)["accepted"]  # and the stranger still is not


@pytest.mark.slow
def test_identify_answers_per_track_and_never_accepts_the_stranger_beside_the_enrolled_walker(tmp_path, capsys):
    import cv2

    from metagait_edge.runtime.walker_scene import SceneWalker, render_scene

    def write(scene, path):
        h, w = scene.frames.shape[1:3]
        out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
        for frame in scene.frames:
            out.write(frame)
        out.release()
        return path

    tall = SceneWalker(185, 90, "M", 100, x0=-1.3, seed=1)
    small = SceneWalker(158, 50, "F", 118, x0=1.3, shirt_bgr=(40, 140, 60), seed=2)
    gallery = tmp_path / "walkers.safetensors"
    alone = write(render_scene([tall], n_frames=60, lead_in=60), tmp_path / "tall_alone.avi")
    assert main(["enroll", "--video", str(alone), "--walker", "tall", "--gallery", str(gallery)]) == 0
    together = write(render_scene([tall, small], n_frames=60, lead_in=60, seed=5), tmp_path / "together.avi")
    with pytest.raises(ValueError, match="exactly one walker in view, found 2 track"):
        main(["-v", "enroll", "--video", str(together), "--walker", "both", "--gallery", str(gallery)])
    capsys.readouterr()
    assert main(["identify", "--video", str(together), "--gallery", str(gallery), "--json"]) == 0
    tracks = json.loads(capsys.readouterr().out)["tracks"]
    assert len(tracks) == 2 and all(t["nearest_id"] == "tall" for t in tracks), tracks
    far_one = max(tracks, key=lambda t: t["distance"])  # the stranger: nearest "tall", but far from it
    assert not far_one["accepted"] and far_one["distance"] > Gallery.load(gallery).threshold, tracks
    assert {t["walker_id"] for t in tracks} <= {"tall", None}
