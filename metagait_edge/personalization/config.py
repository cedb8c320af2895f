"""The personalization experiment's configuration (``training/configs/personalization*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, Literal, Tuple

from metagait_edge.data.cycles import CycleSetConfig
from metagait_edge.meta.maml import MAMLConfig
from metagait_edge.models.tcn import TCNConfig
from metagait_edge.personalization.inputs import PROBLEMS, MaskingConfig
from metagait_edge.personalization.loss import CycleLossConfig
from metagait_edge.personalization.tasks import ProtocolConfig, TaskSamplerConfig


@dataclass
class SplitConfig:
    """Subject-disjoint folds: every subject is a test subject once; ``n_val`` others validate."""

    n_folds: int = 3
    n_val: int = 3
    seed: int = 0


@dataclass
class PersonalizationTrainConfig:
    pooled_steps: int = 1200
    pooled_lr: float = 1e-3
    pooled_tasks_per_step: int = 8
    meta_iterations: int = 400
    meta_batch: int = 4
    meta_lr: float = 3e-4
    # What the outer loop learns: ``all`` the network and the inner rates (MAML++); ``rates`` only the inner
    # rates, the network stays the pooled one (with a dozen training walkers the network part re-fits them);
    # ``adapted`` the parameters the inner loop changes (``maml.adapt``) and the rates
    meta_learn: Literal["all", "rates", "adapted"] = "all"
    val_every: int = 50
    val_max_tasks: int = 24
    finetune_lrs: Tuple[float, ...] = (3e-4, 1e-3, 3e-3, 1e-2)
    scratch_lrs: Tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    # MAML's starting inner-rate multipliers tried per support size (with maml.shot_sizes) on validation
    inner_lr_scales: Tuple[float, ...] = (1.0,)
    adapt_optimizer: str = "adam"  # fine-tuning and scratch baselines; MAML uses its own SGD inner loop
    # With the soft-DTW term (``loss``): 0 adds it to pooled training from the start; N > 0 trains the pooled
    # model on MSE, then N more steps with the term at ``shape_lr`` (it sharpens a converged model; from the
    # start it costs MSE)
    shape_steps: int = 0
    shape_lr: float = 3e-4
    reference_steps: int = 150
    reference_lr: float = 1e-3
    reference_batch: int = 32
    seed: int = 0


@dataclass
class PersonalizationConfig:
    problems: Tuple[str, ...] = ("generation", "reconstruction")
    data: CycleSetConfig = field(default_factory=CycleSetConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    sampler: TaskSamplerConfig = field(default_factory=TaskSamplerConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    tcn: TCNConfig = field(default_factory=lambda: TCNConfig(hidden_channels=32, levels=5, film=True))
    maml: MAMLConfig = field(default_factory=lambda: MAMLConfig(inner_steps=5, inner_lr=0.01, first_order=True))
    train: PersonalizationTrainConfig = field(default_factory=PersonalizationTrainConfig)
    loss: CycleLossConfig = field(default_factory=CycleLossConfig)  # see personalization.loss
    model_base: str = "template"  # see personalization.model.CycleModelConfig.base
    # A problem's TCN width where it differs from ``tcn.hidden_channels``: measured over 3 seeds x 3 folds, a
    # twice as wide network reconstructs better with every method, and generates no better at 5 shots
    # (docs/results/personalization_width.md)
    tcn_width_by_problem: Dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.tcn_width_by_problem) - set(PROBLEMS)
        if unknown:
            raise ValueError(f"tcn_width_by_problem: unknown problems {sorted(unknown)}; known: {list(PROBLEMS)}")
        bad = {k: v for k, v in self.tcn_width_by_problem.items() if int(v) < 1}
        if bad:
            raise ValueError(f"tcn_width_by_problem: widths must be >= 1, got {bad}")

    def tcn_for(self, problem: str) -> TCNConfig:
        """The TCN of ``problem``'s model."""
        width = self.tcn_width_by_problem.get(problem)
        return self.tcn if width is None else replace(self.tcn, hidden_channels=int(width))
