"""Multivariate dynamic time warping between gait cycles, with one warping path shared by all channels.

Definitions (they match ``dtaidistance.dtw_ndim`` exactly, verified against a direct O(n*m) NumPy
recursion in ``tests/test_dtw.py``):

* local cost of aligning sample ``i`` of ``a`` with sample ``j`` of ``b``: the *squared* Euclidean
  distance over the included channels, ``c(i, j) = sum_k (a[k, i] - b[k, j])**2``;
* ``D`` is the minimum over monotone, continuous warping paths from ``(0, 0)`` to ``(n-1, m-1)`` of the
  summed local costs; ``distance = sqrt(D)`` (dtaidistance returns the square root, not ``D``);
* ``path_length`` is the number of aligned pairs on the optimal path (``max(n, m) <= L <= n + m - 1``);
* ``normalized = distance / path_length`` (the usual path-length normalisation of the raw distance);
* ``rms = sqrt(D / (path_length * channels))``, a per-aligned-value RMS comparable to an RMSE.

Channels masked as invalid in either cycle are dropped before the computation, so a missing sensor
never contributes to the distance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from dtaidistance import dtw, dtw_ndim

try:  # the C extension is ~100x faster; the pure-Python fallback gives identical numbers
    from dtaidistance import dtw_cc  # noqa: F401

    _USE_C = True
except ImportError:  # pragma: no cover - depends on the dtaidistance build
    _USE_C = False


@dataclass(frozen=True)
class DTWResult:
    distance: float
    path_length: int
    normalized: float
    rms: float
    n_channels: int
    path: Optional[List[Tuple[int, int]]] = None


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _channel_mask(mask: Any, n_channels: int, where: str) -> np.ndarray:
    if mask is None:
        return np.ones(n_channels, dtype=bool)
    m = _to_numpy(mask)
    if m.ndim == 2:  # per-sample mask: a channel counts only if every sample of it is valid
        m = (m != 0).all(axis=1)
    if m.shape != (n_channels,):
        raise ValueError(f"{where}: mask must be [channels] or [channels, time] with {n_channels} channels, got {m.shape}")
    return m != 0


def dtw_distance(
    a: Any,
    b: Any,
    mask: Any = None,
    window: Optional[int] = None,
    return_path: bool = False,
    where: str = "dtw",
) -> DTWResult:
    """DTW between two cycles ``a [channels, n]`` and ``b [channels, m]`` (channels first, as in the data).

    ``mask`` (``[channels]`` or ``[channels, time]``, nonzero = valid) selects the channels compared;
    pass the AND of both cycles' masks. ``window`` is an optional Sakoe-Chiba band half-width.
    """
    a = _to_numpy(a)
    b = _to_numpy(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"{where}: expected [channels, time] arrays with equal channels, got {a.shape} and {b.shape}")
    keep = _channel_mask(mask, a.shape[0], where)
    if not keep.any():
        raise ValueError(f"{where}: every channel is masked out; nothing to compare")
    # dtaidistance wants [time, channels] float64 C-contiguous arrays.
    sa = np.ascontiguousarray(a[keep].T, dtype=np.float64)
    sb = np.ascontiguousarray(b[keep].T, dtype=np.float64)
    if not (np.isfinite(sa).all() and np.isfinite(sb).all()):
        raise ValueError(f"{where}: non-finite values in unmasked channels")
    kwargs: Dict[str, Any] = {"use_c": _USE_C}
    if window is not None:
        kwargs["window"] = int(window)
    if sa.shape[1] == 1:
        # dtaidistance's n-dim C path code rejects a single channel; its 1-D DTW has the same definition.
        sa, sb, impl = np.ascontiguousarray(sa[:, 0]), np.ascontiguousarray(sb[:, 0]), dtw
    else:
        impl = dtw_ndim
    distance = float(impl.distance(sa, sb, **kwargs))
    path = [(int(i), int(j)) for i, j in impl.warping_path(sa, sb, **kwargs)]
    length = len(path)
    n_ch = int(keep.sum())
    return DTWResult(
        distance=distance,
        path_length=length,
        normalized=distance / length,
        rms=float(np.sqrt(distance**2 / (length * n_ch))),
        n_channels=n_ch,
        path=path if return_path else None,
    )


def batch_dtw(pred: Any, target: Any, mask: Any = None, window: Optional[int] = None) -> Dict[str, np.ndarray]:
    """DTW per sample of ``pred`` and ``target`` (``[batch, channels, time]``), ``mask`` ``[batch, channels]``
    or ``[batch, channels, time]``. Returns arrays ``distance``, ``path_length``, ``normalized``, ``rms``."""
    p = _to_numpy(pred)
    t = _to_numpy(target)
    if p.ndim != 3 or p.shape != t.shape:
        raise ValueError(f"batch_dtw: prediction {p.shape} and target {t.shape} must both be [batch, channels, time]")
    m = None if mask is None else _to_numpy(mask)
    if m is not None and m.shape[0] != p.shape[0]:
        raise ValueError(f"batch_dtw: mask batch {m.shape[0]} != prediction batch {p.shape[0]}")
    rows = [
        dtw_distance(p[i], t[i], None if m is None else m[i], window=window, where=f"batch_dtw sample {i}")
        for i in range(p.shape[0])
    ]
    return {
        "distance": np.array([r.distance for r in rows]),
        "path_length": np.array([r.path_length for r in rows]),
        "normalized": np.array([r.normalized for r in rows]),
        "rms": np.array([r.rms for r in rows]),
    }
