"""TensorRT engines: cache keys, profiles and calibration data (everywhere); build, run, INT8 and refit
(only where TensorRT and a CUDA GPU exist; skipped with the reason elsewhere, never stubbed)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from metagait_edge.deploy import engine as EN

# --- pure parts --------------------------------------------------------------------------------------

BASE = dict(model_sha256="a" * 64, trt_version="10.3.0", gpu_name="Orin", precision="fp16")


def test_cache_key_changes_with_every_ingredient():
    key = EN.engine_cache_key(**BASE)
    assert key == EN.engine_cache_key(**BASE)  # stable
    assert key.startswith("fp16-trt10.3.0-orin-")
    variants = [
        {**BASE, "model_sha256": "b" * 64},
        {**BASE, "trt_version": "10.7.0"},
        {**BASE, "gpu_name": "NVIDIA GeForce RTX 4090"},
        {**BASE, "precision": "int8"},
        {**BASE, "precision": "fp32"},
    ]
    keys = {EN.engine_cache_key(**v) for v in variants}
    keys |= {EN.engine_cache_key(**BASE, refit=True), EN.engine_cache_key(**BASE, compute_capability="8.7")}
    keys.add(EN.engine_cache_key(**BASE, profiles={"cycles": ((1, 12, 101), (1, 12, 101), (16, 12, 101))}))
    assert key not in keys and len(keys) == len(variants) + 3
    # Calibration data matters for int8 only.
    assert EN.engine_cache_key(**BASE, calibration_sha256="x") == key
    int8 = {**BASE, "precision": "int8"}
    assert EN.engine_cache_key(**int8, calibration_sha256="x") != EN.engine_cache_key(**int8, calibration_sha256="y")
    with pytest.raises(ValueError, match="precision"):
        EN.engine_cache_key(**{**BASE, "precision": "bf8"})
    with pytest.raises(ValueError, match="GPU name"):
        EN.engine_cache_key(**{**BASE, "gpu_name": ""})


def test_engine_cache_store_lookup_and_corruption(tmp_path):
    cache = EN.EngineCache(tmp_path / "engines")
    key = EN.engine_cache_key(**BASE)
    assert cache.lookup(key) is None
    stored = cache.store(key, b"\x00engine-bytes", {"onnx": "tcn.onnx"})
    hit = cache.lookup(key)
    assert hit is not None and hit.read() == b"\x00engine-bytes" and hit.meta["onnx"] == "tcn.onnx"
    assert [e.key for e in cache.entries()] == [key]
    # A different key (e.g. after a TensorRT upgrade) misses: the engine is rebuilt.
    assert cache.lookup(EN.engine_cache_key(**{**BASE, "trt_version": "10.4.0"})) is None
    # A truncated engine (crash while copying) no longer matches its sidecar.
    stored.path.write_bytes(b"\x00eng")
    assert cache.lookup(key) is None
    stored.path.with_suffix(".json").write_text("{not json")
    assert cache.lookup(key) is None
    json.dumps(stored.meta)


def test_default_profiles():
    rec = EN.default_profile("silhouettes", ["batch", "frames", 64, 44], max_batch=8)
    assert rec == {"silhouettes": ((1, 3, 64, 44), (1, 30, 64, 44), (8, 90, 64, 44))}
    fixed = EN.default_profile("silhouettes", ["batch", 30, 32, 22], max_batch=4)
    assert fixed == {"silhouettes": ((1, 30, 32, 22), (1, 30, 32, 22), (4, 30, 32, 22))}
    tcn = EN.default_profile("cycles", ["batch", 126, 101], max_batch=16)
    assert tcn == {"cycles": ((1, 126, 101), (1, 126, 101), (16, 126, 101))}
    with pytest.raises(ValueError, match="axis 2"):
        EN.default_profile("cycles", ["batch", 126, "time"], max_batch=2)


def test_onnx_input_profile_reads_the_exported_model(tmp_path):
    pytest.importorskip("onnx")
    from metagait_edge.deploy.export import export_tcn
    from metagait_edge.models.tcn import TCNConfig
    from metagait_edge.personalization.model import CycleModel, CycleModelConfig

    model = CycleModel(CycleModelConfig(channels=2, tcn=TCNConfig(hidden_channels=4, levels=5))).eval()
    path = export_tcn(model, tmp_path / "t.onnx").path
    assert EN.onnx_input_profile(path, 4) == {"cycles": ((1, 6, 101), (1, 6, 101), (4, 6, 101))}


def test_load_calibration_batches(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", silhouettes=(rng.random((5, 30, 8, 6)) * 255).astype(np.uint8))
    np.savez(tmp_path / "b.npz", silhouettes=rng.random((6, 30, 8, 6)).astype(np.float32))
    batches = EN.load_calibration_batches([tmp_path / "a.npz", tmp_path / "b.npz"], "silhouettes", (30, 8, 6), 4)
    assert [b.shape for b in batches] == [(4, 30, 8, 6)] * 2  # 11 samples: 2 full batches, rest dropped
    assert batches[0].dtype == np.float32 and 0 <= batches[0].min() and batches[0].max() <= 1
    assert EN.calibration_sha256(batches) != EN.calibration_sha256(batches[:1])
    assert len(EN.load_calibration_batches([tmp_path / "b.npz"], "silhouettes", (30, 8, 6), 2, max_batches=1)) == 1
    with pytest.raises(KeyError, match=r"a.npz: no array 'cycles'"):
        EN.load_calibration_batches([tmp_path / "a.npz"], "cycles", (12, 101))
    with pytest.raises(ValueError, match=r"b.npz: silhouettes has samples of shape \(30, 8, 6\)"):
        EN.load_calibration_batches([tmp_path / "b.npz"], "silhouettes", (30, 64, 44))
    with pytest.raises(ValueError, match="at least 8 samples"):
        EN.load_calibration_batches([tmp_path / "a.npz"], "silhouettes", (30, 8, 6), 8)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        EN.load_calibration_batches([tmp_path / "missing.npz"], "silhouettes", (30, 8, 6))
    np.savez(tmp_path / "nan.npz", cycles=np.full((4, 12, 101), np.nan, np.float32))
    with pytest.raises(ValueError, match="nan.npz: cycles contains NaN"):
        EN.load_calibration_batches([tmp_path / "nan.npz"], "cycles", (12, 101), 2)


def test_engine_module_does_not_import_tensorrt():
    import subprocess
    import sys

    code = ("import sys, metagait_edge.deploy.engine, metagait_edge.deploy.tensorrt_backend, "
            "metagait_edge.deploy.backends; assert 'tensorrt' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


# --- TensorRT on a GPU ------------------------------------------------------------------------------


def _trt_skip_reason():
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (JetPack 6 ships TensorRT 10; see docs/deploy.md)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    return None


needs_trt = pytest.mark.skipif(_trt_skip_reason() is not None, reason=str(_trt_skip_reason()))


@pytest.fixture
def tcn_setup(tmp_path):
    import torch

    from metagait_edge.deploy.export import export_tcn
    from metagait_edge.meta.maml import Batch, adapt, model_params
    from metagait_edge.models.tcn import TCNConfig
    from metagait_edge.personalization.model import CycleModel, CycleModelConfig
    from metagait_edge.deploy.parity import example_inputs

    torch.manual_seed(0)
    model = CycleModel(CycleModelConfig(channels=6, tcn=TCNConfig(hidden_channels=16, levels=5))).eval()
    with torch.no_grad():
        model.tcn.head.weight.normal_(0, 0.1)
    x = torch.from_numpy(example_inputs("tcn", model, 5, seed=3))
    fast = adapt(model, model_params(model, detach=True), Batch(x, x[:, 6:12] * 1.3), steps=3, lrs=0.05, detach=True)
    base = export_tcn(model, tmp_path / "base.onnx")
    adapted = export_tcn(model, tmp_path / "adapted.onnx", fast)
    return model, fast, base.path, adapted.path


@pytest.mark.needs_tensorrt
@needs_trt
def test_fp32_engine_matches_onnxruntime_and_is_cached(tcn_setup, tmp_path):
    from metagait_edge.deploy.backends import OnnxRuntimeBackend
    from metagait_edge.deploy.parity import example_inputs
    from metagait_edge.deploy.tensorrt_backend import TensorRTBackend

    model, _, base, _ = tcn_setup
    trt_b = TensorRTBackend(base, "tcn", precision="fp32", cache_dir=tmp_path / "engines").load()
    assert trt_b.describe()["engine_built_now"] is True
    x = example_inputs("tcn", model, 4, seed=5)
    want = OnnxRuntimeBackend(base, "tcn").run(x)["output"]
    np.testing.assert_allclose(trt_b.run(x)["output"], want, rtol=1e-3, atol=1e-3)
    again = TensorRTBackend(base, "tcn", precision="fp32", cache_dir=tmp_path / "engines").load()
    assert again.describe()["engine_built_now"] is False
    assert again.describe()["engine_key"] == trt_b.describe()["engine_key"]


@pytest.mark.needs_tensorrt
@needs_trt
def test_refit_after_calibration_equals_fresh_engine_from_adapted_onnx(tcn_setup, tmp_path):
    from metagait_edge.deploy import engine as E
    from metagait_edge.deploy.parity import example_inputs, torch_reference
    from metagait_edge.deploy.tensorrt_backend import TensorRTBackend

    model, fast, base, adapted = tcn_setup
    x = example_inputs("tcn", model, 3, seed=9)
    refitted = TensorRTBackend(base, "tcn", precision="fp32", cache_dir=tmp_path / "e1").load()
    before = refitted.run(x)["output"]
    names = set(refitted.engine_weight_names())
    assert "tcn.blocks.0.conv1.conv.weight" in names and "tcn.blocks.0.film.scale" in names
    refitted.swap_weights(fast)
    fresh = TensorRTBackend(adapted, "tcn", precision="fp32", cache_dir=tmp_path / "e2").load()
    got, want = refitted.run(x)["output"], fresh.run(x)["output"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got, torch_reference("tcn", model, x, fast), rtol=1e-3, atol=1e-3)
    assert np.abs(got - before).max() > 1e-2
    # The OnnxParserRefitter path gives the same engine weights.
    cuda_engine = E.deserialize(E.get_engine(base, E.EngineSpec(precision="fp32", refit=True), tmp_path / "e3").engine)
    E.refit_from_onnx(cuda_engine, adapted)


@pytest.mark.needs_tensorrt
@needs_trt
def test_fp16_and_int8_engines_stay_close(tcn_setup, tmp_path):
    from metagait_edge.deploy.backends import OnnxRuntimeBackend
    from metagait_edge.deploy.parity import example_inputs
    from metagait_edge.deploy.tensorrt_backend import TensorRTBackend

    model, _, base, _ = tcn_setup
    np.savez(tmp_path / "cal.npz", cycles=example_inputs("tcn", model, 32, seed=11))
    x = example_inputs("tcn", model, 4, seed=12)
    want = OnnxRuntimeBackend(base, "tcn").run(x)["output"]
    scale = np.abs(want).max()
    fp16 = TensorRTBackend(base, "tcn", precision="fp16", cache_dir=tmp_path / "e").run(x)["output"]
    assert np.abs(fp16 - want).max() < 2e-2 * scale
    int8 = TensorRTBackend(base, "tcn", precision="int8", cache_dir=tmp_path / "e",
                           calibration_files=[tmp_path / "cal.npz"]).run(x)["output"]
    assert np.abs(int8 - want).max() < 0.15 * scale
