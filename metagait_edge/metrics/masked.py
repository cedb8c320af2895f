"""Errors over valid entries only: gait cycles carry a per-channel (or per-sample) validity mask.

A mask is ``[batch, channels]`` (a sensor is present or not for the whole cycle) or
``[batch, channels, time]`` (individual samples missing); nonzero means valid. Invalid target values
may be NaN: they never reach the arithmetic.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import Tensor


def expand_mask(mask: Optional[Tensor], target: Tensor) -> Tensor:
    """``mask`` as a float tensor shaped like ``target`` (all ones when ``mask`` is None)."""
    if mask is None:
        return torch.ones_like(target)
    if target.dim() != 3:
        raise ValueError(f"target must be [batch, channels, time], got {tuple(target.shape)}")
    if mask.dim() == 2 and tuple(mask.shape) == tuple(target.shape[:2]):
        mask = mask[:, :, None].expand(target.shape)
    elif tuple(mask.shape) != tuple(target.shape):
        raise ValueError(
            f"mask must be [batch, channels] {tuple(target.shape[:2])} or [batch, channels, time] "
            f"{tuple(target.shape)}, got {tuple(mask.shape)}"
        )
    return (mask != 0).to(target.dtype)


def _safe_target(target: Tensor, m: Tensor) -> Tensor:
    # NaN in invalid entries would survive err * 0 (and poison gradients even through torch.where on the
    # error), so invalid targets are replaced before any arithmetic touches them.
    return torch.where(m > 0, target, torch.zeros_like(target))


def _masked_sum(err: Tensor, m: Tensor, reduction: str) -> Tensor:
    err = torch.where(m > 0, err, torch.zeros_like(err))
    if reduction == "mean":
        return err.sum() / m.sum().clamp(min=1.0)
    if reduction == "per_sample":
        return err.flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=1.0)
    if reduction == "per_channel":
        return err.sum(dim=(0, 2)) / m.sum(dim=(0, 2)).clamp(min=1.0)
    if reduction == "sum":
        return err.sum()
    raise ValueError(f"unknown reduction {reduction!r}; expected mean, per_sample, per_channel or sum")


Reduction = Literal["mean", "per_sample", "per_channel", "sum"]


def masked_mse(pred: Tensor, target: Tensor, mask: Optional[Tensor] = None, reduction: Reduction = "mean") -> Tensor:
    """Mean squared error over valid entries.

    ``reduction``: ``mean`` (one scalar over all valid entries), ``per_sample`` ([batch]),
    ``per_channel`` ([channels]) or ``sum``. Groups with no valid entry give 0 (not NaN), so a fully
    masked channel cannot poison a meta-gradient.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    m = expand_mask(mask, target)
    return _masked_sum((pred - _safe_target(target, m)) ** 2, m, reduction)


def masked_mae(pred: Tensor, target: Tensor, mask: Optional[Tensor] = None, reduction: Reduction = "mean") -> Tensor:
    """Mean absolute error over valid entries (same conventions as :func:`masked_mse`)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    m = expand_mask(mask, target)
    return _masked_sum((pred - _safe_target(target, m)).abs(), m, reduction)


def masked_rmse(pred: Tensor, target: Tensor, mask: Optional[Tensor] = None, reduction: Reduction = "mean") -> Tensor:
    return masked_mse(pred, target, mask, reduction).sqrt()
