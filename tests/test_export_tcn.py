"""ONNX export of the personalization network: folded, refittable, weight-independent graph, parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from metagait_edge.deploy import export as E, golden, onnx_graph, parity  # noqa: E402
from metagait_edge.models.tcn import TCN, TCNConfig, fold_weight_norm_params  # noqa: E402
from metagait_edge.personalization.model import CycleModel, CycleModelConfig  # noqa: E402


def small_cycle_model(seed: int = 0) -> CycleModel:
    torch.manual_seed(seed)
    model = CycleModel(CycleModelConfig(channels=4, tcn=TCNConfig(hidden_channels=12, levels=5, film=True)))
    # The head starts at zero (support-mean baseline); give it values so the TCN path shows in outputs.
    with torch.no_grad():
        model.tcn.head.weight.normal_(0, 0.1)
    return model.eval()


def fast_weights(model, scale=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {n: p.detach() + scale * torch.randn(p.shape, generator=g) for n, p in model.named_parameters()}


def ort_run(path_or_bytes, x):
    session = ort.InferenceSession(path_or_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {E.TCN_INPUT: x})[0]


def test_export_has_stable_names_and_only_trt_ops(tmp_path):
    model = small_cycle_model()
    report = E.export_tcn(model, tmp_path / "tcn.onnx")
    proto = onnx.load(str(report.path))
    inits = {i.name for i in proto.graph.initializer}
    expected = set(fold_weight_norm_params({n: p for n, p in model.named_parameters()}))
    assert "tcn.blocks.0.conv1.conv.weight" in expected
    # Every weight is a graph initializer under its state-dict name, nothing parametrised, nothing else.
    assert expected <= inits
    assert not any("parametrizations" in n for n in inits)
    assert set(report.refittable) == expected == set(onnx_graph.refittable_names(proto))
    assert set(report.ops) <= onnx_graph.TRT10_ONNX_OPS
    assert report.inputs == {"cycles": ["batch", 12, 101]} and report.outputs == {"output": ["batch", 4, 101]}
    assert onnx_graph.model_kind(proto) == "tcn"
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    shapes = onnx_graph.refittable_shapes(proto)
    assert shapes["tcn.blocks.0.film.scale"] == (1, 12, 1)
    assert shapes["tcn.blocks.0.conv1.conv.weight"] == (12, 12, 3)


def test_base_and_adapted_exports_differ_only_in_initializer_values(tmp_path):
    model = small_cycle_model()
    # Fresh FiLM scales are all ones: equal-valued initializers the exporter would merge.
    assert torch.equal(model.tcn.blocks[0].film.scale, model.tcn.blocks[1].film.scale)
    base = E.export_tcn(model, tmp_path / "base.onnx")
    adapted = E.export_tcn(model, tmp_path / "adapted.onnx", fast_weights(model))
    assert onnx_graph.graph_fingerprint(base.path) == onnx_graph.graph_fingerprint(adapted.path)
    a, b = onnx.load(str(base.path)), onnx.load(str(adapted.path))
    assert [n.SerializeToString() for n in a.graph.node] == [n.SerializeToString() for n in b.graph.node]
    assert [i.name for i in a.graph.initializer] == [i.name for i in b.graph.initializer]
    wa, wb = onnx_graph.initializer_arrays(a), onnx_graph.initializer_arrays(b)
    changed = {n for n in wa if not np.array_equal(wa[n], wb[n])}
    assert changed == set(base.refittable)
    assert base.sha256 != adapted.sha256
    # ... and a fingerprint does see a structural change.
    other = E.export_tcn(small_cycle_model().train(False), tmp_path / "other.onnx", length=51)
    assert onnx_graph.graph_fingerprint(other.path) != onnx_graph.graph_fingerprint(base.path)


def test_onnxruntime_matches_torch_on_random_and_cycle_inputs(tmp_path):
    model = small_cycle_model()
    params = fast_weights(model)
    path = E.export_tcn(model, tmp_path / "adapted.onnx", params).path
    for realistic, batch in ((False, 1), (True, 5)):
        x = parity.example_inputs("tcn", model, batch, realistic=realistic, seed=batch)
        got = ort_run(str(path), x)
        want = parity.torch_reference("tcn", model, x, params)
        assert got.shape == (batch, 4, 101)
        np.testing.assert_allclose(got, want, rtol=parity.FP32_RTOL, atol=parity.FP32_ATOL["tcn"])
    # The adapted weights matter: the base model gives a visibly different answer.
    assert np.abs(parity.torch_reference("tcn", model, x) - want).max() > 1e-2


def test_with_weights_of_base_equals_adapted_export(tmp_path):
    model = small_cycle_model()
    params = fast_weights(model)
    base = E.export_tcn(model, tmp_path / "base.onnx")
    swapped = onnx_graph.with_weights(base.path, onnx_graph.onnx_weights(params, onnx_graph.refittable_shapes(base.path)))
    x = parity.example_inputs("tcn", model, 2)
    np.testing.assert_allclose(ort_run(swapped.SerializeToString(), x), parity.torch_reference("tcn", model, x, params),
                               rtol=parity.FP32_RTOL, atol=parity.FP32_ATOL["tcn"])


def test_onnx_weights_errors_name_the_weight():
    model = small_cycle_model()
    shapes = {n: tuple(p.shape) for n, p in E.deploy_tcn_module(model).named_parameters()}
    params = {n: p.detach() for n, p in model.named_parameters()}
    g_name = "tcn.blocks.0.conv1.conv.parametrizations.weight.original0"
    with pytest.raises(KeyError, match="original1"):
        onnx_graph.onnx_weights({g_name: params[g_name]}, shapes)
    with pytest.raises(KeyError, match="tcn.nope"):
        onnx_graph.onnx_weights({"tcn.nope": np.zeros(3)}, shapes)
    with pytest.raises(ValueError, match="tcn.head.bias"):
        onnx_graph.onnx_weights({"tcn.head.bias": np.zeros(5)}, shapes)
    ok = onnx_graph.onnx_weights({"tcn.blocks.2.film.shift": np.arange(12.0)}, shapes)
    assert ok["tcn.blocks.2.film.shift"].shape == (1, 12, 1) and ok["tcn.blocks.2.film.shift"].dtype == np.float32


def test_check_onnx_rejects_ops_outside_the_allow_list_and_doubles(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Hardmax", ["x"], ["y"], name="hm")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(onnx_graph.ExportError, match=r"hm \(Hardmax\)"):
        onnx_graph.check_onnx(model)
    assert onnx_graph.check_onnx(model, allowed_ops={"Hardmax"}) == ["Hardmax"]
    xd = helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 3])
    yd = helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [xd], [yd])
    with pytest.raises(onnx_graph.ExportError, match="DOUBLE"):
        onnx_graph.check_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    old = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                            opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(onnx_graph.ExportError, match="opset 13"):
        onnx_graph.check_onnx(old)
    with pytest.raises(ValueError, match="opset 13 is too old"):
        E.export_tcn(small_cycle_model(), tmp_path / "x.onnx", opset=13)


def test_bare_tcn_exports_and_mask_input_tcn_is_refused(tmp_path):
    tcn = TCN(TCNConfig(in_channels=6, out_channels=6, hidden_channels=8, levels=5)).eval()
    report = E.export_tcn(tcn, tmp_path / "bare.onnx")
    x = np.random.default_rng(0).standard_normal((2, 6, 101)).astype(np.float32)
    with torch.no_grad():
        want = tcn(torch.from_numpy(x))["output"].numpy()
    np.testing.assert_allclose(ort_run(str(report.path), x), want, rtol=1e-4, atol=1e-4)
    assert "blocks.0.conv1.conv.weight" in report.refittable
    masked = TCN(TCNConfig(in_channels=6, out_channels=6, hidden_channels=8, mask_input=True))
    with pytest.raises(onnx_graph.ExportError, match="mask_input"):
        E.export_tcn(masked, tmp_path / "masked.onnx")


def test_golden_round_trip_and_compare(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((2, 12, 101), dtype=np.float32), rng.random((2, 4, 101), dtype=np.float32)
    path = golden.save_golden(tmp_path, "tcn", {"cycles": x}, {"output": y}, atol=1e-4, rtol=1e-4)
    g = golden.load_golden(path)
    np.testing.assert_array_equal(g.inputs["cycles"], x)
    assert g.atol == 1e-4 and set(g.outputs) == {"output"}
    assert golden.compare({"output": y + 5e-5}, g.outputs, g.atol, g.rtol)["output"] == pytest.approx(5e-5, rel=1e-2)
    with pytest.raises(AssertionError, match="'output'.*beyond"):
        golden.compare({"output": y + 1e-2}, g.outputs, g.atol, g.rtol)
    with pytest.raises(AssertionError, match="shape"):
        golden.compare({"output": y[:1]}, g.outputs, g.atol, g.rtol)
    np.savez(tmp_path / "bad.npz", a=x)
    with pytest.raises(ValueError, match="bad.npz: not a golden file"):
        golden.load_golden(tmp_path / "bad.npz")
