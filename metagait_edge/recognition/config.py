"""Recognition training configuration: model, losses, data, schedule and evaluation in one YAML file.

``load_recognition_config(path)`` reads ``training/configs/recognition_*.yaml``; unknown keys are an
error naming the dotted key (``metagait_edge.config``). Cross-field checks (classifier size against the
number of training identities, input size against the 64 x 44 silhouettes or 128 x 88, P against the identities)
raise ``ConfigError`` naming the keys involved.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Literal

from metagait_edge.config import ConfigError, from_dict, load_config
from metagait_edge.recognition.losses import LossConfig
from metagait_edge.models.metagait import MetaGaitConfig
from metagait_edge.recognition.data import FRAME_HEIGHT, FRAME_WIDTH, DataConfig

# The paper's Table 4 ablation: which meta modules each variant switches on.
VARIANTS: dict[str, dict[str, str]] = {
    "baseline": {"mta": "none", "mtp": "max"},
    "mta": {"mta": "dynamic", "mtp": "max"},
    "mtp": {"mta": "none", "mtp": "dynamic"},
    "metagait": {"mta": "dynamic", "mtp": "dynamic"},
}


@dataclass
class RecognitionTrainConfig:
    """Optimization schedule (the papers: Adam, lr 1e-4, weight decay 5e-4, 30-frame clips, P x K)."""

    iterations: int = 80000
    p: int = 8
    k: int = 8
    frames: int = 30
    sampling: Literal["contiguous", "ordered"] = "contiguous"
    lr: float = 1e-4
    weight_decay: float = 5e-4
    milestones: list[int] = field(default_factory=lambda: [70000])
    gamma: float = 0.1
    grad_clip: float = 0.0
    amp: bool = True  # mixed precision on CUDA only; CPU always trains in float32
    seed: int = 0
    device: str = "auto"
    threads: int = 1  # torch CPU threads (0 = leave torch's default)
    num_workers: int = 0
    log_every: int = 10
    checkpoint_every: int = 0  # 0 = only the final checkpoint

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.p < 1 or self.k < 1:
            raise ValueError(f"iterations, p and k must be >= 1, got {self.iterations}, {self.p}, {self.k}")
        if self.frames < 3:
            raise ValueError(f"frames must be >= 3 (temporal stride of LTA), got {self.frames}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if any(m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing positive iterations, got {self.milestones}")


@dataclass
class EvalConfig:
    """Evaluation settings: distance metric, open-set target false accept rate, batch of whole sequences."""

    metric: Literal["euclidean", "cosine"] = "euclidean"
    target_far: float = 0.05
    gallery_metric: Literal["euclidean", "cosine"] = "cosine"

    def __post_init__(self) -> None:
        if not 0.0 <= self.target_far <= 1.0:
            raise ValueError(f"target_far must be in [0, 1], got {self.target_far}")


@dataclass
class RecognitionConfig:
    name: str = "metagait"
    variant: Literal["baseline", "mta", "mtp", "metagait", "custom"] = "custom"
    model: MetaGaitConfig = field(default_factory=MetaGaitConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: RecognitionTrainConfig = field(default_factory=RecognitionTrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = ""  # default runs/recognition/<name>

    def __post_init__(self) -> None:
        validate(self)


# OpenGait's 128 x 88 input: the 64 x 44 silhouettes this project stores are upsampled 2x to reach it.
UPSAMPLED_SIZE = (2 * FRAME_HEIGHT, 2 * FRAME_WIDTH)


def downsample_factor(model: MetaGaitConfig) -> float:
    """How much the 64 x 44 silhouettes are average-pooled to reach the model's input size.

    An integer k >= 1 for 64x44 / k; 0.5 for 128 x 88 (bilinear 2x upsampling, see ``train.prepare_input``).
    """
    h, w = model.input_height, model.input_width
    if (h, w) == UPSAMPLED_SIZE:
        return 0.5
    if h < 1 or FRAME_HEIGHT % h or FRAME_HEIGHT // h * w != FRAME_WIDTH:
        raise ConfigError(f"model.input_height x model.input_width = {h}x{w} must be 128x88 or 64x44 divided by an "
                          f"integer factor (64x44, 32x22, 16x11)")
    return FRAME_HEIGHT // h


def validate(cfg: RecognitionConfig) -> None:
    downsample_factor(cfg.model)
    if cfg.variant in VARIANTS:
        want = VARIANTS[cfg.variant]
        have = {"mta": cfg.model.mta, "mtp": cfg.model.mtp}
        if any(have[k] != v for k, v in want.items()):
            raise ConfigError(f"variant {cfg.variant!r} means model.mta={want['mta']}, model.mtp={want['mtp']}; "
                              f"the config has model.mta={have['mta']}, model.mtp={have['mtp']}")
    if cfg.data.dataset == "synthetic":
        n = cfg.data.synthetic.train_ids
        if cfg.model.num_classes not in (0, n):
            raise ConfigError(f"model.num_classes = {cfg.model.num_classes} but data.synthetic.train_ids = {n}: "
                              f"the classifier needs one class per training identity (or 0 for none)")
        if cfg.train.p > n:
            raise ConfigError(f"train.p = {cfg.train.p} identities per batch but data.synthetic.train_ids = {n}")
    needs_logits = any(t.output == "logits" for t in cfg.loss.terms)
    if needs_logits and cfg.model.num_classes == 0:
        raise ConfigError("loss uses output 'logits' but model.num_classes = 0 builds no classifier")


def load_recognition_config(path: str | os.PathLike) -> RecognitionConfig:
    return load_config(RecognitionConfig, path)


def with_variant(cfg: RecognitionConfig, variant: str, seed: int | None = None) -> RecognitionConfig:
    """A copy of ``cfg`` switched to one ablation variant (and training seed)."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    model = dataclasses.replace(cfg.model, **VARIANTS[variant])
    train = cfg.train if seed is None else dataclasses.replace(cfg.train, seed=seed)
    return dataclasses.replace(cfg, variant=variant, model=model, train=train,
                               name=f"{cfg.name}-{variant}" + ("" if seed is None else f"-s{seed}"))


def config_from_dict(data) -> RecognitionConfig:
    return from_dict(RecognitionConfig, data)
