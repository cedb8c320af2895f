"""Open-set safety of identification (issue 18 item 3): a calibrated threshold for these very weights, galleries
bound to the model that made them, written atomically (recognition/checkpoint.py, identification.py, gallery.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from metagait_edge.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, sidecar_path  # noqa: E402
from metagait_edge.config import to_dict  # noqa: E402
from metagait_edge.models.metagait import MetaGait, MetaGaitConfig  # noqa: E402
from metagait_edge.recognition.checkpoint import (  # noqa: E402
    load_recognition_checkpoint, model_fingerprint, write_open_set,
)
from metagait_edge.recognition.gallery import Gallery, GalleryError, OpenSetThreshold  # noqa: E402
from metagait_edge.recognition.identification import open_gallery  # noqa: E402
from metagait_edge.runtime.camera import Recognizer, build_recognizer  # noqa: E402


def _checkpoint(tmp_path, name: str, seed: int) -> str:
    torch.manual_seed(seed)
    model = MetaGait(MetaGaitConfig.cpu(channels=(8, 16, 32), num_classes=0))
    save_checkpoint(tmp_path / name, model, {"model": to_dict(model.config)})
    return str(tmp_path / f"{name}.safetensors")


def _record(fingerprint: str, threshold: float = 0.05) -> OpenSetThreshold:
    return OpenSetThreshold(threshold=threshold, metric="cosine", mode="all", target_far=0.01,
                            model_fingerprint=fingerprint, fitted_on="test identities", val_far=0.0, val_frr=0.5,
                            eer=0.2, n_genuine=10, n_impostor=10)


def _walker(width: int, frames: int = 12) -> np.ndarray:
    sil = np.zeros((frames, 64, 64), np.uint8)
    for t in range(frames):
        sil[t, 8:60, 32 - width // 2 + t % 2: 32 + width // 2 + t % 2] = 255
    return sil


def test_a_checkpoint_without_a_calibrated_threshold_is_refused_for_identification(tmp_path):
    path = _checkpoint(tmp_path, "uncalibrated", 0)
    model = load_recognition_checkpoint(path)  # evaluation still loads it
    assert model.open_set is None and "no calibrated open-set threshold" in model.open_set_problem
    for load in (lambda: load_recognition_checkpoint(path, for_identification=True),
                 lambda: build_recognizer(model_path=path), lambda: open_gallery(model)):
        with pytest.raises(CheckpointError, match=r"no calibrated open-set threshold.*calibrate-threshold"):
            load()
    assert build_recognizer(model_path=path, threshold=0.1).gallery.threshold == 0.1  # an explicit one is a choice


def test_the_threshold_is_stored_in_the_sidecar_and_bound_to_the_weights(tmp_path):
    path = _checkpoint(tmp_path, "calibrated", 0)
    sha = json.loads(sidecar_path(path).read_text())["weights_sha256"]
    fingerprint = load_recognition_checkpoint(path).fingerprint
    write_open_set(path, _record(fingerprint, 0.0123))
    model = load_recognition_checkpoint(path, for_identification=True)
    assert model.open_set.threshold == 0.0123 and model.fingerprint == fingerprint
    assert json.loads(sidecar_path(path).read_text())["weights_sha256"] == sha  # weights untouched
    assert load_checkpoint(path).extra["open_set"]["threshold"] == 0.0123
    gallery = open_gallery(model)
    assert (gallery.threshold, gallery.metric, gallery.mode) == (0.0123, "cosine", "all")
    assert "FAR 1 %" in gallery.threshold_source
    # a record fitted for other weights (e.g. the checkpoint was retrained) is refused, not reused
    write_open_set(path, _record("0" * 64))
    with pytest.raises(CheckpointError, match="fitted for other weights"):
        load_recognition_checkpoint(path, for_identification=True)
    other = load_recognition_checkpoint(_checkpoint(tmp_path, "other", 1))
    assert other.fingerprint != fingerprint == model_fingerprint(model)


def test_a_gallery_enrolled_with_another_model_is_refused(tmp_path):
    a = load_recognition_checkpoint(_checkpoint(tmp_path, "a", 0))
    b = load_recognition_checkpoint(_checkpoint(tmp_path, "b", 1))
    rec = Recognizer(a, Gallery(threshold=0.05))
    rec.enroll("thin", _walker(8), "pass 1")
    path = tmp_path / "gallery.safetensors"
    rec.gallery.save(path)
    assert Gallery.load(path, model_fingerprint=a.fingerprint).labels("thin") == ["pass 1"]
    with pytest.raises(GalleryError, match="enrolled with recognition model .* enroll the walkers again"):
        Gallery.load(path, model_fingerprint=b.fingerprint)
    with pytest.raises(GalleryError, match="embeddings of different models cannot be compared"):
        Recognizer(b, Gallery.load(path))
    with pytest.raises(GalleryError, match="without a model fingerprint"):
        unbound = Gallery()
        unbound.enroll("thin", rec.embed(_walker(8)))
        Recognizer(a, unbound)


def test_an_explicit_threshold_wins_and_the_gallery_keeps_its_own(tmp_path):
    path = _checkpoint(tmp_path, "calibrated", 0)
    write_open_set(path, _record(load_recognition_checkpoint(path).fingerprint, 0.02))
    model = load_recognition_checkpoint(path)
    rec = Recognizer(model, open_gallery(model, tmp_path / "g.safetensors", create=True))
    rec.enroll("wide", _walker(20))
    rec.gallery.save(tmp_path / "g.safetensors")
    assert open_gallery(model, tmp_path / "g.safetensors").threshold == 0.02
    assert open_gallery(model, tmp_path / "g.safetensors", threshold=0.5).threshold == 0.5
    with pytest.raises(FileNotFoundError, match="metagait-edge enroll"):
        open_gallery(model, tmp_path / "missing.safetensors")


def test_a_gallery_write_survives_a_crash_mid_write(tmp_path):
    path = tmp_path / "walkers.safetensors"
    before = Gallery(threshold=0.1, mode="all", model_fingerprint="f" * 64)
    before.enroll("alice", np.eye(2, 3, dtype=np.float32), "pass 1")
    before.save(path)
    # Another process adds a walker and dies (no cleanup, no exception handling) halfway through writing.
    crash = textwrap.dedent(f"""
        import os, numpy as np, safetensors.numpy as stn
        from metagait_edge.recognition.gallery import Gallery
        g = Gallery.load({str(path)!r})
        g.enroll("bob", np.ones((4, 2, 3), np.float32), "pass 1")
        real = stn.save_file
        def half_then_die(tensors, name, metadata=None):
            real(tensors, name, metadata=metadata)
            with open(name, "r+b") as fh:
                fh.truncate(os.path.getsize(name) // 2)
            os._exit(9)
        stn.save_file = half_then_die
        g.save({str(path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", crash], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != path.name]
    assert leftovers and all(n.startswith(".walkers.safetensors.") for n in leftovers)  # the half-written temp
    after = Gallery.load(path)  # the previous gallery, whole
    assert after.walkers == ["alice"] and after.labels("alice") == ["pass 1"]
    assert after.model_fingerprint == "f" * 64 and after.threshold == 0.1
    assert after.identify(np.eye(2, 3)) == before.identify(np.eye(2, 3))
