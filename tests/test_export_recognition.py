"""ONNX export of MetaGait: dynamic batch and frames, parity with PyTorch, TensorRT op allow-list."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from metagait_edge.deploy import export as E, onnx_graph, parity  # noqa: E402
from metagait_edge.models.metagait import MetaGait, MetaGaitConfig  # noqa: E402


def tiny_config(**overrides) -> MetaGaitConfig:
    base = dict(channels=(4, 8, 8), input_height=16, input_width=12, local_parts=4, strip_bins=(1, 2, 4),
                num_classes=5, mta_descriptor_channels=4, mta_gate_hidden=4, mhn_hidden=8)
    base.update(overrides)
    return MetaGaitConfig(**base)


def _check_parity(model, path, shapes):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for i, (batch, frames, realistic) in enumerate(shapes):
        x = parity.example_inputs("recognition", model, batch, realistic=realistic, seed=i)[:, :frames]
        (got,) = session.run(None, {E.RECOGNITION_INPUT: x})
        want = parity.torch_reference("recognition", model, x)
        assert got.shape == want.shape == (batch, model.config.num_parts, model.config.embedding_dim)
        np.testing.assert_allclose(got, want, rtol=parity.FP32_RTOL, atol=parity.FP32_ATOL["recognition"])


@pytest.mark.slow  # MetaGait's graph has ~2000 nodes: even the tiny export + checks take ~5 s here
def test_tiny_metagait_export_dynamic_batch_and_frames(tmp_path):
    model = MetaGait(tiny_config()).eval()
    report = E.export_recognition(model, tmp_path / "rec.onnx")
    assert report.inputs == {"silhouettes": ["batch", "frames", 16, 12]}
    assert report.outputs == {"embeddings": ["batch", 7, 8]}
    assert set(report.ops) <= onnx_graph.TRT10_ONNX_OPS
    assert onnx_graph.model_kind(report.path) == "recognition"
    _check_parity(model, report.path, [(1, 30, True), (3, 30, False), (2, 12, True), (1, 45, False)])
    # The exported model is a copy: the caller's model keeps its training-mode outputs.
    assert model.output_mode == "train"


@pytest.mark.slow
def test_fixed_frames_export_and_bad_frames(tmp_path):
    model = MetaGait(tiny_config(mta="static", mtp="max")).eval()
    report = E.export_recognition(model, tmp_path / "fixed.onnx", frames=30, dynamic_frames=False)
    assert report.inputs == {"silhouettes": ["batch", 30, 16, 12]}
    _check_parity(model, report.path, [(2, 30, True)])
    with pytest.raises(ValueError, match="frames must be >= 3"):
        E.export_recognition(model, tmp_path / "x.onnx", frames=2)


@pytest.mark.slow  # the CPU-size MetaGait export takes ~5 s
def test_cpu_size_metagait_export_parity(tmp_path):
    model = MetaGait(MetaGaitConfig.cpu()).eval()
    report = E.export_recognition(model, tmp_path / "rec.onnx")
    assert report.inputs == {"silhouettes": ["batch", "frames", 64, 44]}
    _check_parity(model, report.path, [(1, 30, True), (2, 30, False)])
