"""GaitGL building blocks (Lin et al., "Gait Recognition via Effective Global-Local Feature Representation
and Local Temporal Aggregation", ICCV 2021), the backbone MetaGait is built on.

All blocks work on [B, C, T, H, W] feature maps; the horizontal axis H is split into parts for the local
branch and into strips for the pyramid pooling. Reshapes use -1 for the batch so graphs export with a
dynamic batch axis.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metagait_edge.models.meta_modules import gem


class BasicConv3d(nn.Module):
    """3-D convolution without bias (GaitGL uses no normalization inside the backbone)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=(3, 3, 3), stride=(1, 1, 1),
                 padding=(1, 1, 1)) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        # Without normalization layers, PyTorch's default init shrinks activations ~2x per layer; He init
        # keeps their scale, which also keeps the MHN's input statistics informative.
        nn.init.kaiming_normal_(self.conv.weight, a=0.01, mode="fan_in", nonlinearity="leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class LocalTemporalAggregation(nn.Module):
    """LTA: a (3, 1, 1) convolution with temporal stride 3 that merges each 3 neighbouring frames."""

    def __init__(self, channels: int, stride: int = 3) -> None:
        super().__init__()
        self.stride = stride
        self.conv = BasicConv3d(channels, channels, (stride, 1, 1), (stride, 1, 1), (0, 0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x))


class GLConv(nn.Module):
    """Global-local convolution.

    The global branch convolves the whole feature map; the local branch convolves ``parts`` horizontal
    parts independently (folded into the batch), so no receptive field crosses a part border. The two are
    summed, or (``concat``) stacked along H, which doubles the height, as in GaitGL's last block.
    """

    def __init__(self, in_channels: int, out_channels: int, parts: int = 8, concat: bool = False) -> None:
        super().__init__()
        if parts < 1:
            raise ValueError(f"GLConv parts must be >= 1, got {parts}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.parts = parts
        self.concat = concat
        self.global_conv = BasicConv3d(in_channels, out_channels)
        self.local_conv = BasicConv3d(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, t, h, w = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
        if not torch.jit.is_tracing() and h % self.parts:
            raise ValueError(f"GLConv: feature height {h} is not divisible into {self.parts} parts")
        ph = h // self.parts
        g = self.global_conv(x)
        # [B, C, T, P, ph, W] -> [B*P, C, T, ph, W]
        parts = x.reshape(-1, c, t, self.parts, ph, w).permute(0, 3, 1, 2, 4, 5).reshape(-1, c, t, ph, w)
        loc = self.local_conv(parts)
        t_out = loc.shape[2]
        loc = loc.reshape(-1, self.parts, self.out_channels, t_out, ph, w).permute(0, 2, 3, 1, 4, 5)
        loc = loc.reshape(-1, self.out_channels, t_out, h, w)
        if self.concat:
            return torch.cat([F.leaky_relu(g), F.leaky_relu(loc)], dim=3)
        return F.leaky_relu(g) + F.leaky_relu(loc)


class GeMHPP(nn.Module):
    """Horizontal pyramid pooling with GeM: [B, C, H, W] -> [B, C, sum(bins)] (learnable p)."""

    def __init__(self, bins: Sequence[int] = (64,), p: float = 6.5, eps: float = 1e-6) -> None:
        super().__init__()
        if not bins or any(b < 1 for b in bins):
            raise ValueError(f"strip bins must be positive integers, got {tuple(bins)}")
        self.bins = tuple(int(b) for b in bins)
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, h, w = x.shape[1], x.shape[2], x.shape[3]
        out = []
        for b in self.bins:
            if not torch.jit.is_tracing() and h % b:
                raise ValueError(f"GeMHPP: feature height {h} is not divisible into {b} strips")
            z = x.reshape(-1, c, b, (h // b) * w)
            out.append(gem(z, self.p, dim=-1, eps=self.eps))
        return torch.cat(out, dim=-1)


class SeparateFC(nn.Module):
    """One fully connected layer per strip: [B, C, P] -> [B, P, O] via einsum over a [P, C, O] parameter."""

    def __init__(self, parts: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.parts = parts
        self.weight = nn.Parameter(torch.empty(parts, in_features, out_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bcp,pco->bpo", x, self.weight)


class SeparateBNNeck(nn.Module):
    """BNNeck: BatchNorm1d over every (strip, feature) of [B, P, D] embeddings."""

    def __init__(self, parts: int, features: int) -> None:
        super().__init__()
        self.parts = parts
        self.features = features
        self.bn = nn.BatchNorm1d(parts * features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.reshape(-1, self.parts * self.features)).reshape(-1, self.parts, self.features)


class SeparateClassifier(nn.Module):
    """Per-strip linear classifier: [B, P, D] -> logits [B, P, K]."""

    def __init__(self, parts: int, features: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(parts, features, num_classes))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bpd,pdk->bpk", x, self.weight)
