"""Neural network models (imports torch)."""

from __future__ import annotations

from metagait_edge.models.tcn import (
    ADAPT_KINDS,
    TCN,
    FiLM,
    TCNConfig,
    build_tcn,
    circular_pad,
    edge_pad,
    count_parameters,
    fold_weight_norm,
    fold_weight_norm_params,
    load_folded_params,
    stable_name,
)

__all__ = [
    "ADAPT_KINDS",
    "TCN",
    "FiLM",
    "TCNConfig",
    "build_tcn",
    "circular_pad",
    "edge_pad",
    "count_parameters",
    "fold_weight_norm",
    "fold_weight_norm_params",
    "load_folded_params",
    "stable_name",
]
