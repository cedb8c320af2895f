"""The training loss of the cycle models: MSE, plus a soft-DTW shape term when configured.

The evaluation scores MSE and DTW. Trained on MSE alone a network predicts the average of the timings it
cannot foresee, a cycle whose peaks are blunted; DTW, which forgives timing but not amplitude, then
prefers a raw cycle (copying the previous one) to it. The soft-DTW divergence rewards the right shape
wherever it falls in time, and the MSE term keeps the timing.

Where it applies (``metagait_edge.personalization.train``): conventional training of the pooled model, the
personal reference, and MAML's meta (query) loss. Adaptation on a support set (MAML's inner loop,
fine-tuning, training from scratch, the on-device calibration) stays on MSE: every adapting method then
minimizes the same support loss, and a calibration on the device costs no soft-DTW recursion. With
``train.shape_steps`` the pooled model is first trained on MSE alone and the term joins for a last phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor

from metagait_edge.meta.maml import LossFn
from metagait_edge.metrics.masked import masked_mse
from metagait_edge.metrics.soft_dtw import soft_dtw_divergence


@dataclass
class CycleLossConfig:
    sdtw_weight: float = 0.0  # 0: plain MSE
    sdtw_gamma: float = 0.1  # soft-minimum temperature, in units of the per-sample (mean over channels) cost
    sdtw_points: int = 0  # resample cycles to this length for the soft-DTW term (0: as they are)

    def __post_init__(self) -> None:
        if self.sdtw_weight < 0 or self.sdtw_gamma <= 0 or self.sdtw_points < 0 or self.sdtw_points == 1:
            raise ValueError(f"loss: sdtw_weight must be >= 0, sdtw_gamma > 0 and sdtw_points 0 or >= 2, got {self}")


def cycle_loss(config: CycleLossConfig) -> LossFn:
    """``loss(prediction, target, mask) -> scalar`` for ``config``."""
    if config.sdtw_weight == 0:
        return masked_mse

    def mse_and_shape(pred: Tensor, target: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        shape = soft_dtw_divergence(pred, target, mask, config.sdtw_gamma, config.sdtw_points).mean()
        return masked_mse(pred, target, mask) + config.sdtw_weight * shape

    return mse_and_shape
