"""MetaGait's meta-learned calibration: Meta Hyper Network, Meta Triple Attention, Meta Temporal Pooling.

Dou et al., "MetaGait: Learning to Learn an Omni Sample Adaptive Representation for Gait Recognition",
ECCV 2022. The idea: the *calibration network* of an attention / pooling block does not have fixed weights;
a small Meta Hyper Network (MHN) reads global statistics of the current sample's features and emits that
sample's calibration weights. Everything here keeps one code path for the dynamic (MHN) and static
(ordinary ``nn.Parameter``) variants, so the ablation only changes where the weights come from.

Per-sample weights are applied with ``einsum`` over a batch of weight tensors, never with a
``groups=batch`` convolution, so the graph exports to ONNX with a dynamic batch axis. Per-sample
convolutions first extract neighbourhoods with a *fixed* one-hot ("identity") convolution (an im2col that
ONNX understands) and then contract them with the sample's kernel by ``einsum``.

Design choices that go beyond the paper's text (the paper gives no layer-exact recipe):

* The generated weights are ``base + delta(sample)``: ``base`` is an ordinary parameter (exactly the static
  variant) and the MHN's output is a per-sample offset. The MHN's output layer starts small, so training
  starts near the static model, but not at zero, so weights depend on the sample from the first step.
* MHN input is the per-channel mean and standard deviation over (T, H, W) of the block's input features.
* MTA, multi-scale streams from local to global (Eq. 4, "receptive field adaptively ranging from 1 to
  global"). Each dimension has local streams (kernels 1, 3, 5 over neighbouring positions) and one *global*
  stream whose receptive field is the whole dimension. For the temporal and spatial dimensions the sequence
  length and the feature map size vary, so a fully connected layer over all positions is impossible; the
  global stream is a global-context block instead: a per-sample score on every position's (projected)
  descriptor, a softmax over *all* frames (temporal) or *all* pixels (spatial), the descriptors pooled
  with those weights into one context vector, and an MLP on [position descriptor, context] per position.
  A change of any frame (pixel) therefore changes the global stream of every other frame (pixel). The
  channel attention's global stream is the squeeze-excitation MLP over the whole channel vector and its
  local streams are 1-D convolutions along the channel axis. All stream and gate weights are generated.
* The three attentions are computed in parallel from the same input and multiplied onto the features.
* MTP (Eq. 7): the temporal descriptor of frame t is the feature map pooled over channels *and* space
  (mean and max, so a frame gets two numbers); a per-sample 1-D convolution over time (kernel
  ``mtp_kernel``, weights from the MHN) and a sigmoid give one weight in (0, 1) per frame; the weighted
  features are aggregated by temporal max plus weighted mean: ``max_t(w_t X_t) + sum_t w_t X_t / sum_t w_t``.
  The earlier version (channel descriptor -> softmax over {max, mean, GeM}) is gone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_DIMS = ("spatial", "channel", "temporal")
# Initial bias of the global streams (and, minus one, of the gates): attention starts at about
# sigmoid(sigmoid(2) * 3) = 0.93 instead of 0.5, so three stacked attentions on three stages do not shrink
# the features by 0.5^9 before training has begun.
OPEN_BIAS = 3.0


@dataclass(frozen=True)
class ParamSpec:
    """One generated parameter: ``shape`` per sample; ``fan_in`` > 0 is a weight, 0 is a bias (zeros)."""

    name: str
    shape: tuple[int, ...]
    fan_in: int = 0
    bias_init: float = 0.0


def gap_statistics(x: torch.Tensor) -> torch.Tensor:
    """[B, C, ...] -> [B, 2C]: per-channel mean and standard deviation over all remaining axes."""
    flat = x.flatten(2)
    mean = flat.mean(-1)
    # E[x^2] - E[x]^2 rather than torch.std: exports to plain ONNX ops and never divides by (n - 1) = 0.
    var = (flat * flat).mean(-1) - mean * mean
    std = torch.sqrt(var.clamp(min=0.0) + 1e-6)
    return torch.cat([mean, std], dim=1)


class MetaHyperNetwork(nn.Module):
    """GAP statistics -> MLP (LeakyReLU) -> per-sample parameters of a calibration network.

    ``forward(stats [B, S])`` returns ``{name: [B, *shape]}``. With ``dynamic=False`` there is no MLP and
    every sample gets the same (learned) ``base`` parameters: the static ablation.
    """

    def __init__(
        self,
        stats_dim: int,
        specs: Sequence[ParamSpec],
        hidden: int = 16,
        dynamic: bool = True,
        delta_scale: float = 0.1,
    ) -> None:
        super().__init__()
        if not specs:
            raise ValueError("MetaHyperNetwork needs at least one ParamSpec")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate generated parameter names: {names}")
        self.specs = tuple(specs)
        self.dynamic = dynamic
        self.base = nn.ParameterDict()
        for spec in self.specs:
            if spec.fan_in > 0:
                bound = 1.0 / math.sqrt(spec.fan_in)
                init = torch.empty(spec.shape).uniform_(-bound, bound)
            else:
                init = torch.full(spec.shape, float(spec.bias_init))
            # ParameterDict keys may not contain dots.
            self.base[self._key(spec.name)] = nn.Parameter(init)
        self.numels = [int(math.prod(s.shape)) for s in self.specs]
        if dynamic:
            out = nn.Linear(hidden, sum(self.numels))
            with torch.no_grad():
                out.weight.mul_(delta_scale)
                out.bias.zero_()
            self.mlp = nn.Sequential(nn.Linear(stats_dim, hidden), nn.LeakyReLU(0.1), out)
        else:
            self.mlp = None

    @staticmethod
    def _key(name: str) -> str:
        return name.replace(".", "__")

    @property
    def num_generated(self) -> int:
        """Number of calibration parameters produced per sample."""
        return sum(self.numels)

    def forward(self, stats: torch.Tensor) -> dict[str, torch.Tensor]:
        params: dict[str, torch.Tensor] = {}
        if self.mlp is None:
            batch = stats.shape[0]
            for spec in self.specs:
                base = self.base[self._key(spec.name)]
                params[spec.name] = base.unsqueeze(0).expand(batch, *spec.shape)
            return params
        flat = self.mlp(stats)
        for spec, chunk in zip(self.specs, torch.split(flat, self.numels, dim=1)):
            base = self.base[self._key(spec.name)]
            params[spec.name] = base.unsqueeze(0) + chunk.reshape(-1, *spec.shape)
        return params


# ----------------------------------------------------------------------------------------------------
# Per-sample (batched-weight) operations, ONNX-exportable with a dynamic batch.


def batched_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [B, N, I], weight [B, O, I], bias [B, O] -> [B, N, O]."""
    y = torch.einsum("bni,boi->bno", x, weight)
    if bias is not None:
        y = y + bias.unsqueeze(1)
    return y


def batched_mlp(x: torch.Tensor, params: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """Two-layer MLP (LeakyReLU) with per-sample weights ``prefix.w1/b1/w2/b2``; x [B, N, I] -> [B, N, O]."""
    # Leaky: the calibration MLPs have very few hidden units, and a dead ReLU would freeze a whole stream.
    h = F.leaky_relu(batched_linear(x, params[f"{prefix}.w1"], params[f"{prefix}.b1"]), 0.1)
    return batched_linear(h, params[f"{prefix}.w2"], params[f"{prefix}.b2"])


def identity_kernel_1d(k: int) -> torch.Tensor:
    """[k, 1, k] one-hot kernels: convolving with them extracts the k neighbours of every position."""
    return torch.eye(k).reshape(k, 1, k)


def identity_kernel_2d(k: int) -> torch.Tensor:
    """[k*k, 1, k, k] one-hot kernels extracting the k x k neighbourhood of every pixel."""
    return torch.eye(k * k).reshape(k * k, 1, k, k)


def batched_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   eye: torch.Tensor | None = None) -> torch.Tensor:
    """Same-padded 1-D convolution to one output channel with per-sample kernels.

    x [B, C, L], weight [B, C, k] (k odd), bias [B] -> [B, L]. ``eye`` is ``identity_kernel_1d(k)``; modules
    pass it as a buffer so that ONNX export sees a constant kernel of known shape.
    """
    c, k = weight.shape[1], weight.shape[2]
    length = x.shape[-1]
    if eye is None:
        eye = identity_kernel_1d(k)
    # im2col by a fixed one-hot convolution: patches[b, c, j, l] = x_padded[b, c, l + j].
    patches = F.conv1d(x.reshape(-1, 1, length), eye.to(x.dtype), padding=k // 2)
    patches = patches.reshape(-1, c, k, length)
    y = torch.einsum("bcjl,bcj->bl", patches, weight)
    if bias is not None:
        y = y + bias.reshape(-1, 1)
    return y


def batched_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   eye: torch.Tensor | None = None) -> torch.Tensor:
    """Same-padded 2-D convolution to one output channel with per-sample kernels.

    x [B, C, H, W], weight [B, C, k, k] (k odd), bias [B] -> [B, H, W]; ``eye`` is ``identity_kernel_2d(k)``.
    """
    c, k = weight.shape[1], weight.shape[2]
    h, w = x.shape[-2], x.shape[-1]
    if eye is None:
        eye = identity_kernel_2d(k)
    patches = F.conv2d(x.reshape(-1, 1, h, w), eye.to(x.dtype), padding=k // 2)
    patches = patches.reshape(-1, c, k * k, h, w)
    y = torch.einsum("bcjhw,bcj->bhw", patches, weight.reshape(-1, c, k * k))
    if bias is not None:
        y = y + bias.reshape(-1, 1, 1)
    return y


# ----------------------------------------------------------------------------------------------------


def _mlp_specs(prefix: str, d_in: int, d_hidden: int, d_out: int, out_bias: float = 0.0) -> list[ParamSpec]:
    return [
        ParamSpec(f"{prefix}.w1", (d_hidden, d_in), d_in),
        ParamSpec(f"{prefix}.b1", (d_hidden,)),
        ParamSpec(f"{prefix}.w2", (d_out, d_hidden), d_hidden),
        ParamSpec(f"{prefix}.b2", (d_out,), 0, out_bias),
    ]


def _global_context_specs(prefix: str, d: int, d_hidden: int) -> list[ParamSpec]:
    """Generated weights of :func:`global_context_logits` on ``d``-channel position descriptors."""
    return [
        ParamSpec(f"{prefix}.score", (d,), d),
        ParamSpec(f"{prefix}.w_pos", (d_hidden, d), 2 * d),
        ParamSpec(f"{prefix}.w_ctx", (d_hidden, d), 2 * d),
        ParamSpec(f"{prefix}.b1", (d_hidden,)),
        ParamSpec(f"{prefix}.w2", (1, d_hidden), d_hidden),
        ParamSpec(f"{prefix}.b2", (1,), 0, OPEN_BIAS),
    ]


def global_context_logits(desc: torch.Tensor, params: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    """Attention logits [B, N] of N positions whose receptive field is all N positions.

    desc [B, N, d]: softmax over the N positions of a per-sample score pools the descriptors into one
    context vector; each position's logit is an MLP of [its descriptor, the context].
    """
    score = torch.einsum("bnd,bd->bn", desc, params[f"{prefix}.score"])
    context = torch.einsum("bn,bnd->bd", torch.softmax(score, dim=1), desc)  # [B, d]
    hidden = batched_linear(desc, params[f"{prefix}.w_pos"], params[f"{prefix}.b1"])
    hidden = hidden + torch.einsum("bd,bhd->bh", context, params[f"{prefix}.w_ctx"]).unsqueeze(1)
    out = batched_linear(F.leaky_relu(hidden, 0.1), params[f"{prefix}.w2"], params[f"{prefix}.b2"])
    return out.squeeze(2)


class MetaTripleAttention(nn.Module):
    """Meta Triple Attention on the spatial, channel and temporal dimensions of [B, C, T, H, W] features.

    For each enabled dimension: a global stream that sees the whole dimension (reduction ``reduction``; see
    the module docstring) and local convolution streams
    (one per kernel in ``kernels``) produce attention logits; a soft aggregation gate (MLP + sigmoid on the
    channel mean) weights the streams; the weighted sum goes through a sigmoid and multiplies the features.
    All stream and gate weights come from a :class:`MetaHyperNetwork` (``dynamic=True``) or are static.

    ``forward`` returns ``(features, gates)`` with ``gates`` [B, n_dims, 1 + len(kernels)].
    """

    def __init__(
        self,
        channels: int,
        dims: Sequence[str] = ATTENTION_DIMS,
        kernels: Sequence[int] = (1, 3, 5),
        reduction: int = 2,
        descriptor_channels: int = 32,
        gate_hidden: int = 16,
        mhn_hidden: int = 16,
        dynamic: bool = True,
    ) -> None:
        super().__init__()
        dims = tuple(dims)
        bad = [d for d in dims if d not in ATTENTION_DIMS]
        if bad or not dims or len(set(dims)) != len(dims):
            raise ValueError(f"MTA dims must be distinct entries of {ATTENTION_DIMS}, got {dims}")
        if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"MTA kernels must be odd positive integers, got {tuple(kernels)}")
        if reduction < 1:
            raise ValueError(f"MTA reduction must be >= 1, got {reduction}")
        self.channels = channels
        self.dims = dims
        self.kernels = tuple(int(k) for k in kernels)
        self.dynamic = dynamic
        self.n_streams = 1 + len(self.kernels)
        cd = min(descriptor_channels, channels)
        self.descriptor_channels = cd
        specs: list[ParamSpec] = []
        if "channel" in dims:
            specs += _mlp_specs("channel.global", channels, max(channels // reduction, 1), channels,
                                out_bias=OPEN_BIAS)
            for k in self.kernels:
                specs += [ParamSpec(f"channel.local{k}.w", (1, k), k), ParamSpec(f"channel.local{k}.b", (1,))]
        for dim in ("temporal", "spatial"):
            if dim not in dims:
                continue
            specs += _global_context_specs(f"{dim}.global", cd, max(cd // reduction, 1))
            for k in self.kernels:
                shape = (cd, k) if dim == "temporal" else (cd, k, k)
                fan_in = cd * k if dim == "temporal" else cd * k * k
                specs += [ParamSpec(f"{dim}.local{k}.w", shape, fan_in), ParamSpec(f"{dim}.local{k}.b", (1,))]
        for dim in dims:
            specs += _mlp_specs(f"{dim}.gate", channels, gate_hidden, self.n_streams, out_bias=OPEN_BIAS - 1.0)
        # Static projections that make the temporal / spatial descriptors small and length-agnostic; they are
        # not part of the calibration network (the paper's MHN calibrates the attention, not the features).
        self.temporal_proj = nn.Linear(channels, cd) if "temporal" in dims else None
        self.spatial_proj = nn.Conv2d(channels, cd, 1) if "spatial" in dims else None
        self.hyper = MetaHyperNetwork(2 * channels, specs, hidden=mhn_hidden, dynamic=dynamic)
        for k in self.kernels:
            self.register_buffer(f"eye1d_{k}", identity_kernel_1d(k), persistent=False)
            self.register_buffer(f"eye2d_{k}", identity_kernel_2d(k), persistent=False)

    def _mix(self, streams: list[torch.Tensor], gate: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(streams, dim=1)  # [B, S, ...]
        shape = (-1, self.n_streams) + (1,) * (stacked.dim() - 2)
        return torch.sigmoid((stacked * gate.reshape(shape)).sum(1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not torch.jit.is_tracing() and (x.dim() != 5 or x.shape[1] != self.channels):
            raise ValueError(f"MetaTripleAttention expects [B, {self.channels}, T, H, W], got {tuple(x.shape)}")
        mean_c = x.mean(dim=(2, 3, 4))
        p = self.hyper(gap_statistics(x))
        out = x
        gates = []
        for dim in self.dims:
            gate = torch.sigmoid(batched_mlp(mean_c.unsqueeze(1), p, f"{dim}.gate").squeeze(1))  # [B, S]
            gates.append(gate)
            if dim == "channel":
                z = mean_c.unsqueeze(1)  # [B, 1, C]
                streams = [batched_mlp(z, p, "channel.global").squeeze(1)]
                for k in self.kernels:
                    streams.append(batched_conv1d(z, p[f"channel.local{k}.w"], p[f"channel.local{k}.b"],
                                                  getattr(self, f"eye1d_{k}")))
                att = self._mix(streams, gate)  # [B, C]
                out = out * att.reshape(-1, self.channels, 1, 1, 1)
            elif dim == "temporal":
                d = self.temporal_proj(x.mean(dim=(3, 4)).transpose(1, 2))  # [B, T, cd]
                streams = [global_context_logits(d, p, "temporal.global")]
                dt = d.transpose(1, 2)
                for k in self.kernels:
                    streams.append(batched_conv1d(dt, p[f"temporal.local{k}.w"], p[f"temporal.local{k}.b"],
                                                  getattr(self, f"eye1d_{k}")))
                att = self._mix(streams, gate)  # [B, T]
                out = out * att.unsqueeze(1).unsqueeze(-1).unsqueeze(-1)
            else:
                d = self.spatial_proj(x.mean(dim=2))  # [B, cd, H, W]
                h, w = d.shape[-2], d.shape[-1]
                flat = d.flatten(2).transpose(1, 2)  # [B, HW, cd]
                streams = [global_context_logits(flat, p, "spatial.global").reshape(-1, h, w)]
                for k in self.kernels:
                    streams.append(batched_conv2d(d, p[f"spatial.local{k}.w"], p[f"spatial.local{k}.b"],
                                                  getattr(self, f"eye2d_{k}")))
                att = self._mix(streams, gate)  # [B, H, W]
                out = out * att.unsqueeze(1).unsqueeze(1)
        return out, torch.stack(gates, dim=1)


def gem(x: torch.Tensor, p: torch.Tensor, dim: int, eps: float = 1e-6) -> torch.Tensor:
    """Generalized mean pooling over ``dim``: (mean(clamp(x, eps)^p))^(1/p)."""
    return x.clamp(min=eps).pow(p).mean(dim=dim).pow(1.0 / p)


class MetaTemporalPooling(nn.Module):
    """Meta Temporal Pooling (Eq. 7): per-frame weights in (0, 1) from a space- and channel-pooled
    temporal descriptor, then temporal max plus weighted mean of the weighted features.

    [B, C, T, H, W] -> ([B, C, H, W], frame weights [B, T]). The weighting is a 1-D convolution over time
    (kernel ``kernel``) on the per-frame (mean, max) descriptor followed by a sigmoid; its kernel and bias
    come from a :class:`MetaHyperNetwork` (``dynamic``) or are static parameters.
    """

    def __init__(self, channels: int, kernel: int = 3, mhn_hidden: int = 16, dynamic: bool = True) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"MTP kernel must be an odd positive integer, got {kernel}")
        self.channels = channels
        self.kernel = kernel
        self.dynamic = dynamic
        # Bias starts at OPEN_BIAS - 1: weights start near 0.88, so training begins close to max + mean.
        specs = [ParamSpec("weighting.w", (2, kernel), 2 * kernel),
                 ParamSpec("weighting.b", (1,), 0, OPEN_BIAS - 1.0)]
        self.hyper = MetaHyperNetwork(2 * channels, specs, hidden=mhn_hidden, dynamic=dynamic)
        self.register_buffer("eye1d", identity_kernel_1d(kernel), persistent=False)

    def frame_weights(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, T, H, W] -> [B, T] in (0, 1)."""
        p = self.hyper(gap_statistics(x))
        descriptor = torch.stack([x.mean(dim=(1, 3, 4)), x.amax(dim=(1, 3, 4))], dim=1)  # [B, 2, T]
        return torch.sigmoid(batched_conv1d(descriptor, p["weighting.w"], p["weighting.b"], self.eye1d))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not torch.jit.is_tracing() and (x.dim() != 5 or x.shape[1] != self.channels):
            raise ValueError(f"MetaTemporalPooling expects [B, {self.channels}, T, H, W], got {tuple(x.shape)}")
        w = self.frame_weights(x)
        weighted = x * w.reshape(w.shape[0], 1, w.shape[1], 1, 1)
        mean = weighted.sum(dim=2) / w.sum(dim=1).reshape(-1, 1, 1, 1)
        return weighted.max(dim=2)[0] + mean, w
