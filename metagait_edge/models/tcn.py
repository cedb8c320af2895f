"""Temporal convolutional network (TCN) for gait cycles, built to be meta-learned and exported.

A stack of residual blocks of dilated ``Conv1d`` layers, each weight-normalised with
``torch.nn.utils.parametrizations.weight_norm`` and free of BatchNorm (running statistics break MAML's
per-task functional forward passes and would leak between tasks). The network maps ``[B, C_in, T]`` to
``[B, C_out, T]``:

* generation: the input is the previous gait cycle, the target the next one;
* reconstruction: the input is a cycle with missing samples or sensors, with the validity mask appended
  as extra input channels (``mask_input=True``), the target the full cycle.

Two padding regimes:

* **causal** (streaming): every convolution pads on the left only, so output ``t`` sees inputs ``<= t``;
* **whole-cycle** (default): symmetric padding, circular by default because a time-normalised gait cycle
  is periodic (sample 100 is followed by sample 0 of the next cycle), so the cycle boundary is not an
  artificial edge.

Small *adaptation groups* let MAML adapt a few parameters only: the output head (ANIL), per-block FiLM
scale/shift vectors, or all biases. ``fold_weight_norm`` turns the weight-norm parametrisation into plain
weights whose names do not depend on the parametrisation (``blocks.0.conv1.weight``), for ONNX export
and deployment.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Dict, List, Literal, Mapping, Optional

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

AdaptKind = Literal["all", "head", "film", "bias"]
ADAPT_KINDS = ("all", "head", "film", "bias")

# Names torch's weight_norm parametrisation gives to the magnitude (g) and direction (v) of a weight.
_WN_G = ".parametrizations.weight.original0"
_WN_V = ".parametrizations.weight.original1"


@dataclass
class TCNConfig:
    """Shape and behaviour of a :class:`TCN`.

    ``in_channels`` counts signal channels only; with ``mask_input`` the model appends as many mask
    channels itself. ``padding`` ``"auto"`` means circular for the whole-cycle model and zeros for the
    causal one. ``min_receptive_field`` guards against configs whose receptive field cannot span a
    whole cycle (101 samples); set it to 0 to allow smaller ones.
    """

    in_channels: int = 42
    out_channels: int = 42
    hidden_channels: int = 64
    levels: int = 5
    kernel_size: int = 3
    dilation_base: int = 2
    causal: bool = False
    padding: Literal["auto", "circular", "zeros", "replicate"] = "auto"
    mask_input: bool = False
    film: bool = True
    residual_output: bool = False
    dropout: float = 0.0
    activation: Literal["gelu", "relu"] = "gelu"
    min_receptive_field: int = 101

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "hidden_channels", "levels", "kernel_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TCNConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.dilation_base < 1:
            raise ValueError(f"TCNConfig.dilation_base must be >= 1, got {self.dilation_base}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TCNConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.causal and self.padding == "circular":
            raise ValueError("TCNConfig.padding='circular' is not causal; use 'zeros' or 'replicate' with causal=True")
        if self.residual_output and self.in_channels != self.out_channels:
            raise ValueError(
                f"TCNConfig.residual_output needs in_channels == out_channels, got {self.in_channels} "
                f"and {self.out_channels}"
            )
        if self.receptive_field < self.min_receptive_field:
            raise ValueError(
                f"TCNConfig receptive field {self.receptive_field} < min_receptive_field "
                f"{self.min_receptive_field}: raise levels, kernel_size or dilation_base"
            )

    @property
    def dilations(self) -> List[int]:
        return [self.dilation_base**i for i in range(self.levels)]

    @property
    def receptive_field(self) -> int:
        """Number of input samples one output sample depends on (two convolutions per block)."""
        return 1 + sum(2 * (self.kernel_size - 1) * d for d in self.dilations)

    @property
    def resolved_padding(self) -> str:
        if self.padding == "auto":
            return "zeros" if self.causal else "circular"
        return self.padding


def _pad_amounts(kernel_size: int, dilation: int, causal: bool) -> tuple[int, int]:
    total = (kernel_size - 1) * dilation
    if causal:
        return total, 0
    left = total // 2
    return left, total - left


def circular_pad(x: Tensor, left: int, right: int) -> Tensor:
    """Wrap-around padding of the last axis built from slices and ``cat`` (exports to any ONNX opset)."""
    if left == 0 and right == 0:
        return x
    length = x.shape[-1]
    need = max(left, right)
    source = x
    if need > length:  # padding longer than the sequence wraps around more than once
        source = x.repeat(1, 1, math.ceil(need / length))
    parts = []
    if left:
        parts.append(source[..., source.shape[-1] - left :])
    parts.append(x)
    if right:
        parts.append(source[..., :right])
    return torch.cat(parts, dim=-1)


def edge_pad(x: Tensor, left: int, right: int, replicate: bool = False) -> Tensor:
    """Zero (or edge-replicating) padding of the last axis from slices, ``expand`` and ``cat``.

    Equivalent to ``F.pad``, but the dynamo ONNX exporter emits ``Pad`` at opset 18 and cannot convert
    it down to opset 17; ``Concat``/``Expand`` exist in every opset we target.
    """
    if left == 0 and right == 0:
        return x
    parts = []
    if left:
        edge = x[..., :1] if replicate else torch.zeros_like(x[..., :1])
        parts.append(edge.expand(-1, -1, left))
    parts.append(x)
    if right:
        edge = x[..., -1:] if replicate else torch.zeros_like(x[..., -1:])
        parts.append(edge.expand(-1, -1, right))
    return torch.cat(parts, dim=-1)


class _PaddedConv(nn.Module):
    """A weight-normalised dilated Conv1d with explicit padding (length-preserving)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, causal: bool, padding: str):
        super().__init__()
        self.left, self.right = _pad_amounts(kernel_size, dilation, causal)
        self.mode = padding
        self.conv = weight_norm(nn.Conv1d(c_in, c_out, kernel_size, dilation=dilation))

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "circular":
            x = circular_pad(x, self.left, self.right)
        else:
            x = edge_pad(x, self.left, self.right, replicate=self.mode == "replicate")
        return self.conv(x)


class FiLM(nn.Module):
    """Per-channel affine modulation ``h * scale + shift``, initialised to the identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))

    def forward(self, h: Tensor) -> Tensor:
        return h * self.scale[None, :, None] + self.shift[None, :, None]


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, dilation: int, config: TCNConfig):
        super().__init__()
        pad = config.resolved_padding
        self.conv1 = _PaddedConv(channels, channels, config.kernel_size, dilation, config.causal, pad)
        self.conv2 = _PaddedConv(channels, channels, config.kernel_size, dilation, config.causal, pad)
        self.film = FiLM(channels) if config.film else None
        self.act = nn.GELU() if config.activation == "gelu" else nn.ReLU()
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.dropout(self.act(self.conv1(x)))
        h = self.conv2(h)
        if self.film is not None:
            h = self.film(h)
        return x + self.dropout(self.act(h))


class TCN(nn.Module):
    """Residual dilated TCN: ``forward(x[B, C_in, T], mask=None) -> {"output": [B, C_out, T]}``.

    ``mask`` (``[B, C_in]`` per channel or ``[B, C_in, T]`` per sample; nonzero = valid) zeroes invalid
    input values (NaN-safe) and, with ``config.mask_input``, is appended as extra input channels.
    """

    def __init__(self, config: TCNConfig | None = None):
        super().__init__()
        self.config = config = config or TCNConfig()
        c_in = config.in_channels * (2 if config.mask_input else 1)
        self.input_proj = weight_norm(nn.Conv1d(c_in, config.hidden_channels, 1))
        self.blocks = nn.ModuleList(ResidualBlock(config.hidden_channels, d, config) for d in config.dilations)
        # The head stays a plain conv: it is the ANIL adaptation target and plain weights adapt faster.
        self.head = nn.Conv1d(config.hidden_channels, config.out_channels, 1)

    @property
    def receptive_field(self) -> int:
        return self.config.receptive_field

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Dict[str, Tensor]:
        cfg = self.config
        if x.dim() != 3 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"TCN expects input [batch, {cfg.in_channels}, time], got {tuple(x.shape)}")
        if mask is None and cfg.mask_input:
            raise ValueError("TCN was configured with mask_input=True but forward() got no mask")
        if mask is not None:
            m = _expand_mask(mask, x)
            x = torch.where(m > 0, x, torch.zeros_like(x))
            inp = torch.cat([x, m], dim=1) if cfg.mask_input else x
        else:
            inp = x
        h = self.input_proj(inp)
        for block in self.blocks:
            h = block(h)
        out = self.head(h)
        if cfg.residual_output:
            out = out + x
        return {"output": out}

    def adaptation_parameter_names(self, kind: str = "all") -> List[str]:
        """Names (as in ``named_parameters``) of the parameters a kind of adaptation changes.

        ``all``: every parameter; ``head``: the output head (ANIL); ``film``: the FiLM scale/shift
        vectors; ``bias``: every bias (BitFit-style).
        """
        names = [n for n, _ in self.named_parameters()]
        if kind == "all":
            return names
        if kind == "head":
            return [n for n in names if n.startswith("head.")]
        if kind == "film":
            if not self.config.film:
                raise ValueError("adaptation kind 'film' needs a TCN built with film=True")
            return [n for n in names if ".film." in n]
        if kind == "bias":
            return [n for n in names if n.endswith(".bias")]
        raise ValueError(f"unknown adaptation kind {kind!r}; expected one of {ADAPT_KINDS}")


def _expand_mask(mask: Tensor, x: Tensor) -> Tensor:
    if mask.dim() == 2 and mask.shape == x.shape[:2]:
        mask = mask[:, :, None].expand(x.shape)
    elif mask.shape != x.shape:
        raise ValueError(
            f"mask must be [batch, channels] {tuple(x.shape[:2])} or [batch, channels, time] "
            f"{tuple(x.shape)}, got {tuple(mask.shape)}"
        )
    return mask.to(x.dtype)


def stable_name(name: str) -> str:
    """The parametrisation-free name of a parameter: ``a.conv.parametrizations.weight.original1`` ->
    ``a.conv.weight``. Names of other parameters are returned unchanged."""
    for suffix in (_WN_G, _WN_V):
        if name.endswith(suffix):
            return name[: -len(suffix)] + ".weight"
    return name


def fold_weight_norm_params(params: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Fold weight-norm (g, v) pairs of a parameter dict into plain weights with stable names.

    Works on any dict keyed like ``named_parameters()`` (e.g. MAML fast weights after on-device
    calibration), so adapted weights can be exported without touching the module. Uses the same
    formula as ``weight_norm(dim=0)``: ``w = g * v / ||v||`` with the norm over all but the first axis.
    """
    out: Dict[str, Tensor] = {}
    for name, value in params.items():
        if name.endswith(_WN_G):
            continue
        if name.endswith(_WN_V):
            base = name[: -len(_WN_V)]
            g_name = base + _WN_G
            if g_name not in params:
                raise KeyError(f"weight-norm direction {name} has no magnitude {g_name}")
            g = params[g_name]
            norm = value.flatten(1).norm(dim=1).reshape(g.shape)
            out[base + ".weight"] = g * value / norm
        else:
            out[name] = value
    return out


def fold_weight_norm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Replace every weight-norm parametrisation by the plain weight it computes.

    The folded module computes the same function and its ``state_dict`` keys are the stable names
    (``blocks.0.conv1.conv.weight``) that ``fold_weight_norm_params`` produces, ready for ONNX export.
    """
    if not inplace:
        model = copy.deepcopy(model)
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            # Not parametrize.remove_parametrizations: it deletes the property from the module's
            # dynamically created class, which a deepcopy shares with the original, breaking the original.
            if len(module.parametrizations) != 1:
                raise ValueError(f"fold_weight_norm: {type(module).__name__} has parametrisations besides weight")
            weight = module.weight.detach().clone()
            delattr(module, "parametrizations")
            module.__class__ = module.__class__.__bases__[0]
            module.register_parameter("weight", nn.Parameter(weight))
    return model


def load_folded_params(model: nn.Module, params: Mapping[str, Tensor]) -> nn.Module:
    """A folded copy of ``model`` carrying ``params`` (parametrised or folded names), e.g. fast weights."""
    folded = fold_weight_norm(model)
    state = {k: v.detach() for k, v in fold_weight_norm_params(params).items()}
    missing = set(folded.state_dict()) - set(state)
    unexpected = set(state) - set(folded.state_dict())
    if missing or unexpected:
        raise KeyError(f"parameters do not match the model: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    folded.load_state_dict(state)
    return folded


def build_tcn(config: TCNConfig | Mapping | None = None) -> TCN:
    """A TCN from a config dataclass or a plain mapping (checked like YAML configs)."""
    if config is None or isinstance(config, TCNConfig):
        return TCN(config)
    from metagait_edge.config import from_dict

    return TCN(from_dict(TCNConfig, config))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "ADAPT_KINDS",
    "TCN",
    "TCNConfig",
    "FiLM",
    "build_tcn",
    "circular_pad",
    "edge_pad",
    "count_parameters",
    "fold_weight_norm",
    "fold_weight_norm_params",
    "load_folded_params",
    "stable_name",
]
