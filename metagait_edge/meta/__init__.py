"""Meta-learning: MAML / MAML++ / ANIL on functional calls, and the fine-tuning baseline."""

from __future__ import annotations

from metagait_edge.meta.maml import (
    MAML,
    Batch,
    Episode,
    LossFn,
    MAMLConfig,
    adapt,
    batch_loss,
    finetune,
    functional_forward,
    model_params,
    multi_step_weights,
    size_slot,
)

__all__ = [
    "MAML",
    "Batch",
    "Episode",
    "LossFn",
    "MAMLConfig",
    "adapt",
    "batch_loss",
    "finetune",
    "functional_forward",
    "model_params",
    "multi_step_weights",
    "size_slot",
]
