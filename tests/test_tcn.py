from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from metagait_edge.config import ConfigError
from metagait_edge.models import (
    TCN,
    TCNConfig,
    build_tcn,
    count_parameters,
    fold_weight_norm,
    fold_weight_norm_params,
    load_folded_params,
    stable_name,
)

SMALL = dict(in_channels=3, out_channels=2, hidden_channels=8, levels=3, kernel_size=3, min_receptive_field=0)


def _input_influence(model, T, t_out):
    """Indices of input samples with a nonzero gradient on output sample ``t_out``."""
    x = torch.randn(1, model.config.in_channels, T, dtype=torch.float64, requires_grad=True)
    model(x)["output"][0, :, t_out].sum().backward()
    return np.flatnonzero(x.grad.abs().sum(1)[0].numpy() > 0)


def test_default_model_size_and_receptive_field_covers_a_cycle():
    model = TCN()
    assert 50_000 <= count_parameters(model) <= 150_000
    assert model.receptive_field >= 101
    assert TCNConfig(kernel_size=3, levels=5, dilation_base=2).receptive_field == 1 + 2 * 2 * (1 + 2 + 4 + 8 + 16)


def test_causal_receptive_field_is_exact_and_left_only():
    model = TCN(TCNConfig(causal=True, **SMALL)).double()
    rf = model.receptive_field
    T = 3 * rf
    idx = _input_influence(model, T, T - 1)
    assert idx.min() == T - rf and idx.max() == T - 1 and len(idx) == rf
    idx_mid = _input_influence(model, T, T // 2)
    assert idx_mid.max() == T // 2  # never the future


def test_non_causal_zero_padded_receptive_field_is_centred():
    model = TCN(TCNConfig(causal=False, padding="zeros", **SMALL)).double()
    rf = model.receptive_field
    T, c = 3 * rf, 3 * rf // 2
    idx = _input_influence(model, T, c)
    assert len(idx) == rf and idx.min() == c - (rf - 1) // 2 and idx.max() == c + (rf - 1) // 2


def test_whole_cycle_circular_model_sees_the_whole_cycle_and_is_shift_equivariant():
    model = TCN(TCNConfig(in_channels=3, out_channels=2)).double()
    assert model.config.resolved_padding == "circular"
    idx = _input_influence(model, 101, 0)
    assert len(idx) == 101  # sample 0 depends on every sample of the cycle, across the wrap-around
    x = torch.randn(2, 3, 101, dtype=torch.float64)
    y = model(x)["output"]
    y_rolled = model(torch.roll(x, 17, dims=-1))["output"]
    assert torch.allclose(torch.roll(y, 17, dims=-1), y_rolled, atol=1e-10)


def test_circular_padding_longer_than_sequence():
    model = TCN(TCNConfig(**SMALL)).double()  # dilation 4 -> pad 4 on each side, longer than T=3
    x = torch.randn(1, 3, 3, dtype=torch.float64)
    y = model(x)["output"]
    assert y.shape == (1, 2, 3)
    assert torch.allclose(torch.roll(y, 1, -1), model(torch.roll(x, 1, -1))["output"], atol=1e-10)


def test_causal_model_streams():
    model = TCN(TCNConfig(causal=True, **SMALL)).eval()
    x = torch.randn(2, 3, 40)
    full = model(x)["output"]
    for t in (1, 7, 25):
        assert torch.allclose(model(x[..., :t])["output"], full[..., :t], atol=1e-6)


def test_mask_input_hides_masked_values_and_informs_the_model():
    model = TCN(TCNConfig(mask_input=True, **SMALL)).eval()
    x = torch.randn(2, 3, 20)
    mask = torch.ones(2, 3)
    mask[0, 1] = 0
    y = model(x, mask)["output"]
    x2 = x.clone()
    x2[0, 1] = float("nan")
    y2 = model(x2, mask)["output"]
    assert torch.isfinite(y2).all() and torch.allclose(y, y2)
    # the same zeroed input without the mask flag is a different input
    x0 = x.clone()
    x0[0, 1] = 0
    assert not torch.allclose(model(x0, torch.ones(2, 3))["output"][0], y[0])
    # per-sample masks work too
    m3 = torch.ones(2, 3, 20)
    m3[1, 2, 5:9] = 0
    assert model(x, m3)["output"].shape == (2, 2, 20)
    with pytest.raises(ValueError, match="no mask"):
        model(x)
    with pytest.raises(ValueError, match="mask must be"):
        model(x, torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"\[batch, 3, time\]"):
        model(torch.randn(2, 5, 20), mask)


def test_config_validation():
    with pytest.raises(ValueError, match="receptive field"):
        TCNConfig(levels=2)
    with pytest.raises(ValueError, match="circular"):
        TCNConfig(causal=True, padding="circular")
    with pytest.raises(ValueError, match="residual_output"):
        TCNConfig(in_channels=3, out_channels=2, residual_output=True)
    with pytest.raises(ConfigError, match="hiden_channels"):
        build_tcn({"hiden_channels": 3})
    assert build_tcn({"hidden_channels": 16}).config.hidden_channels == 16


def test_residual_output_adds_the_input():
    cfg = dataclasses.replace(TCNConfig(**SMALL), in_channels=2, residual_output=True)
    model = TCN(cfg)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    x = torch.randn(1, 2, 10)
    assert torch.allclose(model(x)["output"], x)


def test_adaptation_groups():
    model = TCN(TCNConfig(**SMALL))
    all_names = [n for n, _ in model.named_parameters()]
    assert model.adaptation_parameter_names("all") == all_names
    assert model.adaptation_parameter_names("head") == ["head.weight", "head.bias"]
    film = model.adaptation_parameter_names("film")
    assert len(film) == 2 * SMALL["levels"] and all(".film." in n for n in film)
    assert all(n.endswith(".bias") for n in model.adaptation_parameter_names("bias"))
    with pytest.raises(ValueError, match="unknown adaptation kind"):
        model.adaptation_parameter_names("everything")


@pytest.mark.parametrize("causal", [False, True])
def test_fold_weight_norm_keeps_function_and_gives_stable_names(causal):
    model = TCN(TCNConfig(causal=causal, mask_input=True, **SMALL)).eval()
    x, mask = torch.randn(2, 3, 30), torch.ones(2, 3)
    folded = fold_weight_norm(model)
    assert any("parametrizations" in n for n in model.state_dict())  # original untouched
    names = list(folded.state_dict())
    assert not any("parametrizations" in n for n in names)
    assert "blocks.0.conv1.conv.weight" in names and "input_proj.weight" in names
    assert sorted(names) == sorted({stable_name(n) for n, _ in model.named_parameters()})
    assert torch.allclose(folded(x, mask)["output"], model(x, mask)["output"], atol=1e-6)
    # fast weights (e.g. after calibration) fold with the same names and the same function
    params = {n: p.detach() * 1.1 for n, p in model.named_parameters()}
    from torch.func import functional_call

    expect = functional_call(model, params, (x, mask))["output"]
    assert sorted(fold_weight_norm_params(params)) == sorted(names)
    assert torch.allclose(load_folded_params(model, params)(x, mask)["output"], expect, atol=1e-5)


def _export_and_compare(tmp_path, causal, dynamo):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = fold_weight_norm(TCN(TCNConfig(causal=causal, mask_input=True, **SMALL))).eval()
    x, mask = torch.randn(1, 3, 101), torch.ones(1, 3)
    path = tmp_path / "tcn.onnx"
    torch.onnx.export(model, (x, mask), str(path), opset_version=17, input_names=["x", "mask"],
                      output_names=["output"], dynamo=dynamo)
    proto = onnx.load(str(path))
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {17}
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x.numpy(), "mask": mask.numpy()}
    )[0]
    assert np.allclose(got, model(x, mask)["output"].detach().numpy(), atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_folded_model_exports_to_onnx_opset17(tmp_path):
    _export_and_compare(tmp_path, causal=False, dynamo=False)


@pytest.mark.slow
@pytest.mark.parametrize("causal", [False, True])
def test_folded_model_exports_with_dynamo_exporter_at_opset17(tmp_path, causal):
    _export_and_compare(tmp_path, causal=causal, dynamo=True)
