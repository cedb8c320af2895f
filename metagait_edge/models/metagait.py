"""MetaGait recognition model: GaitGL backbone + Meta Triple Attention + Meta Temporal Pooling.

Input: silhouettes as a float tensor [B, T, H, W] with values in 0..1 (T = 30 for training clips, whole
sequences at test time, T >= 3 because of the temporal stride of LTA; evaluation repeats the frames of a
shorter sequence, see ``recognition.evaluate``). H x W is 64 x 44 (the papers' CASIA-B size), 128 x 88
(OpenGait's larger input) or a CPU-sized fraction of 64 x 44.

Pipeline (channel widths ``c0, c1, c2`` from ``MetaGaitConfig.channels``)::

    stem   3x3x3 conv 1 -> c0                          [B, c0, T,    H,   W]
    lta    (3,1,1) conv, temporal stride 3             [B, c0, T/3,  H,   W]
    gl0    GLConv c0 -> c1 (global + local parts, sum) [B, c1, T/3,  H,   W]    (+ MTA)
    pool   spatial max pool 2x2                        [B, c1, T/3,  H/2, W/2]
    gl1    GLConv c1 -> c2 (sum)                       [B, c2, T/3,  H/2, W/2]  (+ MTA)
    gl2    GLConv c2 -> c2 (stacked along H)           [B, c2, T/3,  H,   W/2]  (+ MTA)
    temporal pooling: MTP (Eq. 7: sigmoid frame weights, max + weighted mean) or temporal max (baseline)
    strip GeM pooling (horizontal pyramid bins) -> SeparateFC -> embeddings [B, P, D]
    BNNeck -> bn_embeddings -> per-strip classifier -> logits [B, P, num_classes]

``forward`` returns a dict; in ``"inference"`` mode only ``{"embeddings"}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from metagait_edge.models.gaitgl import (
    BasicConv3d,
    GeMHPP,
    GLConv,
    LocalTemporalAggregation,
    SeparateBNNeck,
    SeparateClassifier,
    SeparateFC,
)
from metagait_edge.models.meta_modules import ATTENTION_DIMS, MetaTemporalPooling, MetaTripleAttention

STAGES = ("gl0", "gl1", "gl2")
OUTPUT_MODES = ("train", "inference")


@dataclass
class MetaGaitConfig:
    """Every part of MetaGait, switchable for ablations.

    ``mta``: "dynamic" (MHN-generated calibration, the paper), "static" (ordinary parameters) or "none".
    ``mtp``: "dynamic", "static", or "max" (GaitGL's temporal max pooling, the baseline).
    ``num_classes`` = 0 builds no classifier (no ``logits`` output).
    ``embed_dim`` = 0 means the last backbone width.
    ``input_height`` x ``input_width``: 64 x 44 or 128 x 88 at the papers' sizes (any even size whose
    height splits into ``local_parts``).
    """

    channels: tuple[int, int, int] = (32, 64, 128)
    input_height: int = 64
    input_width: int = 44
    local_parts: int = 8
    last_block_concat: bool = True
    strip_bins: tuple[int, ...] = (64,)
    strip_gem_p: float = 6.5
    embed_dim: int = 0
    num_classes: int = 74
    mta: Literal["dynamic", "static", "none"] = "dynamic"
    mta_stages: tuple[str, ...] = STAGES
    mta_dims: tuple[str, ...] = ATTENTION_DIMS
    mta_kernels: tuple[int, ...] = (1, 3, 5)
    mta_reduction: int = 2
    mta_descriptor_channels: int = 32
    mta_gate_hidden: int = 16
    mhn_hidden: int = 16
    mtp: Literal["dynamic", "static", "max"] = "dynamic"
    mtp_kernel: int = 3

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.strip_bins = tuple(int(b) for b in self.strip_bins)
        self.mta_stages = tuple(self.mta_stages)
        self.mta_dims = tuple(self.mta_dims)
        self.mta_kernels = tuple(int(k) for k in self.mta_kernels)
        if len(self.channels) != 3 or any(c < 1 for c in self.channels):
            raise ValueError(f"channels must be three positive integers, got {self.channels}")
        if self.input_height % 2 or self.input_width % 2:
            raise ValueError(f"input_height and input_width must be even (2x2 max pool), got "
                             f"{self.input_height}x{self.input_width}")
        if self.input_height % self.local_parts or (self.input_height // 2) % self.local_parts:
            raise ValueError(f"input_height {self.input_height} and its half must be divisible by "
                             f"local_parts {self.local_parts}")
        final_h = self.final_height
        bad_bins = [b for b in self.strip_bins if b < 1 or final_h % b]
        if not self.strip_bins or bad_bins:
            raise ValueError(f"strip_bins {self.strip_bins} must divide the final feature height {final_h}")
        bad_stages = [s for s in self.mta_stages if s not in STAGES]
        if bad_stages:
            raise ValueError(f"mta_stages {bad_stages} unknown; allowed: {list(STAGES)}")
        bad_dims = [d for d in self.mta_dims if d not in ATTENTION_DIMS]
        if bad_dims or (self.mta != "none" and not self.mta_dims):
            raise ValueError(f"mta_dims {self.mta_dims} must be a non-empty subset of {list(ATTENTION_DIMS)}")
        if any(k < 1 or k % 2 == 0 for k in self.mta_kernels) or not self.mta_kernels:
            raise ValueError(f"mta_kernels must be odd positive integers, got {self.mta_kernels}")
        if self.mtp_kernel < 1 or self.mtp_kernel % 2 == 0:
            raise ValueError(f"mtp_kernel must be an odd positive integer, got {self.mtp_kernel}")
        if self.mta not in ("dynamic", "static", "none"):
            raise ValueError(f"mta must be dynamic, static or none, got {self.mta!r}")
        if self.mtp not in ("dynamic", "static", "max"):
            raise ValueError(f"mtp must be dynamic, static or max, got {self.mtp!r}")
        if self.num_classes < 0 or self.embed_dim < 0:
            raise ValueError("num_classes and embed_dim must be >= 0")

    @property
    def final_height(self) -> int:
        h = self.input_height // 2
        return 2 * h if self.last_block_concat else h

    @property
    def num_parts(self) -> int:
        return sum(self.strip_bins)

    @property
    def embedding_dim(self) -> int:
        return self.embed_dim or self.channels[-1]

    @classmethod
    def casia_b(cls, **overrides) -> "MetaGaitConfig":
        """GaitGL/MetaGait widths for CASIA-B (74 training subjects)."""
        return cls(**{"channels": (32, 64, 128), "num_classes": 74, **overrides})

    @classmethod
    def ou_mvlp(cls, **overrides) -> "MetaGaitConfig":
        """Doubled widths for OU-MVLP (5153 training subjects)."""
        return cls(**{"channels": (64, 128, 256), "num_classes": 5153, **overrides})

    @classmethod
    def large_input(cls, **overrides) -> "MetaGaitConfig":
        """OpenGait's 128 x 88 input (the 64 x 44 CASIA-B widths; strips follow the doubled height)."""
        return cls(**{"input_height": 128, "input_width": 88, "strip_bins": (128,), **overrides})

    @classmethod
    def cpu(cls, **overrides) -> "MetaGaitConfig":
        """A CPU / edge-sized variant (half the CASIA-B widths)."""
        return cls(**{"channels": (16, 32, 64), "strip_bins": (16,), "mta_descriptor_channels": 16, **overrides})


class MetaGait(nn.Module):
    """MetaGait recognition network; see the module docstring for the pipeline."""

    def __init__(self, config: MetaGaitConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or MetaGaitConfig()
        c0, c1, c2 = cfg.channels
        self.output_mode = "train"
        self.stem = BasicConv3d(1, c0)
        self.lta = LocalTemporalAggregation(c0)
        self.gl0 = GLConv(c0, c1, cfg.local_parts, concat=False)
        self.pool = nn.MaxPool3d((1, 2, 2))
        self.gl1 = GLConv(c1, c2, cfg.local_parts, concat=False)
        self.gl2 = GLConv(c2, c2, cfg.local_parts, concat=cfg.last_block_concat)
        stage_channels = {"gl0": c1, "gl1": c2, "gl2": c2}
        self.mta = nn.ModuleDict()
        if cfg.mta != "none":
            for stage in cfg.mta_stages:
                self.mta[stage] = MetaTripleAttention(
                    stage_channels[stage], dims=cfg.mta_dims, kernels=cfg.mta_kernels,
                    reduction=cfg.mta_reduction, descriptor_channels=cfg.mta_descriptor_channels,
                    gate_hidden=cfg.mta_gate_hidden, mhn_hidden=cfg.mhn_hidden, dynamic=cfg.mta == "dynamic",
                )
        self.mtp = None
        if cfg.mtp != "max":
            self.mtp = MetaTemporalPooling(c2, kernel=cfg.mtp_kernel, mhn_hidden=cfg.mhn_hidden,
                                           dynamic=cfg.mtp == "dynamic")
        self.hpp = GeMHPP(cfg.strip_bins, p=cfg.strip_gem_p)
        parts, dim = cfg.num_parts, cfg.embedding_dim
        self.fc = SeparateFC(parts, c2, dim)
        self.bnneck = SeparateBNNeck(parts, dim)
        self.classifier = SeparateClassifier(parts, dim, cfg.num_classes) if cfg.num_classes > 0 else None

    def set_mode(self, mode: str) -> "MetaGait":
        """``"train"``: all outputs; ``"inference"``: ``{"embeddings"}`` only (what the runtime exports)."""
        if mode not in OUTPUT_MODES:
            raise ValueError(f"unknown output mode {mode!r}; allowed: {list(OUTPUT_MODES)}")
        self.output_mode = mode
        return self

    def check_input(self, x) -> None:
        """Raise ``ValueError``/``TypeError`` naming what is wrong with a silhouette batch."""
        cfg = self.config
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"MetaGait input must be a torch.Tensor [B, T, H, W], got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"MetaGait input must be a float tensor with values in 0..1, got dtype {x.dtype} "
                            f"(convert uint8 silhouettes with x.float() / 255)")
        if x.dim() != 4:
            raise ValueError(f"MetaGait input must be [B, T, H, W], got shape {tuple(x.shape)}")
        b, t, h, w = x.shape
        if b == 0:
            raise ValueError("MetaGait input batch is empty (B = 0)")
        if t < self.lta.stride:
            raise ValueError(f"MetaGait input sequence has {t} frame(s); at least {self.lta.stride} are needed")
        if (h, w) != (cfg.input_height, cfg.input_width):
            raise ValueError(f"MetaGait input frames are {h}x{w}, the model expects "
                             f"{cfg.input_height}x{cfg.input_width} (H x W)")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not torch.jit.is_tracing():
            self.check_input(x)
        out: dict[str, torch.Tensor] = {}
        gates = []
        f = F.leaky_relu(self.stem(x.unsqueeze(1)))
        f = self.lta(f)
        for stage in STAGES:
            if stage == "gl1":
                f = self.pool(f)
            f = getattr(self, stage)(f)
            if stage in self.mta:
                f, g = self.mta[stage](f)
                gates.append(g)
        if self.mtp is not None:
            pooled, mtp_weights = self.mtp(f)
            out["mtp_weights"] = mtp_weights
        else:
            pooled = f.max(dim=2)[0]
        strips = self.hpp(pooled)  # [B, C, P]
        embeddings = self.fc(strips)  # [B, P, D]
        if self.output_mode == "inference":
            return {"embeddings": embeddings}
        out["embeddings"] = embeddings
        bn = self.bnneck(embeddings)
        out["bn_embeddings"] = bn
        if self.classifier is not None:
            out["logits"] = self.classifier(bn)
        if gates:
            out["mta_gates"] = torch.stack(gates, dim=1)  # [B, stages, dims, streams]
        return out
