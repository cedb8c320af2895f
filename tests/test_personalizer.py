"""Where per-cycle generation runs (runtime/personalizer.py): torch, ONNX Runtime and TensorRT give the same cycle."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from metagait_edge.deploy.backends import BackendUnavailable, tensorrt_available  # noqa: E402
from metagait_edge.runtime.personalizer import load_personalizer  # noqa: E402
from metagait_edge.runtime.virtual_walker import load_walker  # noqa: E402


@pytest.fixture(scope="module")
def cycles():
    """Six consecutive physical cycles of the demo's HuGaDB walker (offline segmentation)."""
    torch.set_num_threads(1)
    walker = load_walker()
    if walker.true_cycles is None:
        pytest.skip(f"no HuGaDB data (the demo walker fell back to {walker.source})")
    x = np.asarray(walker.true_cycles[:6], np.float32)
    assert x.shape[1:] == (load_personalizer().n_channels, 101)
    return x


def _profile_weights(pers, cycles):
    """Fast weights from the real calibration inner loop on 5 support cycles."""
    support, _, _ = pers.support_and_query(cycles, np.ones(cycles.shape[:2], bool), 5)
    fast = pers.adapt(support)
    return {k: v.detach().numpy() for k, v in fast.items() if k in pers.maml.adapt_names}


def test_onnxruntime_generation_matches_torch_for_base_and_a_calibrated_profile(cycles, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.setenv("METAGAIT_CACHE", str(tmp_path))
    ref, ort = load_personalizer(), load_personalizer()
    assert ref.backend == "torch"
    assert ort.use_backend("onnxruntime") == "onnxruntime"
    assert (tmp_path / "onnx").is_dir()  # exported once into the cache
    weights = _profile_weights(ref, cycles)
    valid = np.ones(cycles.shape[1], bool)
    template = ref.normalize(cycles[:5]).mean(axis=0)
    base_t, base_o = ref.generate(cycles[4], template, valid), ort.generate(cycles[4], template, valid)
    prof_t = ref.generate(cycles[4], template, valid, ref.generator(weights))
    walker_model = ort.generator(weights)
    assert walker_model.backend == "onnxruntime"
    prof_o = ort.generate(cycles[4], template, valid, walker_model)
    scale = np.abs(base_t).max()
    assert np.abs(prof_t - base_t).max() > 1e-3 * scale  # the calibration changed the cycle
    np.testing.assert_allclose(base_o, base_t, atol=1e-4 * scale)
    np.testing.assert_allclose(prof_o, prof_t, atol=1e-4 * scale)


def test_backend_errors_name_the_cause():
    pers = load_personalizer()
    with pytest.raises(ValueError, match="'cuda'"):
        pers.use_backend("cuda")
    with pytest.raises(ValueError, match="do not belong"):
        pers.generator({"tcn.not_a_weight": np.zeros(3, np.float32)})
    ok, why = tensorrt_available()
    if not ok:
        with pytest.raises(BackendUnavailable, match="tensorrt"):
            pers.use_backend("tensorrt")
        assert pers.backend == "torch"  # a refused backend leaves the working one in place


@pytest.mark.needs_tensorrt
@pytest.mark.skipif(not tensorrt_available()[0], reason=f"TensorRT: {tensorrt_available()[1]}")
def test_tensorrt_generation_matches_torch_within_fp16(cycles, tmp_path, monkeypatch):
    monkeypatch.setenv("METAGAIT_CACHE", str(tmp_path))
    ref, trt = load_personalizer(), load_personalizer()
    assert trt.use_backend("tensorrt", engine_cache=tmp_path / "engines") == "tensorrt"
    weights = _profile_weights(ref, cycles)
    valid = np.ones(cycles.shape[1], bool)
    template = ref.normalize(cycles[:5]).mean(axis=0)
    want = ref.generate(cycles[4], template, valid, ref.generator(weights))
    got = trt.generate(cycles[4], template, valid, trt.generator(weights))
    np.testing.assert_allclose(got, want, atol=2e-2 * np.abs(want).max())


def test_an_onnx_file_from_another_model_is_refused(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from metagait_edge.deploy.export import export_tcn

    monkeypatch.setenv("METAGAIT_CACHE", str(tmp_path))
    shipped = load_personalizer()
    mine = tmp_path / "mine.onnx"
    export_tcn(shipped.maml.model, mine)
    assert load_personalizer().use_backend("onnxruntime", onnx=mine) == "onnxruntime"  # its own export: accepted
    other = load_personalizer(seed=1, path=None)
    with torch.no_grad():
        next(other.maml.model.parameters()).add_(0.5)  # a different checkpoint of the same architecture
    with pytest.raises(ValueError, match="was not exported from"):
        other.use_backend("onnxruntime", onnx=mine)
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        shipped.use_backend("onnxruntime", onnx=tmp_path / "missing.onnx")
