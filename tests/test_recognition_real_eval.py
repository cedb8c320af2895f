"""eval-recognition-real: the scores, the layout checks and the command, on small generated silhouettes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from metagait_edge import cli
from metagait_edge.runtime import real_eval as R


def _walker_frames(width: float, height: float, frames: int = 12, phase: float = 0.0) -> list:
    """A crude walker: an ellipse body of the given proportions and two swinging legs, on a 120x80 canvas."""
    import cv2

    out = []
    for t in range(frames):
        img = np.zeros((120, 80), np.uint8)
        cv2.ellipse(img, (40, 40), (int(width), int(height)), 0, 0, 360, 255, -1)
        swing = int(10 * np.sin(2 * np.pi * t / frames + phase))
        cv2.line(img, (40, 40 + int(height) - 4), (40 + swing, 112), 255, 5)
        cv2.line(img, (40, 40 + int(height) - 4), (40 - swing, 112), 255, 5)
        out.append(img)
    return out


def _write(folder: Path, frames: list) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for k, f in enumerate(frames):
        assert cv2.imwrite(str(folder / f"{k:03d}.png"), f)


@pytest.fixture()
def identical_people(tmp_path):
    """3 people x 2 sequences; a person's two sequences are the very same frames, people differ in body shape."""
    root = tmp_path / "real"
    for person, (w, h) in {"ana": (10, 30), "bo": (18, 26), "cy": (7, 36)}.items():
        frames = _walker_frames(w, h)
        for seq in ("walk1", "walk2"):
            _write(root / person / seq, frames)
    return root


def test_scores_of_perfectly_separated_and_shuffled_distances():
    people = ["a", "a", "b", "b", "c", "c"]
    d = np.ones((6, 6))
    for i in range(6):
        for j in range(6):
            if people[i] == people[j]:
                d[i, j] = 0.1
    np.fill_diagonal(d, 0.0)
    s = R.pair_scores(d, people)
    assert s.auc == 1.0 and s.eer == 0.0 and s.rank1 == 1.0 and s.probes == 6
    assert s.genuine_pairs == 3 and s.impostor_pairs == 12
    assert s.rank1_chance == pytest.approx(1 / 5)
    # the reverse (same person far, others near) is the worst possible
    assert R.pair_scores(1.1 - d, people).auc == 0.0
    # random distances, labels unrelated to them: chance level
    rng = np.random.default_rng(0)
    n = 120
    labels = rng.integers(0, 10, n).astype(str)
    x = rng.normal(size=(n, 8))
    dist = np.linalg.norm(x[:, None] - x[None], axis=-1)
    s = R.pair_scores(dist, list(labels))
    assert abs(s.auc - 0.5) < 0.05 and abs(s.eer - 0.5) < 0.07
    assert abs(s.rank1 - s.rank1_chance) < 0.12


def test_roc_auc_counts_ties_half():
    assert R.roc_auc([1.0], [1.0]) == 0.5
    assert R.roc_auc([0.0, 2.0], [1.0]) == 0.5
    with pytest.raises(R.RealDataError):
        R.roc_auc([], [1.0])


def test_pairs_of_one_recording_are_left_out():
    # b/rec1 is a's nearest only within the same recording; across recordings a finds itself
    people = ["a", "a", "b"]
    names = ["a/rec1", "a/rec2", "b/rec1"]
    d = np.array([[0.0, 0.5, 0.1], [0.5, 0.0, 0.9], [0.1, 0.9, 0.0]])
    assert R.pair_scores(d, people, names).rank1 == 0.5
    s = R.pair_scores(d, people, names, recordings=["rec1", "rec2", "rec1"])
    assert s.impostor_pairs == 1 and s.genuine_pairs == 1  # (a/rec1, b/rec1) never compared
    assert s.rank1 == 1.0 and s.nearest == {"a/rec1": "a/rec2", "a/rec2": "a/rec1"}


def test_identical_sequences_score_one_for_gei_and_the_shipped_model(identical_people):
    from metagait_edge.runtime.camera import load_recognition_model

    seqs = R.load_real_sequences(identical_people)
    assert [s.name for s in seqs] == ["ana/walk1", "ana/walk2", "bo/walk1", "bo/walk2", "cy/walk1", "cy/walk2"]
    assert all(s.frames.shape == (12, 64, 64) and s.frames.dtype == np.uint8 for s in seqs)
    results = R.evaluate_real(seqs, {"baseline": load_recognition_model(
        Path(__file__).resolve().parents[1] / "metagait_edge/resources/checkpoints/recognition/baseline.safetensors")})
    for name in ("baseline", R.GEI):
        assert results[name].auc == 1.0 and results[name].rank1 == 1.0, name
        assert results[name].mean_genuine < 1e-6 < results[name].mean_impostor, name


def test_pretreatment_is_the_runtimes(identical_people):
    from metagait_edge.data.pretreatment import pretreat_frame, read_frame

    seq = R.load_real_sequences(identical_people)[0]
    files = sorted((identical_people / "ana" / "walk1").glob("*.png"))
    np.testing.assert_array_equal(seq.frames[3], pretreat_frame(read_frame(files[3])))


@pytest.mark.parametrize("breakage, message", [
    ("missing", "not a directory"),
    ("one_person", "need at least 2 people"),
    ("single_sequences", "need a person with at least 2 sequences"),
    ("frames_in_person", "image files directly in a person folder"),
    ("frames_in_root", "image files directly under the root"),
    ("empty_sequence", "without image frames"),
    ("empty_person", "no sequence"),
])
def test_bad_layouts_are_refused_clearly(identical_people, breakage, message):
    root = identical_people
    if breakage == "missing":
        root = root / "nope"
    elif breakage == "one_person":
        shutil.rmtree(root / "bo")
        shutil.rmtree(root / "cy")
    elif breakage == "single_sequences":
        for p in ("ana", "bo", "cy"):
            shutil.rmtree(root / p / "walk2")
    elif breakage == "frames_in_person":
        shutil.copy(next((root / "ana" / "walk1").glob("*.png")), root / "ana" / "000.png")
    elif breakage == "frames_in_root":
        shutil.copy(next((root / "ana" / "walk1").glob("*.png")), root / "000.png")
    elif breakage == "empty_sequence":
        (root / "bo" / "walk3").mkdir()
    elif breakage == "empty_person":
        (root / "dee").mkdir()
    with pytest.raises(R.RealDataError, match=message):
        R.load_real_sequences(root)


def test_blank_sequence_and_too_short_sequence_are_refused(identical_people):
    import cv2

    blank = identical_people / "bo" / "walk1"
    for f in blank.glob("*.png"):
        cv2.imwrite(str(f), np.zeros((120, 80), np.uint8))
    with pytest.raises(R.RealDataError, match="bo/walk1: no valid frame"):
        R.load_real_sequences(identical_people)
    shutil.rmtree(blank)
    with pytest.raises(R.RealDataError, match="usable frame"):
        R.load_real_sequences(identical_people, min_frames=13)


def test_command_writes_json_for_each_checkpoint_and_gei(identical_people, tmp_path, capsys):
    out = tmp_path / "real.json"
    assert cli.main(["eval-recognition-real", str(identical_people), "--variants", "baseline,mtp",
                     "--across-recordings", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert set(payload["results"]) == {"baseline", "mtp", "gei"}
    assert payload["data"]["people"] == 3 and payload["data"]["sequences"] == 6
    assert payload["data"]["across_recordings"] is True
    for r in payload["results"].values():
        assert r["auc"] == 1.0 and r["rank1"] == 1.0 and r["probes"] == 6
    printed = capsys.readouterr().out
    assert "AUC" in printed and "gei" in printed


def test_command_names_a_missing_checkpoint_and_a_bad_layout(identical_people, capsys):
    assert cli.main(["eval-recognition-real", str(identical_people), "--variants", "nope"]) != 0
    assert "checkpoint 'nope' not found" in capsys.readouterr().err
    assert cli.main(["eval-recognition-real", str(identical_people / "ana")]) != 0
    assert "image files directly in a person folder" in capsys.readouterr().err  # one level too deep


def test_the_recognition_report_carries_the_real_silhouette_notes(tmp_path):
    from metagait_edge.recognition.report import REAL_NOTES, real_notes

    lines = real_notes()
    assert lines[0].startswith("## Real silhouettes") and lines[-1] == ""
    assert "eval-recognition-real" in REAL_NOTES.read_text()
    assert real_notes(tmp_path / "absent.md") == []


def test_videos_go_through_the_camera_front_end(tmp_path):
    """DIR/<person>/<walk>.avi: the runtime's camera front end (MOG2, default config) makes the silhouettes."""
    import cv2

    from metagait_edge.runtime.camera_frontend import CameraConfig
    from metagait_edge.runtime.walker_scene import SceneWalker, render_scene

    lead_in = CameraConfig().warmup_frames + 5  # the background model learns the empty scene first
    root = tmp_path / "videos"
    for person, (height, weight) in {"tall": (185, 90), "small": (158, 50)}.items():
        for k in range(2):
            scene = render_scene([SceneWalker(height, weight, x0=0.4 * k, seed=k)], n_frames=30, lead_in=lead_in)
            path = root / person / f"walk{k}.avi"
            path.parent.mkdir(parents=True, exist_ok=True)
            h, w = scene.frames.shape[1:3]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
            for frame in scene.frames:
                writer.write(frame)
            writer.release()
    seqs = R.load_real_sequences(root, min_frames=10)
    assert [s.name for s in seqs] == ["small/walk0.avi", "small/walk1.avi", "tall/walk0.avi", "tall/walk1.avi"]
    assert all(s.frames.shape[1:] == (64, 64) and 10 <= len(s.frames) <= 30 for s in seqs)
    assert R.recording_of(seqs[0]) == "walk0"
    scores = R.evaluate_real(seqs, {})[R.GEI]
    assert scores.genuine_pairs == 2 and scores.impostor_pairs == 4


def test_a_comparable_mask_scores_only_the_pairs_it_marks():
    people = ["a", "a", "b", "c"]
    d = np.array([[0.0, 0.2, 0.1, 0.9], [0.2, 0.0, 0.9, 0.9], [0.1, 0.9, 0.0, 0.9], [0.9, 0.9, 0.9, 0.0]])
    everything = R.pair_scores(d, people)
    assert everything.genuine_pairs == 1 and everything.impostor_pairs == 5 and everything.auc < 1
    mask = np.zeros((4, 4), bool)
    mask[0, 1] = mask[1, 0] = True  # a's two halves
    mask[1, 3] = mask[3, 1] = mask[0, 3] = mask[3, 0] = True  # a and c were seen together; b never with a
    s = R.pair_scores(d, people, comparable=mask)
    assert s.genuine_pairs == 1 and s.impostor_pairs == 2 and s.auc == 1.0 and s.rank1 == 1.0
    with pytest.raises(ValueError, match="symmetric"):
        R.pair_scores(d, people, comparable=np.triu(mask))


def _write_video(path, frames, fps=25.0):
    import cv2

    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for frame in frames:
        writer.write(frame)
    writer.release()


@pytest.mark.slow
def test_track_halves_of_a_multi_walker_video(tmp_path, capsys):
    """--tracks-of: walkers in view together, apart, are two people; each track's halves are one."""
    from metagait_edge.cli import main
    from metagait_edge.runtime.camera_frontend import CameraConfig
    from metagait_edge.runtime.walker_scene import SceneWalker, render_scene

    lead_in = CameraConfig().warmup_frames + 5
    together = render_scene([SceneWalker(185, 90, "M", 100, x0=-1.3, seed=1),
                             SceneWalker(158, 50, "F", 118, x0=1.3, shirt_bgr=(40, 140, 60), seed=2)],
                            n_frames=40, lead_in=lead_in)
    video = tmp_path / "two.avi"
    _write_video(video, together.frames)
    seqs, mask = R.video_track_halves(video, half_frames=10)
    assert len(seqs) == 4 and [s.name.split("/")[1] for s in seqs] == ["first", "second"] * 2
    assert seqs[0].person == seqs[1].person != seqs[2].person == seqs[3].person
    assert mask.all() == False and mask[0, 1] and mask[2, 3] and mask[0:2, 2:4].all()  # noqa: E712
    assert not mask.diagonal().any()
    out = tmp_path / "tracks.json"
    assert main(["eval-recognition-real", "--tracks-of", str(video), "--half-frames", "10", "--no-gei",
                 "--variants", "baseline", "--json", str(out)]) == 0
    import json

    result = json.loads(out.read_text())
    assert result["data"]["pairs_of_tracks_in_view_together"] == 1
    assert result["results"]["baseline"]["genuine_pairs"] == 2 and result["results"]["baseline"]["impostor_pairs"] == 4
    # One walker only: no pair is known to be two people.
    alone = render_scene([SceneWalker(185, 90, "M", 100, x0=0.0, seed=1)], n_frames=40, lead_in=lead_in)
    _write_video(tmp_path / "one.avi", alone.frames)
    with pytest.raises(R.RealDataError, match="walker track"):
        R.video_track_halves(tmp_path / "one.avi", half_frames=10)
    assert main(["eval-recognition-real", str(tmp_path), "--tracks-of", str(video)]) == 1
    assert "not both" in capsys.readouterr().err
