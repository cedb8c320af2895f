"""Error metrics for gait cycles: masked point-wise errors (torch) and multivariate DTW (NumPy)."""

from __future__ import annotations

from metagait_edge.metrics.dtw import DTWResult, batch_dtw, dtw_distance
from metagait_edge.metrics.masked import expand_mask, masked_mae, masked_mse, masked_rmse

__all__ = ["DTWResult", "batch_dtw", "dtw_distance", "expand_mask", "masked_mae", "masked_mse", "masked_rmse"]
