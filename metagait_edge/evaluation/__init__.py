"""Evaluation protocols (NumPy only; no torch import)."""

from __future__ import annotations

from metagait_edge.evaluation.recognition import (
    RecognitionResult,
    average_precision,
    cross_view_evaluate,
    distance_matrix,
    evaluate_casia_b,
    evaluate_ou_mvlp,
    exclude_identical_view_mean,
    format_result,
)

__all__ = [
    "RecognitionResult",
    "average_precision",
    "cross_view_evaluate",
    "distance_matrix",
    "evaluate_casia_b",
    "evaluate_ou_mvlp",
    "exclude_identical_view_mean",
    "format_result",
]
