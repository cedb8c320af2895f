"""Inference backends: torch / onnxruntime parity, weight swap after calibration, selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from metagait_edge.config import ConfigError, from_dict  # noqa: E402
from metagait_edge.deploy import backends as B  # noqa: E402
from metagait_edge.deploy import export as E, parity  # noqa: E402
from metagait_edge.meta.maml import Batch, adapt, model_params  # noqa: E402
from metagait_edge.models.tcn import TCNConfig  # noqa: E402
from metagait_edge.personalization.model import CycleModel, CycleModelConfig  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = CycleModel(CycleModelConfig(channels=4, tcn=TCNConfig(hidden_channels=12, levels=5, film=True))).eval()
    with torch.no_grad():
        m.tcn.head.weight.normal_(0, 0.1)
    return m


@pytest.fixture(scope="module")
def onnx_path(model, tmp_path_factory):
    return E.export_tcn(model, tmp_path_factory.mktemp("onnx") / "tcn.onnx").path


def calibrated_fast_weights(model, steps=3):
    """Fast weights from the real MAML inner loop on a 5-shot support set (as on the device)."""
    x = torch.from_numpy(parity.example_inputs("tcn", model, 5, seed=7))
    y = x[:, 4:8] * 1.2 + 0.1  # a walker whose cycles differ from the template
    return adapt(model, model_params(model, detach=True), Batch(x, y), steps=steps, lrs=0.05, detach=True)


def reference(model, params, x):
    with torch.no_grad():
        return functional_call(model, params, (torch.from_numpy(x),))["output"].numpy()


def test_torch_and_onnxruntime_agree_before_and_after_swap(model, onnx_path):
    tb = B.TorchBackend(model, "tcn").load()
    ob = B.OnnxRuntimeBackend(onnx_path, "tcn").load()
    x = parity.example_inputs("tcn", model, 3, seed=1)
    base = reference(model, model_params(model, detach=True), x)
    np.testing.assert_allclose(tb.run(x)["output"], base, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ob.run({"cycles": x})["output"], base, rtol=1e-5, atol=1e-5)

    fast = calibrated_fast_weights(model)
    want = reference(model, fast, x)
    assert np.abs(want - base).max() > 1e-2  # the calibration changed the function
    tb.swap_weights(fast)
    ob.swap_weights(fast)
    np.testing.assert_allclose(tb.run(x)["output"], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ob.run(x)["output"], want, rtol=1e-5, atol=1e-5)
    assert tb.describe()["weight_swaps"] == ob.describe()["weight_swaps"] == 1
    # The source model and the ONNX file are untouched by a swap.
    np.testing.assert_allclose(B.OnnxRuntimeBackend(onnx_path, "tcn").run(x)["output"], base, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reference(model, model_params(model, detach=True), x), base)


def test_partial_swap_merges_over_current_weights(model, onnx_path):
    """ANIL-style calibration: only the head changes; folded names are accepted too."""
    ob = B.OnnxRuntimeBackend(onnx_path, "tcn")
    tb = B.TorchBackend(model, "tcn")
    g = torch.Generator().manual_seed(3)
    head = {"tcn.head.weight": torch.randn(model.tcn.head.weight.shape, generator=g) * 0.1,
            "tcn.head.bias": torch.randn(4, generator=g)}
    params = {**model_params(model, detach=True), **head}
    x = parity.example_inputs("tcn", model, 2, seed=2)
    for backend in (ob, tb):
        backend.swap_weights(head)
        np.testing.assert_allclose(backend.run(x)["output"], reference(model, params, x), rtol=1e-5, atol=1e-5)


def test_swap_rejects_unknown_or_misshaped_weights(model, onnx_path):
    ob = B.OnnxRuntimeBackend(onnx_path, "tcn")
    tb = B.TorchBackend(model, "tcn")
    with pytest.raises(KeyError, match="tcn.missing"):
        ob.swap_weights({"tcn.missing": np.zeros(3)})
    with pytest.raises(KeyError, match="tcn.missing"):
        tb.swap_weights({"tcn.missing": np.zeros(3)})
    with pytest.raises(ValueError, match="tcn.head.bias"):
        ob.swap_weights({"tcn.head.bias": np.zeros(7)})
    assert ob.swaps == 0 and tb.swaps == 0


def test_run_input_errors_are_named(model, onnx_path):
    ob = B.OnnxRuntimeBackend(onnx_path, "tcn")
    with pytest.raises(KeyError, match="'cycles'"):
        ob.run({"silhouettes": np.zeros((1, 12, 101), np.float32)})
    with pytest.raises(ValueError, match=r"batched"):
        ob.run(np.zeros((12, 101), np.float32))
    with pytest.raises(FileNotFoundError, match="nowhere.onnx"):
        B.OnnxRuntimeBackend("nowhere.onnx", "tcn")
    with pytest.raises(ValueError, match="expected \\['silhouettes'\\]"):
        B.OnnxRuntimeBackend(onnx_path, "recognition").load()


def test_resolve_kind_prefers_tensorrt_then_onnxruntime_then_torch():
    all_ok = {"torch": "ok", "onnxruntime": "ok", "tensorrt": "ok"}
    no_trt = {**all_ok, "tensorrt": "no CUDA GPU is visible to torch"}
    assert B.resolve_kind("auto", all_ok) == "tensorrt"
    assert B.resolve_kind("auto", no_trt) == "onnxruntime"
    assert B.resolve_kind("auto", {**no_trt, "onnxruntime": "onnxruntime is not installed"}) == "torch"
    assert B.resolve_kind("torch", no_trt) == "torch"
    with pytest.raises(B.BackendUnavailable, match="no CUDA GPU"):
        B.resolve_kind("tensorrt", no_trt)
    with pytest.raises(B.BackendUnavailable, match="needs the PyTorch model"):
        B.resolve_kind("torch", no_trt, have_module=False)
    with pytest.raises(B.BackendUnavailable, match="no inference backend"):
        B.resolve_kind("auto", {"torch": "x", "onnxruntime": "y", "tensorrt": "z"})
    # Only an ONNX file: auto skips torch.
    assert B.resolve_kind("auto", {**no_trt, "onnxruntime": "missing"}, have_module=True) == "torch"
    with pytest.raises(B.BackendUnavailable):
        B.resolve_kind("auto", {**no_trt, "onnxruntime": "missing"}, have_module=False)


def test_create_backend_from_config(model, onnx_path, tmp_path):
    cfg = from_dict(B.BackendConfig, {"kind": "onnxruntime", "model": "tcn", "onnx": str(onnx_path), "threads": 2})
    backend = B.create_backend(cfg)
    assert isinstance(backend, B.OnnxRuntimeBackend) and backend.describe()["threads"] == 2
    # Without an ONNX file the factory exports the module itself.
    exported = B.create_backend(B.BackendConfig(kind="onnxruntime"), module=model)
    x = parity.example_inputs("tcn", model, 1)
    np.testing.assert_allclose(exported.run(x)["output"], backend.run(x)["output"], rtol=1e-6, atol=1e-6)
    here = B.available_backends()
    expected_auto = "tensorrt" if here["tensorrt"] == "ok" else "onnxruntime"
    assert B.resolve_kind("auto", here) == expected_auto
    with pytest.raises(ConfigError, match="threds"):
        from_dict(B.BackendConfig, {"threds": 2})
    with pytest.raises(ConfigError, match="kind"):
        from_dict(B.BackendConfig, {"kind": "tflite"})
