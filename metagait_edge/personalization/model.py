"""The personalization network: a whole-cycle TCN that corrects the walker's personal template."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List

import torch
from torch import Tensor, nn

from metagait_edge.models.tcn import TCN, TCNConfig
from metagait_edge.personalization.inputs import PROBLEMS


BASES = ("template", "mix")


@dataclass
class CycleModelConfig:
    """``base``: what the network corrects. ``template``: the personal template. ``mix`` (generation): a
    learned per-channel blend of the template and the previous cycle, ``t + sigmoid(a) * (prev - t)``, so the
    network starts between the support-mean and copy-previous baselines and the blend itself can adapt."""

    problem: str = "generation"
    channels: int = 42
    tcn: TCNConfig = field(default_factory=lambda: TCNConfig(hidden_channels=48, levels=5, film=True))
    base: str = "template"

    def __post_init__(self) -> None:
        if self.problem not in PROBLEMS:
            raise ValueError(f"problem must be one of {PROBLEMS}, got {self.problem!r}")
        if self.base not in BASES:
            raise ValueError(f"base must be one of {BASES}, got {self.base!r}")
        if self.base == "mix" and self.problem != "generation":
            raise ValueError("base 'mix' blends in the previous cycle, which only generation has")


class CycleModel(nn.Module):
    """``forward(x[B, 3C, L]) -> {"output": template + TCN(x)}`` (see ``personalization.inputs``)."""

    def __init__(self, config: CycleModelConfig):
        super().__init__()
        self.config = config
        c = config.channels
        tcn_config = replace(config.tcn, in_channels=3 * c, out_channels=c, mask_input=False, residual_output=False)
        self.tcn = TCN(tcn_config)
        # Start as the support-mean baseline: learning adds only what the inputs reveal beyond the template.
        nn.init.zeros_(self.tcn.head.weight)
        nn.init.zeros_(self.tcn.head.bias)
        offset = c if config.problem == "generation" else 2 * c
        self._template = slice(offset, offset + c)
        if config.base == "mix":
            self.blend_logit = nn.Parameter(torch.zeros(1, c, 1))

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        expected = 3 * self.config.channels
        if x.dim() != 3 or x.shape[1] != expected:
            raise ValueError(f"CycleModel expects input [batch, {expected}, time], got {tuple(x.shape)}")
        template = x[:, self._template]
        base = template
        if self.config.base == "mix":
            base = template + torch.sigmoid(self.blend_logit) * (x[:, : self.config.channels] - template)
        return {"output": base + self.tcn(x)["output"]}

    def adaptation_parameter_names(self, kind: str = "all") -> List[str]:
        names = ["tcn." + n for n in self.tcn.adaptation_parameter_names(kind)]
        return names + (["blend_logit"] if self.config.base == "mix" else [])
