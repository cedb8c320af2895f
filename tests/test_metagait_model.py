from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metagait_edge.config import ConfigError, from_dict
from metagait_edge.models.gaitgl import GeMHPP, GLConv, SeparateBNNeck, SeparateFC
from metagait_edge.models.meta_modules import (
    MetaHyperNetwork,
    MetaTemporalPooling,
    MetaTripleAttention,
    ParamSpec,
    batched_conv1d,
    batched_conv2d,
    batched_linear,
    gap_statistics,
)
from metagait_edge.models import count_parameters
from metagait_edge.models.metagait import MetaGait, MetaGaitConfig


def tiny_config(**overrides) -> MetaGaitConfig:
    base = dict(channels=(4, 8, 8), input_height=16, input_width=12, local_parts=4, strip_bins=(1, 2, 4),
                num_classes=5, mta_descriptor_channels=4, mta_gate_hidden=4, mhn_hidden=8)
    base.update(overrides)
    return MetaGaitConfig(**base)


def clips(batch=2, frames=6, h=16, w=12):
    return torch.rand(batch, frames, h, w)


# --- per-sample operations -------------------------------------------------------------------------

def test_batched_conv1d_matches_per_sample_conv1d():
    x = torch.randn(3, 5, 11)
    w = torch.randn(3, 5, 3)
    b = torch.randn(3)
    y = batched_conv1d(x, w, b)
    for i in range(3):
        ref = F.conv1d(x[i:i + 1], w[i:i + 1], b[i:i + 1], padding=1)[0, 0]
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=1e-5)


def test_batched_conv2d_matches_per_sample_conv2d():
    x = torch.randn(2, 3, 7, 6)
    w = torch.randn(2, 3, 5, 5)
    b = torch.randn(2)
    y = batched_conv2d(x, w, b)
    assert y.shape == (2, 7, 6)
    for i in range(2):
        ref = F.conv2d(x[i:i + 1], w[i:i + 1], b[i:i + 1], padding=2)[0, 0]
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=1e-5)


def test_batched_linear_matches_per_sample_linear():
    x, w, b = torch.randn(2, 4, 3), torch.randn(2, 5, 3), torch.randn(2, 5)
    y = batched_linear(x, w, b)
    torch.testing.assert_close(y[1], F.linear(x[1], w[1], b[1]))


def test_gap_statistics_are_mean_and_std():
    x = torch.randn(2, 3, 4, 5)
    s = gap_statistics(x)
    torch.testing.assert_close(s[:, :3], x.flatten(2).mean(-1))
    torch.testing.assert_close(s[:, 3:], x.flatten(2).std(-1, unbiased=False), atol=1e-4, rtol=1e-4)


# --- Meta Hyper Network ----------------------------------------------------------------------------

SPECS = [ParamSpec("a.w", (3, 4), 4), ParamSpec("a.b", (3,))]


def test_mhn_generates_sample_specific_weights():
    mhn = MetaHyperNetwork(6, SPECS, hidden=8, dynamic=True)
    stats = torch.randn(2, 6)
    p = mhn(stats)
    assert p["a.w"].shape == (2, 3, 4) and p["a.b"].shape == (2, 3)
    assert not torch.allclose(p["a.w"][0], p["a.w"][1])
    same = mhn(stats[:1].repeat(2, 1))
    torch.testing.assert_close(same["a.w"][0], same["a.w"][1])
    (p["a.w"].sum() + p["a.b"].sum()).backward()
    assert mhn.mlp[0].weight.grad is not None and mhn.mlp[0].weight.grad.abs().sum() > 0


def test_static_mhn_gives_every_sample_the_same_weights():
    mhn = MetaHyperNetwork(6, SPECS, dynamic=False)
    p = mhn(torch.randn(2, 6))
    torch.testing.assert_close(p["a.w"][0], p["a.w"][1])
    assert mhn.mlp is None and mhn.num_generated == 15


# --- MTA / MTP -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dynamic", [True, False])
def test_mta_shapes_gradients_and_attenuation(dynamic):
    mta = MetaTripleAttention(8, descriptor_channels=4, gate_hidden=4, mhn_hidden=8, dynamic=dynamic)
    x = torch.rand(2, 8, 5, 6, 4, requires_grad=True)
    y, gates = mta(x)
    assert y.shape == x.shape and gates.shape == (2, 3, 4)
    assert ((gates > 0) & (gates < 1)).all()
    # Sigmoid attention can only scale features down, never flip or amplify them.
    assert (y.abs() <= x.abs() + 1e-6).all() and (y.abs() > 0).all()
    y.sum().backward()
    assert x.grad is not None
    for name, p in mta.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    y3, _ = mta(torch.rand(1, 8, 9, 6, 4))  # any sequence length
    assert y3.shape == (1, 8, 9, 6, 4)


def test_mta_dims_ablation_changes_generated_parameters():
    full = MetaTripleAttention(8, descriptor_channels=4)
    channel_only = MetaTripleAttention(8, dims=("channel",), descriptor_channels=4)
    assert channel_only.hyper.num_generated < full.hyper.num_generated
    assert channel_only.spatial_proj is None and full.spatial_proj is not None
    with pytest.raises(ValueError, match="odd"):
        MetaTripleAttention(8, kernels=(2,))


def test_mtp_follows_eq7_frame_weights_in_0_1_then_max_plus_weighted_mean():
    mtp = MetaTemporalPooling(8, kernel=3, mhn_hidden=8)
    x = torch.rand(3, 8, 5, 4, 2) + 0.1
    y, w = mtp(x)
    assert y.shape == (3, 8, 4, 2) and w.shape == (3, 5)  # one weight per frame
    assert ((w > 0) & (w < 1)).all()
    # Eq. 7 by hand: the descriptor is pooled over channels and space, the weights multiply the frames.
    ref_w = mtp.frame_weights(x)
    weighted = x * ref_w[:, None, :, None, None]
    ref = weighted.max(2)[0] + weighted.sum(2) / ref_w.sum(1)[:, None, None, None]
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(w, ref_w)
    y.sum().backward()
    assert mtp.hyper.mlp[0].weight.grad is not None


def test_mtp_weight_of_a_frame_follows_its_space_and_channel_pooled_descriptor():
    mtp = MetaTemporalPooling(8, kernel=1, dynamic=False)
    with torch.no_grad():
        mtp.hyper.base["weighting__w"].copy_(torch.tensor([[1.0], [0.0]]))  # weight = sigmoid(frame mean + b)
    x = torch.rand(1, 8, 4, 3, 2)
    x[:, :, 2] += 2.0  # frame 2 is brighter everywhere
    _, w = mtp(x)
    assert int(w[0].argmax()) == 2
    torch.testing.assert_close(w[0], torch.sigmoid(x.mean(dim=(1, 3, 4))[0] + mtp.hyper.base["weighting__b"]))


def test_mtp_weights_depend_on_the_sample_only_through_the_input():
    mtp = MetaTemporalPooling(8, mhn_hidden=8)
    a, b = torch.rand(1, 8, 5, 4, 2), torch.rand(1, 8, 5, 4, 2) * 3
    _, w = mtp(torch.cat([a, b]))
    assert not torch.allclose(w[0], w[1])
    _, wa = mtp(a)
    torch.testing.assert_close(wa[0], w[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("dynamic", [True, False])
def test_temporal_mta_global_stream_sees_every_frame(dynamic):
    # Local kernels of size 1 only: any influence across 7 frames comes from the global stream.
    torch.manual_seed(0)
    mta = MetaTripleAttention(8, dims=("temporal",), kernels=(1,), descriptor_channels=4, dynamic=dynamic)
    x = torch.rand(1, 8, 9, 4, 3)
    far = x.clone()
    far[:, :, 8] += torch.rand(1, 8, 4, 3) * 3  # change only the last frame
    y, _ = mta(x)
    y_far, _ = mta(far)
    # Frame 0's features are unchanged, so only its attention weight can change its output.
    assert not torch.allclose(y[:, :, 0], y_far[:, :, 0], atol=1e-7)


@pytest.mark.parametrize("dynamic", [True, False])
def test_spatial_mta_global_stream_sees_every_pixel(dynamic):
    torch.manual_seed(0)
    mta = MetaTripleAttention(8, dims=("spatial",), kernels=(1, 3), descriptor_channels=4, dynamic=dynamic)
    x = torch.rand(1, 8, 3, 8, 6)
    far = x.clone()
    far[:, :, :, 7, 5] += 3.0  # bottom-right pixel, 7 rows and 5 columns from the top-left one
    y, _ = mta(x)
    y_far, _ = mta(far)
    assert not torch.allclose(y[..., 0, 0], y_far[..., 0, 0], atol=1e-7)


def test_mta_without_global_context_would_stay_local():
    # The same check with the global stream's context switched off (and the stream gates made constant:
    # they read the channel mean of the whole map) leaves a far pixel without influence, so the test
    # above measures the global stream's receptive field.
    mta = MetaTripleAttention(8, dims=("spatial",), kernels=(1,), descriptor_channels=4, dynamic=False)
    with torch.no_grad():
        mta.hyper.base["spatial__global__w_ctx"].zero_()
        mta.hyper.base["spatial__gate__w1"].zero_()
    x = torch.rand(1, 8, 3, 8, 6)
    far = x.clone()
    far[:, :, :, 7, 5] += 3.0
    torch.testing.assert_close(mta(x)[0][..., 0, 0], mta(far)[0][..., 0, 0])


# --- backbone pieces -------------------------------------------------------------------------------

def test_glconv_local_branch_does_not_cross_part_borders():
    gl = GLConv(1, 1, parts=2)
    with torch.no_grad():
        gl.global_conv.conv.weight.zero_()
        gl.local_conv.conv.weight.fill_(1.0)
    x = torch.zeros(1, 1, 3, 4, 3)
    x[:, :, :, 0] = 1.0  # only the top row of the top part is lit
    y = gl(x)
    assert y[:, :, :, :2].abs().sum() > 0
    assert y[:, :, :, 2:].abs().sum() == 0  # the bottom part never sees it
    concat = GLConv(1, 2, parts=2, concat=True)(x)
    assert concat.shape == (1, 2, 3, 8, 3)


def test_hpp_separate_fc_and_bnneck_shapes():
    hpp = GeMHPP((1, 2, 4))
    strips = hpp(torch.rand(2, 6, 8, 3))
    assert strips.shape == (2, 6, 7)
    # The coarsest bin is the GeM of the whole map.
    p = hpp.p.detach()
    x = torch.rand(2, 6, 8, 3)
    ref = x.clamp(min=1e-6).pow(p).mean(dim=(2, 3)).pow(1 / p)
    torch.testing.assert_close(hpp(x)[:, :, 0], ref)
    fc = SeparateFC(7, 6, 5)
    emb = fc(strips)
    assert emb.shape == (2, 7, 5)
    torch.testing.assert_close(emb[:, 3], strips[:, :, 3] @ fc.weight[3])
    assert SeparateBNNeck(7, 5)(emb).shape == (2, 7, 5)
    with pytest.raises(ValueError, match="not divisible into 4 strips"):
        hpp(torch.rand(1, 6, 6, 3))


# --- whole model -----------------------------------------------------------------------------------

def test_forward_at_128x88():
    cfg = MetaGaitConfig.large_input(channels=(4, 8, 8), local_parts=8, num_classes=3, mta_descriptor_channels=4,
                                     mta_gate_hidden=4, mhn_hidden=4)
    model = MetaGait(cfg)
    out = model(torch.rand(2, 3, 128, 88))
    assert out["embeddings"].shape == (2, 128, 8) and out["logits"].shape == (2, 128, 3)
    with pytest.raises(ValueError, match="128x88"):
        model(torch.rand(1, 3, 64, 44))


def test_model_outputs_and_inference_mode():
    model = MetaGait(tiny_config())
    out = model(clips())
    assert out["embeddings"].shape == (2, 7, 8)
    assert out["bn_embeddings"].shape == (2, 7, 8)
    assert out["logits"].shape == (2, 7, 5)
    assert out["mtp_weights"].shape == (2, 2)  # one weight per frame after LTA: 6 frames / 3
    assert out["mta_gates"].shape == (2, 3, 3, 4)
    model.eval()
    full = model(clips(1))
    model.set_mode("inference")
    only = model(clips(1))
    assert set(only) == {"embeddings"}
    with pytest.raises(ValueError, match="unknown output mode"):
        model.set_mode("predict")
    assert full["embeddings"].shape == only["embeddings"].shape


def test_every_parameter_gets_a_gradient():
    model = MetaGait(tiny_config())
    out = model(clips(4))
    loss = out["logits"].logsumexp(-1).mean() + out["embeddings"].pow(2).mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, zero


def test_eval_batch_results_do_not_mix_samples_and_accept_any_length():
    model = MetaGait(tiny_config()).eval()
    x = clips(3, frames=9)
    with torch.no_grad():
        batched = model(x)["embeddings"]
        single = model(x[1:2])["embeddings"]
        longer = model(clips(1, frames=31))["embeddings"]
    torch.testing.assert_close(batched[1:2], single, atol=1e-5, rtol=1e-4)
    assert longer.shape == (1, 7, 8)


def test_model_mhn_makes_generated_weights_depend_on_the_sample():
    captured = {}

    def grab(name):
        def hook(module, inputs, output):
            captured[name] = output
        return hook

    for variant in ("dynamic", "static"):
        model = MetaGait(tiny_config(mta=variant, mtp=variant)).eval()
        model.mta["gl1"].hyper.register_forward_hook(grab(f"mta-{variant}"))
        model.mtp.hyper.register_forward_hook(grab(f"mtp-{variant}"))
        x = torch.stack([torch.rand(6, 16, 12), torch.rand(6, 16, 12).round()])
        with torch.no_grad():
            model(x)
    for key in ("channel.global.w1", "spatial.local5.w", "temporal.gate.w2", "temporal.global.score",
                "spatial.global.w_ctx"):
        dyn = captured["mta-dynamic"][key]
        assert not torch.allclose(dyn[0], dyn[1]), key
        torch.testing.assert_close(captured["mta-static"][key][0], captured["mta-static"][key][1])
    assert not torch.allclose(captured["mtp-dynamic"]["weighting.w"][0], captured["mtp-dynamic"]["weighting.w"][1])
    torch.testing.assert_close(captured["mtp-static"]["weighting.w"][0], captured["mtp-static"]["weighting.w"][1])


def test_ablation_switches_change_the_graph():
    models = {
        (mta, mtp): MetaGait(tiny_config(mta=mta, mtp=mtp))
        for mta in ("dynamic", "static", "none") for mtp in ("dynamic", "static", "max")
    }
    counts = {k: count_parameters(m) for k, m in models.items()}
    assert counts[("dynamic", "dynamic")] > counts[("static", "dynamic")] > counts[("none", "dynamic")]
    assert counts[("none", "dynamic")] > counts[("none", "static")] > counts[("none", "max")]
    baseline = models[("none", "max")]
    assert baseline.mtp is None and len(baseline.mta) == 0
    out = baseline(clips())
    assert "mtp_weights" not in out and "mta_gates" not in out
    one_stage = MetaGait(tiny_config(mta_stages=("gl2",)))
    assert list(one_stage.mta) == ["gl2"]
    assert one_stage(clips())["mta_gates"].shape == (2, 1, 3, 4)
    no_cls = MetaGait(tiny_config(num_classes=0))
    assert no_cls.classifier is None and "logits" not in no_cls(clips())
    sum_last = MetaGait(tiny_config(last_block_concat=False, strip_bins=(2,)))
    assert sum_last(clips())["embeddings"].shape == (2, 2, 8)


def test_presets_and_config_errors():
    assert MetaGaitConfig.ou_mvlp().channels == tuple(2 * c for c in MetaGaitConfig.casia_b().channels)
    assert MetaGaitConfig.cpu().channels == (16, 32, 64)
    cfg = from_dict(MetaGaitConfig, {"channels": [4, 8, 8], "mta": "static", "mta_stages": ["gl0"]})
    assert cfg.channels == (4, 8, 8) and cfg.mta_stages == ("gl0",)
    with pytest.raises(ConfigError, match="mta_stagez"):
        from_dict(MetaGaitConfig, {"mta_stagez": ["gl0"]})
    with pytest.raises(ConfigError, match="mta_stages"):
        from_dict(MetaGaitConfig, {"mta_stages": ["gl9"]})
    with pytest.raises(ConfigError, match="mtp"):
        from_dict(MetaGaitConfig, {"mtp": "avg"})
    with pytest.raises(ConfigError, match="strip_bins"):
        from_dict(MetaGaitConfig, {"strip_bins": [5]})


def test_bad_input_is_named():
    model = MetaGait(tiny_config())
    with pytest.raises(TypeError, match="dtype torch.uint8"):
        model(torch.zeros(1, 6, 16, 12, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[B, T, H, W\], got shape \(6, 16, 12\)"):
        model(torch.zeros(6, 16, 12))
    with pytest.raises(ValueError, match="batch is empty"):
        model(torch.zeros(0, 6, 16, 12))
    with pytest.raises(ValueError, match="2 frame"):
        model(torch.zeros(1, 2, 16, 12))
    with pytest.raises(ValueError, match="64x44|16x12"):
        model(torch.zeros(1, 6, 64, 44))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model(np.zeros((1, 6, 16, 12), dtype=np.float32))


def _separable_batch(num_classes=4, per_class=2, frames=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    templates = (torch.rand(num_classes, 1, 16, 12, generator=g) > 0.5).float()
    x = templates.repeat_interleave(per_class, 0).expand(-1, frames, -1, -1).clone()
    x = (x + 0.2 * torch.rand(x.shape, generator=g)).clamp(0, 1)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return x, labels


@pytest.mark.slow  # ~2 s alone, more on a busy CI machine
def test_tiny_training_run_lowers_the_loss():
    from metagait_edge.recognition.losses import LossAggregator

    model = MetaGait(tiny_config(num_classes=4))
    criterion = LossAggregator()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    x, labels = _separable_batch()
    losses = []
    for _ in range(15):
        total, logs = criterion(model(x), labels)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(logs["total_loss"])
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


@pytest.mark.slow
def test_onnx_export_dynamic_batch_matches_torch(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = MetaGait(tiny_config()).eval().set_mode("inference")
    path = tmp_path / "metagait.onnx"
    torch.onnx.export(
        model, (clips(2),), str(path), dynamo=False, opset_version=17,
        input_names=["silhouettes"], output_names=["embeddings"],
        dynamic_axes={"silhouettes": {0: "batch", 1: "frames"}, "embeddings": {0: "batch"}},
    )
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, frames in ((1, 6), (3, 6), (3, 12)):
        x = clips(batch, frames)
        with torch.no_grad():
            ref = model(x)["embeddings"].numpy()
        (got,) = session.run(None, {"silhouettes": x.numpy()})
        assert got.shape == ref.shape == (batch, 7, 8)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
