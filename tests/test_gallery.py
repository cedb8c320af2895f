from __future__ import annotations

import math

import numpy as np
import pytest

from metagait_edge.recognition.gallery import (
    Gallery,
    GalleryError,
    equal_error_rate,
    far_frr_curve,
    fit_threshold,
)


def _emb(*strips):
    return np.array(strips, dtype=np.float32)  # [P, D]


ALICE = _emb([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
BOB = _emb([0.0, 0.0, 1.0], [1.0, 0.0, 0.0])


def _gallery(**kw):
    g = Gallery(**kw)
    g.enroll("alice", ALICE)
    g.enroll("bob", np.stack([BOB, BOB * 3.0]))  # scale does not matter after normalization
    return g


def test_identify_returns_walker_distance_and_margin():
    g = _gallery(threshold=0.5)
    res = g.identify(ALICE * 2.0)
    assert res.walker_id == "alice" and res.nearest_id == "alice"
    assert res.distance == pytest.approx(0.0, abs=1e-6)
    # cosine distance to bob: strip 0 cos 0, strip 1 cos 0 -> mean(1 - 0) = 1
    assert res.margin == pytest.approx(1.0, abs=1e-6)
    assert g.num_sequences("bob") == 2


def test_mean_template_is_renormalized_mean_of_normalized_sequences():
    g = Gallery(mode="mean")
    g.enroll("carol", np.stack([_emb([1.0, 0.0]), _emb([0.0, 5.0])]))
    d = g.distances(_emb([1.0, 1.0]))
    assert d["carol"] == pytest.approx(0.0, abs=1e-6)  # mean direction of (1,0) and (0,1)
    keep_all = Gallery(mode="all")
    keep_all.enroll("carol", np.stack([_emb([1.0, 0.0]), _emb([0.0, 5.0])]))
    assert keep_all.distances(_emb([1.0, 1.0]))["carol"] == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)
    assert keep_all.distances(_emb([0.0, 1.0]))["carol"] == pytest.approx(0.0, abs=1e-6)


def test_no_identity_is_accepted_without_a_calibrated_threshold():
    g = _gallery()  # threshold None: an uncalibrated gallery cannot tell a walker from a stranger
    res = g.identify(ALICE)
    assert res.walker_id is None and res.nearest_id == "alice" and res.distance == pytest.approx(0.0, abs=1e-6)
    g.calibrate(genuine=[0.0, 0.05], impostor=[0.9, 1.0], target_far=0.0)
    assert g.identify(ALICE).walker_id == "alice"


def test_open_set_rejection_with_threshold():
    g = _gallery(threshold=0.2)
    stranger = _emb([0.0, 1.0, 0.0], [0.0, 0.0, 1.0])
    res = g.identify(stranger)
    assert res.walker_id is None and res.nearest_id in ("alice", "bob") and res.distance > 0.2
    near_alice = ALICE + _emb([0.0, 0.1, 0.0], [0.0, 0.0, 0.1])
    assert g.identify(near_alice).walker_id == "alice"
    assert Gallery().identify(ALICE).walker_id is None  # empty gallery
    assert math.isinf(Gallery().identify(ALICE).distance)


def test_single_walker_margin_is_infinite_and_euclidean_metric():
    g = Gallery(metric="euclidean")
    g.enroll("alice", ALICE)
    res = g.identify(_emb([0.0, 1.0, 0.0], [0.0, 1.0, 0.0]))
    # strip 0: unit vectors at 90 degrees -> sqrt(2); strip 1 identical -> 0
    assert res.distance == pytest.approx(math.sqrt(2) / 2, abs=1e-6)
    assert math.isinf(res.margin)


def test_far_frr_curve_and_fit_threshold_hand_computed():
    genuine = [0.1, 0.2, 0.3, 0.6]
    impostor = [0.4, 0.5, 0.7, 0.8, 0.9]
    t, far, frr = far_frr_curve(genuine, impostor, thresholds=[0.0, 0.35, 0.5, 1.0])
    np.testing.assert_allclose(far, [0.0, 0.0, 0.4, 1.0])
    np.testing.assert_allclose(frr, [1.0, 0.25, 0.25, 0.0])
    # FAR <= 0 -> just below 0.4; FAR <= 0.2 (1 of 5) -> just below 0.5; FAR <= 1 -> accept everything
    assert fit_threshold(genuine, impostor, 0.0) == pytest.approx(0.4) and fit_threshold(genuine, impostor, 0.0) < 0.4
    assert 0.4 <= fit_threshold(genuine, impostor, 0.2) < 0.5
    assert fit_threshold(genuine, impostor, 0.25) < 0.5
    assert fit_threshold(genuine, impostor, 1.0) == pytest.approx(0.9)
    eer, thr = equal_error_rate(genuine, impostor)
    assert eer == pytest.approx(0.225) and thr in (0.4, 0.6)


def test_fit_threshold_respects_far_with_ties():
    impostor = [0.3, 0.3, 0.3, 0.8]
    t = fit_threshold([0.1], impostor, 0.5)  # 2 allowed, but three tie at 0.3
    _, far, _ = far_frr_curve([0.1], impostor, thresholds=[t])
    assert far[0] <= 0.5 and t < 0.3
    with pytest.raises(GalleryError, match="impostor distances are empty"):
        fit_threshold([0.1], [], 0.1)
    with pytest.raises(GalleryError, match="target_far"):
        fit_threshold([0.1], [0.2], 1.5)


def test_calibrate_sets_threshold_used_by_identify():
    g = _gallery()
    thr = g.calibrate([0.0, 0.05], [0.3, 0.6, 0.9], target_far=0.0)
    assert g.threshold == thr < 0.3
    assert g.identify(_emb([0.0, 1.0, 0.0], [0.0, 0.0, 1.0])).walker_id is None


def test_persistence_round_trip(tmp_path):
    path = tmp_path / "gallery" / "walkers.safetensors"
    g = _gallery(threshold=0.25, mode="all")
    g.enroll("ünïcode walker", ALICE * -1.0)
    g.save(path)
    loaded = Gallery.load(path)
    assert loaded.walkers == ["alice", "bob", "ünïcode walker"]
    assert (loaded.metric, loaded.mode, loaded.threshold) == ("cosine", "all", 0.25)
    assert loaded.num_sequences("bob") == 2
    for probe in (ALICE, BOB, -ALICE):
        assert loaded.identify(probe) == g.identify(probe)
    assert [p.name for p in path.parent.iterdir()] == ["walkers.safetensors"]  # no temp file left
    Gallery().save(path)  # an empty gallery overwrites it atomically
    assert len(Gallery.load(path)) == 0


def test_corrupt_or_foreign_files_give_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a gallery at all")
    with pytest.raises(GalleryError, match="garbage.safetensors.*corrupt"):
        Gallery.load(garbage)
    good = tmp_path / "good.safetensors"
    _gallery().save(good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(GalleryError, match="truncated.safetensors"):
        Gallery.load(truncated)
    from safetensors.numpy import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3, dtype=np.float32)}, str(foreign))
    with pytest.raises(GalleryError, match="foreign.safetensors has no gallery metadata"):
        Gallery.load(foreign)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        Gallery.load(tmp_path / "missing.safetensors")


def test_bad_input_is_named():
    g = _gallery()
    with pytest.raises(GalleryError, match=r"gallery holds \(2, 3\)"):
        g.enroll("dave", np.ones((2, 4)))
    with pytest.raises(GalleryError, match="empty"):
        g.enroll("dave", np.zeros((0, 2, 3)))
    with pytest.raises(GalleryError, match="NaN"):
        g.identify(np.full((2, 3), np.nan))
    with pytest.raises(GalleryError, match="numeric"):
        g.enroll("dave", np.array([["a", "b"]]))
    with pytest.raises(GalleryError, match="walker_id"):
        g.enroll("", ALICE)
    with pytest.raises(GalleryError, match=r"\[P, D\], got shape \(2, 2, 3\)"):
        g.identify(np.stack([ALICE, ALICE]))
    with pytest.raises(GalleryError, match="all zeros"):
        g.identify(np.zeros((2, 3)))
    with pytest.raises(GalleryError, match="not enrolled"):
        g.remove("zed")
    g.remove("bob")
    assert g.walkers == ["alice"]


def test_two_walkers_within_the_threshold_is_uncertain_and_rejected():
    g = Gallery(threshold=0.35)
    g.enroll("alice", ALICE)
    g.enroll("bob", BOB)
    between = ALICE + BOB  # 45 degrees from each walker's strips: cosine distance 1 - 1/sqrt(2) = 0.29 to both
    res = g.identify(between)
    assert res.walker_id is None and res.nearest_id in ("alice", "bob") and res.reason.startswith("uncertain")
    g.threshold = 0.25  # now neither is within: unknown, not uncertain
    assert g.identify(between).reason.startswith("unknown")
    near_alice = ALICE + _emb([0.0, 0.1, 0.0], [0.0, 0.0, 0.1])
    assert g.identify(near_alice).walker_id == "alice" and g.identify(near_alice).reason == ""


def test_several_templates_per_walker_with_labels_persist(tmp_path):
    g = Gallery(mode="all", threshold=0.1, model_fingerprint="a" * 64, threshold_source="fitted for FAR 1 %")
    side, front = ALICE, _emb([0.0, 1.0, 0.0], [0.0, 0.0, 1.0])
    g.enroll("alice", side, "pass 1 (side view)")
    assert g.identify(front).walker_id is None  # a view never enrolled
    g.enroll("alice", front, "pass 2 (front view)")
    assert g.identify(front).walker_id == "alice" and g.identify(side).walker_id == "alice"
    path = tmp_path / "g.safetensors"
    g.save(path)
    loaded = Gallery.load(path)
    assert loaded.labels("alice") == ["pass 1 (side view)", "pass 2 (front view)"]
    assert (loaded.model_fingerprint, loaded.threshold_source) == ("a" * 64, "fitted for FAR 1 %")
    with pytest.raises(GalleryError, match="2 labels for 1 templates"):
        g.enroll("bob", BOB, ["one", "two"])


def test_a_version_1_gallery_is_refused_with_what_to_do(tmp_path):
    import json

    from safetensors.numpy import save_file

    old = tmp_path / "v1.safetensors"
    meta = {"format": "metagait-edge-gallery", "version": 1, "metric": "cosine", "mode": "mean", "threshold": None,
            "walkers": ["alice"]}
    save_file({"walker_000000": ALICE[None]}, str(old), metadata={"gallery": json.dumps(meta)})
    with pytest.raises(GalleryError, match="version 1 .* enroll the walkers again"):
        Gallery.load(old)
