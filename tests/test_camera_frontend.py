"""The camera front end on rendered multi-walker scenes with known masks (metagait_edge/runtime/camera_frontend.py).

Scenes come from the synthetic renderer (``runtime.walker_scene``): walkers painted in clothes over a
textured background, each walker's visible ground-truth mask known per frame.
"""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from metagait_edge.config import ConfigError, from_dict  # noqa: E402
from metagait_edge.runtime.camera import CameraPipeline  # noqa: E402
from metagait_edge.runtime.camera_frontend import CameraConfig, CameraFrontEnd, track_silhouettes  # noqa: E402
from metagait_edge.runtime.camera_masks import BackgroundModel, SilhouetteExtractor, mask_iou  # noqa: E402
from metagait_edge.runtime.config import EdgeConfig  # noqa: E402
from metagait_edge.runtime.walker_scene import SceneWalker, render_scene  # noqa: E402

TALL = SceneWalker(185, 90, "M", 100, x0=-1.3, seed=1)
SMALL = SceneWalker(158, 50, "F", 118, x0=1.3, shirt_bgr=(40, 140, 60), seed=2)


@pytest.fixture(scope="module")
def two_walkers():
    return render_scene([TALL, SMALL], n_frames=50, lead_in=20)


def _run(scene, config):
    """Front end over the scene: {track: [(frame, IoU with each walker's ground truth)]} and the front end."""
    front_end, per_track = CameraFrontEnd(config), {}
    for i, frame in enumerate(scene.frames):
        for sil in front_end.process(frame).silhouettes:
            full = sil.full_mask(frame.shape)
            per_track.setdefault(sil.track, []).append((i, [mask_iou(full, m[i]) for m in scene.masks]))
    return per_track, front_end


def _assert_one_walker_per_track(per_track, n_walkers, min_iou):
    owners = set()
    for track, rows in per_track.items():
        ious = np.array([r[1] for r in rows])
        owner = int(np.argmax(ious.mean(axis=0)))
        others = np.delete(ious, owner, axis=1)
        assert ious[:, owner].min() > min_iou, f"track {track}: a frame of walker {owner} barely overlaps it"
        assert others.size == 0 or others.max() < 0.02, f"track {track} holds another walker's silhouette"
        owners.add(owner)
    assert owners == set(range(n_walkers))


@pytest.mark.slow
def test_two_walkers_get_two_tracks_and_separate_buffers(two_walkers):
    per_track, front_end = _run(two_walkers, CameraConfig(warmup_frames=15))
    assert len(per_track) == 2 and front_end.counters.tracks_started == 2
    _assert_one_walker_per_track(per_track, 2, 0.7)  # measured: MOG2 mean IoU 0.83-0.86, min 0.80
    assert all(len(rows) >= 40 for rows in per_track.values())
    # The pipeline keeps one buffer per track with exactly those silhouettes.
    pipe = CameraPipeline(None, None, lambda r: None, CameraFrontEnd(CameraConfig(warmup_frames=15)), every=10**6)
    for frame in two_walkers.frames:
        assert pipe.process(frame) == []
    assert pipe.buffer.tracks() == sorted(per_track)
    assert [pipe.buffer.count(t) for t in pipe.buffer.tracks()] == [min(len(per_track[t]), pipe.buffer.capacity)
                                                                    for t in sorted(per_track)]


@pytest.mark.slow
def test_a_walker_cut_by_the_image_edge_is_dropped_and_counted():
    scene = render_scene([SceneWalker(180, 80, "M", 105, x0=-2.9, seed=1)], n_frames=30, lead_in=15)
    per_track, front_end = _run(scene, CameraConfig(warmup_frames=10, track_min_hits=1))
    gt = scene.masks[0]
    at_edge = [i for i in range(len(gt)) if gt[i].any() and (gt[i][:, :3].any() or gt[i][:, -3:].any())]
    assert len(at_edge) >= 4  # the walker walks in through the right edge
    emitted = [i for i, _ in per_track[0]]
    assert not set(emitted) & set(at_edge)
    assert front_end.counters.dropped_cut_by_edge >= len(at_edge) - 1  # its first frame makes the track
    assert len(emitted) >= 15


@pytest.mark.slow
def test_a_walker_behind_an_occluder_is_a_partial_body():
    bench = (150, 150, 260, 240)  # hides the legs while the walker passes behind it
    scene = render_scene([SceneWalker(180, 80, "M", 105, x0=0.0, seed=1)], n_frames=50, lead_in=15, occluder=bench)
    per_track, front_end = _run(scene, CameraConfig(warmup_frames=10))
    gt = scene.masks[0]
    legs_hidden = {i for i in range(len(gt)) if gt[i].any() and np.flatnonzero(gt[i].any(axis=1))[-1] < bench[1] + 5}
    assert len(legs_hidden) >= 10
    emitted = {i for rows in per_track.values() for i, _ in rows}
    assert not emitted & legs_hidden
    assert front_end.counters.dropped_partial >= len(legs_hidden) - 2


@pytest.mark.slow
def test_walkers_crossing_are_merged_never_mixed():
    scene = render_scene([SceneWalker(185, 90, "M", 100, x0=0.0, seed=1),
                          SceneWalker(160, 55, "F", 110, x0=0.0, view_deg=270, shirt_bgr=(40, 140, 60), seed=2)],
                         n_frames=50, lead_in=15)
    per_track, front_end = _run(scene, CameraConfig(warmup_frames=10))
    assert front_end.counters.dropped_merged >= 10
    _assert_one_walker_per_track(per_track, 2, 0.6)


@pytest.mark.slow
@pytest.mark.parametrize("offset_m, height_cm", [(0.35, 165), (0.45, 170)])
def test_a_pair_walking_side_by_side_is_one_blob_dropped_as_merged(offset_m, height_cm):
    """Two walkers abreast make one blob no wider than tall: the aspect gate passes it, their two heads do not.

    Without the two-heads gate (``merged_memory: 0``) every frame of the pair came out as one silhouette, as a
    couple did on the real multi-walker video (docs/results/recognition.md, "Real video")."""
    scene = render_scene([SceneWalker(180, 80, "M", 105, x0=0.0, seed=1),
                          SceneWalker(height_cm, 60, "F", 105, x0=offset_m, shirt_bgr=(40, 140, 60), seed=2)],
                         n_frames=40, lead_in=15)
    per_track, ungated = _run(scene, CameraConfig(warmup_frames=10, merged_memory=0))
    assert sum(len(rows) for rows in per_track.values()) >= 30 and ungated.counters.dropped_merged == 0
    per_track, front_end = _run(scene, CameraConfig(warmup_frames=10))
    assert sum(len(rows) for rows in per_track.values()) <= 2
    # Each track of the pair ends after 2 merged frames (no buffer continues across a merge); the blob's next
    # track needs track_min_hits frames before it is judged again.
    assert front_end.counters.dropped_merged >= 15 and front_end.counters.tracks_ended >= 5


def test_heads_in_view_counts_walkers_abreast_not_a_raised_hand():
    from metagait_edge.runtime.camera_masks import heads_in_view

    def person(canvas, cx, top, height):
        cv2.ellipse(canvas, (cx, top + height // 12), (height // 14, height // 12), 0, 0, 360, 255, -1)  # head
        cv2.rectangle(canvas, (cx - height // 8, top + height // 7), (cx + height // 8, top + height), 255, -1)

    one = np.zeros((120, 70), np.uint8)
    person(one, 35, 5, 110)
    assert heads_in_view(one) == 1
    cv2.rectangle(one, (57, 0), (60, 20), 255, -1)  # a raised hand: a thin blob in the top band
    assert heads_in_view(one) == 1
    pair = np.zeros((120, 90), np.uint8)
    person(pair, 28, 5, 110)
    person(pair, 62, 12, 100)  # shoulders touch: one blob, aspect 0.75
    assert heads_in_view(pair) == 2
    assert heads_in_view(np.zeros((10, 10), np.uint8)) == 0
    with pytest.raises(ValueError, match="merged_memory"):
        CameraConfig(merged_memory=-1)


def test_tracker_does_not_hand_a_walker_a_much_taller_box():
    """On real video a track took over the taller blob of its walker merged with someone behind, then followed
    that other walker out of it. A box over 30 % taller than the track's walker is not theirs; a shorter one
    (a partial body) still is, for the front end's partial-body gate to drop."""
    from metagait_edge.runtime.camera_tracking import Detection, WalkerTracker

    tracker = WalkerTracker(max_tracks=1, min_hits=1)  # one track: the test follows the walker's alone
    walker = (100, 100, 130, 160)  # 60 px tall
    (track, _), = tracker.update([Detection(walker)]).matched
    assert tracker.update([Detection((98, 60, 132, 160))]).matched == []  # 100 px, IoU 0.53 with the walker's box
    assert tracker.tracks[track.id].missed == 1
    shorter = tracker.update([Detection((100, 118, 130, 160))])  # 42 px: legs only
    assert [t.id for t, _ in shorter.matched] == [track.id]
    track.heights.extend([60] * 5)  # typical height from accepted frames, not the last (short) box
    assert [t.id for t, _ in tracker.update([Detection((100, 100, 131, 161))]).matched] == [track.id]
    assert tracker.update([Detection((99, 70, 131, 161))]).matched == []  # 91 px > 1.3 x 60


def test_mog2_never_emits_the_first_frames_whole_image_mask():
    scene = render_scene([SceneWalker(180, 80, "M", 105, x0=0.0, seed=1)], n_frames=25, lead_in=0)
    raw = BackgroundModel("mog2", warmup_frames=1)
    assert raw(scene.frames[0]) is None  # OpenCV's own first mask would be the whole image
    extractor = SilhouetteExtractor(warmup_frames=5)
    first = [extractor(f) for f in scene.frames[:5]]
    assert all(np.count_nonzero(m) == 0 for m in first)
    per_track, front_end = _run(scene, CameraConfig(warmup_frames=5, track_min_hits=1))
    assert front_end.counters.warmup == 5
    emitted = [i for rows in per_track.values() for i, _ in rows]
    assert emitted and min(emitted) >= 5


def test_camera_config_from_yaml_keys():
    cfg = from_dict(EdgeConfig, {"sources": [], "camera": {"silhouette_method": "segmentation", "detector": "hog",
                                                           "max_walkers": 2}})
    assert cfg.camera.silhouette_method == "segmentation" and cfg.camera.detector == "hog"
    with pytest.raises(ConfigError, match="camera.detectr"):
        from_dict(EdgeConfig, {"sources": [], "camera": {"detectr": "hog"}})
    with pytest.raises((ConfigError, ValueError), match="silhouette_method"):
        from_dict(EdgeConfig, {"sources": [], "camera": {"silhouette_method": "grabcut"}})
    with pytest.raises(ValueError, match="segmenter_onnx"):
        CameraConfig(silhouette_method="segmentation", segmenter="onnx")
    with pytest.raises(ValueError, match="hog needs"):
        CameraConfig(detector="hog")


def test_segmentation_without_mediapipe_says_what_to_install():
    try:
        import mediapipe  # noqa: F401
        pytest.skip("mediapipe is installed: the segmentation tests below run instead")
    except ImportError:
        pass
    with pytest.raises(ImportError, match=r"camera-models"):
        CameraFrontEnd(CameraConfig(silhouette_method="segmentation"))


@pytest.mark.slow
def test_pose_segmentation_masks_overlap_the_rendered_masks(two_walkers):
    pytest.importorskip("mediapipe", reason="segmentation model: pip install 'metagait-edge[camera-models]'")
    per_track, front_end = _run(two_walkers, CameraConfig(silhouette_method="segmentation", warmup_frames=15))
    assert len(per_track) == 2
    _assert_one_walker_per_track(per_track, 2, 0.7)
    for rows in per_track.values():  # measured: mean IoU 0.95 (MOG2 on the same frames: 0.83-0.86)
        assert np.mean([max(r[1]) for r in rows]) > 0.9
    sils = track_silhouettes(two_walkers.frames[:40], CameraFrontEnd(CameraConfig(silhouette_method="segmentation",
                                                                                  warmup_frames=15)))
    assert sorted(sils) == sorted(per_track) and all(s.shape[1:] == (64, 64) for s in sils.values())


def test_run_command_and_ros_parameters_select_the_front_end(tmp_path, capsys):
    import sys
    from pathlib import Path

    from metagait_edge.cli import main

    cfg = tmp_path / "edge.yaml"
    cfg.write_text("sources: []\ncamera:\n  silhouette_method: mog2\n")
    assert main(["run", "--config", str(cfg), "--detector", "hog"]) == 2  # hog boxes need model masks
    assert "hog needs" in capsys.readouterr().err
    pkg = Path(__file__).resolve().parents[1] / "ros2_ws" / "src" / "metagait_edge"
    sys.path.insert(0, str(pkg))
    try:
        from metagait_edge_ros.params import GaitParams
    finally:
        sys.path.remove(str(pkg))
    params = GaitParams(silhouette_method="segmentation", camera_detector="hog", max_walkers=2)
    assert params.camera_config == CameraConfig(silhouette_method="segmentation", detector="hog", max_walkers=2)
    with pytest.raises(ValueError, match="segmenter_onnx"):
        GaitParams(silhouette_method="segmentation", camera_segmenter="onnx")
    with pytest.raises(ValueError, match="silhouette_method"):
        GaitParams(silhouette_method="grabcut")


def test_segmentation_path_with_a_given_segmenter_crops_pastes_and_gates():
    # A colour key on a plain background stands in for the model: the test is about the crops, the masks
    # pasted back into the frame and the gates, which run the same for any segmenter.
    grey = (128, 128, 128)
    scene = render_scene([TALL, SMALL], n_frames=30, lead_in=12, plain_background=grey)

    def colour_key(crop):
        return (np.abs(crop.astype(np.int16) - np.int16(grey)).max(axis=2) > 30).astype(np.float32)

    config = CameraConfig(silhouette_method="segmentation", warmup_frames=10)
    front_end = CameraFrontEnd(config, segmenter=colour_key)
    per_track = {}
    for i, frame in enumerate(scene.frames):
        for sil in front_end.process(frame).silhouettes:
            per_track.setdefault(sil.track, []).append((i, [mask_iou(sil.full_mask(frame.shape), m[i]) for m in scene.masks]))
    assert len(per_track) == 2 and all(len(rows) >= 20 for rows in per_track.values())
    _assert_one_walker_per_track(per_track, 2, 0.75)
    assert all(np.mean([max(r[1]) for r in rows]) > 0.9 for rows in per_track.values())  # measured 0.96-0.97
    # A segmenter that sees only part of the person (legs cut off at the crop) is a partial body.
    legless = CameraFrontEnd(config, segmenter=lambda crop: colour_key(crop) * (np.arange(len(crop)) < len(crop) // 2)[:, None])
    for frame in scene.frames:
        legless.process(frame)
    assert legless.counters.silhouettes <= 2 * config.track_min_hits
    assert legless.counters.dropped_partial >= 30


def test_a_still_figure_gives_no_gait_silhouettes():
    # Someone standing, or the background model's ghost of someone who left: the same silhouette frame after
    # frame. It is tracked but dropped (counted as still) after still_frames frames.
    scene = render_scene([SceneWalker(180, 80, "M", 105, x0=0.0, seed=1)], n_frames=20, lead_in=10)
    frames = list(scene.frames[:10]) + [scene.frames[20]] * 30  # empty scene, then a figure that never moves
    config = CameraConfig(warmup_frames=8, still_frames=5)
    front_end = CameraFrontEnd(config)
    emitted = sum(len(front_end.process(frame).silhouettes) for frame in frames)
    assert front_end.counters.tracks_started == 1
    assert emitted <= config.still_frames and front_end.counters.dropped_still >= 30 - config.track_min_hits - 5
