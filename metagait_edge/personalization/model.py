"""The personalization network: a whole-cycle TCN that corrects the walker's personal template."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List

import torch
from torch import Tensor, nn

from metagait_edge.models.tcn import TCN, TCNConfig
from metagait_edge.personalization.inputs import PROBLEMS


@dataclass
class CycleModelConfig:
    problem: str = "generation"
    channels: int = 42
    tcn: TCNConfig = field(default_factory=lambda: TCNConfig(hidden_channels=48, levels=5, film=True))

    def __post_init__(self) -> None:
        if self.problem not in PROBLEMS:
            raise ValueError(f"problem must be one of {PROBLEMS}, got {self.problem!r}")


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

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        expected = 3 * self.config.channels
        if x.dim() != 3 or x.shape[1] != expected:
            raise ValueError(f"CycleModel expects input [batch, {expected}, time], got {tuple(x.shape)}")
        return {"output": x[:, self._template] + self.tcn(x)["output"]}

    def adaptation_parameter_names(self, kind: str = "all") -> List[str]:
        return ["tcn." + n for n in self.tcn.adaptation_parameter_names(kind)]
