"""Camera silhouettes and recognition on a rendered, composited video (metagait_edge/runtime/camera.py).

Measured (synthetic walker over the textured, noisy background, MOG2 + morphology): mean IoU 0.83 with
the rendered masks over the frames where the walker is visible (precision 0.84, recall 1.00).
"""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from metagait_edge.runtime.camera import (  # noqa: E402
    CameraPipeline, FrameSource, Recognizer, SilhouetteBuffer, SilhouetteExtractor, load_recognition_model, mask_iou,
    silhouettes_from_frames,
)
from metagait_edge.runtime.virtual_walker import WalkerSpec, render_walker_video  # noqa: E402


def _spec(name, h, w, sex, cad):
    return WalkerSpec(name, np.zeros((1, 36), np.int16), 58.8, h, w, sex, cad, "test")


def _frames(path):
    return [f for f, _ in FrameSource("video", path)]


def test_extractor_recovers_rendered_masks(tmp_path):
    v = render_walker_video(_spec("a", 177, 75, "M", 105), tmp_path / "a.avi", n_frames=60, seed=1)
    ex = SilhouetteExtractor()
    extracted = [ex(f) for f in _frames(v.path)]  # every frame: the empty lead-in teaches the background
    ious = [mask_iou(e, m) for e, m in zip(extracted, v.masks) if m.any()]
    assert len(ious) >= 40
    assert np.mean(ious) > 0.75  # measured 0.83
    assert np.percentile(ious, 10) > 0.65


@pytest.mark.slow
def test_recognition_names_the_enrolled_walker(tmp_path):
    import torch

    torch.set_num_threads(1)
    rec = Recognizer(load_recognition_model())
    walkers = {"tall": _spec("tall", 190, 95, "M", 100), "small": _spec("small", 155, 48, "F", 125)}
    for k, (name, spec) in enumerate(walkers.items()):
        v = render_walker_video(spec, tmp_path / f"enroll_{name}.avi", n_frames=60, seed=10 + k)
        rec.enroll(name, silhouettes_from_frames(_frames(v.path))[-30:])
    probe = render_walker_video(walkers["small"], tmp_path / "probe.avi", n_frames=60, seed=99)
    pipe = CameraPipeline(FrameSource("video", probe.path), rec, lambda r: None, every=20, window=30)
    results = [r for f in _frames(probe.path) for r in pipe.process(f)]
    # An uncalibrated gallery accepts nobody (issue 16 #9): nearest "small", but unknown, confidence 0.
    assert results and results[-1].walker_id is None and results[-1].nearest_id == "small"
    assert results[-1].confidence == 0.0
    d = rec.gallery.distances(results[-1].embedding)
    assert d["small"] < d["tall"]
    rec.gallery.threshold = (d["small"] + d["tall"]) / 2  # a threshold between the two walkers
    again = rec.identify(silhouettes_from_frames(_frames(probe.path))[-30:])
    assert again.walker_id == "small" and 0.5 <= again.confidence <= 1.0


def test_onnxruntime_recognition_gives_the_torch_embedding(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import torch

    torch.set_num_threads(1)
    monkeypatch.setenv("METAGAIT_CACHE", str(tmp_path))
    model = load_recognition_model()
    eager, fast = Recognizer(model), Recognizer(model)
    assert fast.use_backend("onnxruntime") == "onnxruntime" and eager.backend == "torch"
    assert list((tmp_path / "onnx").glob("recognition-*.onnx"))  # exported once into the cache
    v = render_walker_video(_spec("a", 177, 75, "M", 105), tmp_path / "a.avi", n_frames=45, seed=3)
    sils = silhouettes_from_frames(_frames(v.path))[-20:]
    want, got = eager.embed(sils), fast.embed(sils)
    assert want.shape == got.shape and np.abs(want).max() > 0.1
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())
    with pytest.raises(ValueError, match="'cuda'"):
        fast.use_backend("cuda")


def _untrained_recognizer():
    """A small random-weight MetaGait: the pipeline's bookkeeping does not depend on which weights ship."""
    import torch

    from metagait_edge.models.metagait import MetaGait, MetaGaitConfig

    torch.manual_seed(0)
    return Recognizer(MetaGait(MetaGaitConfig.cpu(channels=(8, 16, 32), num_classes=0)).set_mode("inference").eval())


def test_frame_drops_are_counted_and_do_not_stop_the_pipeline(tmp_path):
    v = render_walker_video(_spec("a", 177, 75, "M", 105), tmp_path / "a.avi", n_frames=40, seed=2)
    pipe = CameraPipeline(None, _untrained_recognizer(), lambda r: None, every=10, window=10, min_frames=5)
    frames = _frames(v.path)
    results = []
    for i, f in enumerate(frames):
        results += pipe.process(None if i % 4 == 3 else f)
    assert pipe.stats.read_failures == len(frames) // 4
    assert pipe.stats.silhouettes > 10 and pipe.stats.queries >= 1
    assert pipe.buffer.tracks() == [0] and pipe.counters.silhouettes == pipe.stats.silhouettes
    assert len(results) == pipe.stats.queries and all(r.track == 0 and 5 <= r.num_frames <= 10 for r in results)


def test_silhouette_buffer_keeps_newest_per_track():
    b = SilhouetteBuffer(capacity=3)
    for i in range(5):
        b.push(np.full((64, 64), i, np.uint8), track=0)
    b.push(np.zeros((64, 64), np.uint8), track=1)
    assert [int(x[0, 0]) for x in b.latest(10, 0)] == [2, 3, 4]
    assert len(b.latest(10, 1)) == 1 and len(b.latest(10, 7)) == 0


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.avi"):
        FrameSource("video", tmp_path / "nope.avi")
    with pytest.raises(ValueError, match="segmenter"):
        SilhouetteExtractor("segmentation")
