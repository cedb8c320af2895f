"""Gait recognition evaluation: distance matrices, cross-view rank-1 tables and mAP (CASIA-B, OU-MVLP).

Inputs are embeddings [N, P, D] (P strips; a [N, D] array is one strip) and per-sequence metadata arrays
``ids`` (subject), ``types`` (sequence type such as ``"nm-01"`` or ``"00"``) and ``views`` (such as
``"090"``). Nothing here needs torch; tensors are converted with ``numpy.asarray``.

Definitions
-----------
* **Distance** between two sequences: the metric computed per strip, averaged over strips. ``euclidean``
  is the L2 distance; ``cosine`` is ``1 - cos`` of the L2-normalized strip vectors.
* **Rank-1 (probe view p, gallery view g)**: among the probes of view p, the fraction whose nearest
  gallery sequence of view g (by the distance above) has the probe's identity.
* **Cross-view rank-1 of probe view p**: mean over the gallery views g != p (identical views excluded,
  10 views on CASIA-B, 13 on OU-MVLP). The condition's accuracy is the mean over probe views.
* **mAP**: for each probe, rank the gallery sequences whose view differs from the probe's (identical
  view excluded, like rank-1) by ascending distance; with R relevant sequences (same identity) at ranks
  k_1 < ... < k_R, ``AP = (1/R) * sum_i i / k_i`` (precision at each relevant hit). mAP is the mean over
  probes; probes with no relevant gallery sequence (R = 0) have no defined AP and are left out.
* **Probes whose identity is missing from a gallery view** (happens on OU-MVLP): by default they count
  as misses, which is what OpenGait/GaitSet's evaluators do (the accuracy divides by all probes of the
  view). ``missing="exclude"`` drops them from that (probe view, gallery view) cell instead, the
  convention of papers that report "excluding invalid probe sequences".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

import numpy as np

Metric = Literal["euclidean", "cosine"]

CASIA_B_VIEWS = tuple(f"{a:03d}" for a in range(0, 181, 18))
CASIA_B_GALLERY = ("nm-01", "nm-02", "nm-03", "nm-04")
CASIA_B_PROBES = {"NM": ("nm-05", "nm-06"), "BG": ("bg-01", "bg-02"), "CL": ("cl-01", "cl-02")}
OU_MVLP_VIEWS = tuple(f"{a:03d}" for a in list(range(0, 91, 15)) + list(range(180, 271, 15)))
OU_MVLP_GALLERY = ("01",)
OU_MVLP_PROBES = {"NM": ("00",)}


def _as_embeddings(x, name: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name}: embeddings must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, None, :]
    if arr.ndim != 3:
        raise ValueError(f"{name}: embeddings must be [N, P, D] or [N, D], got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: no embeddings (N = 0)")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: embeddings contain NaN or infinite values")
    return arr.astype(np.float64, copy=False)


def distance_matrix(probe, gallery, metric: Metric = "euclidean") -> np.ndarray:
    """[N, P, D] x [M, P, D] -> [N, M] distances, the per-strip metric averaged over strips."""
    a = _as_embeddings(probe, "probe")
    b = _as_embeddings(gallery, "gallery")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"probe embeddings {a.shape[1:]} and gallery embeddings {b.shape[1:]} differ in [P, D]")
    a = a.transpose(1, 0, 2)  # [P, N, D]
    b = b.transpose(1, 0, 2)
    if metric == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
        return 1.0 - np.matmul(a, b.transpose(0, 2, 1)).mean(0)
    if metric == "euclidean":
        sq = (a * a).sum(-1)[:, :, None] + (b * b).sum(-1)[:, None, :] - 2.0 * np.matmul(a, b.transpose(0, 2, 1))
        return np.sqrt(np.maximum(sq, 0.0)).mean(0)
    raise ValueError(f"unknown metric {metric!r}; use 'euclidean' or 'cosine'")


def average_precision(distances: np.ndarray, relevant: np.ndarray) -> float:
    """AP of one probe: ``distances`` [M] to the gallery, ``relevant`` [M] bool; NaN when nothing is relevant.

    Ties are broken by gallery order (stable sort).
    """
    relevant = np.asarray(relevant, dtype=bool)
    n_rel = int(relevant.sum())
    if n_rel == 0:
        return float("nan")
    order = np.argsort(np.asarray(distances), kind="stable")
    hits = relevant[order]
    ranks = np.flatnonzero(hits) + 1  # 1-based ranks of the relevant items
    return float(np.mean(np.arange(1, n_rel + 1) / ranks))


@dataclass
class RecognitionResult:
    """Rank-1 tables and mAP per probe condition.

    ``tables[cond]`` is [V, V] rank-1 in % (rows probe views, columns gallery views, NaN where a cell has
    no probe or no gallery); ``per_view[cond]`` [V] is the identical-view-excluded mean of each row;
    ``mean[cond]`` is the mean of ``per_view``; ``map[cond]`` is mAP in %.
    """

    dataset: str
    views: tuple[str, ...]
    tables: dict[str, np.ndarray] = field(default_factory=dict)
    per_view: dict[str, np.ndarray] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)
    map: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        out = {f"rank1/{c}": v for c, v in self.mean.items()}
        out.update({f"mAP/{c}": v for c, v in self.map.items()})
        return out


def exclude_identical_view_mean(table: np.ndarray) -> np.ndarray:
    """Row means of a [V, V] table over the off-diagonal cells (NaN cells ignored)."""
    table = np.array(table, dtype=np.float64)
    np.fill_diagonal(table, np.nan)
    with np.errstate(invalid="ignore"):
        counts = np.sum(~np.isnan(table), axis=1)
        sums = np.nansum(table, axis=1)
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _metadata(values, name: str, n: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D array with one entry per embedding ({n}), got shape {arr.shape}")
    return arr.astype(str)


def _sorted_views(views: np.ndarray) -> tuple[str, ...]:
    unique = sorted(set(views.tolist()))
    try:
        return tuple(sorted(unique, key=float))
    except ValueError:
        return tuple(unique)


def cross_view_evaluate(
    embeddings,
    ids,
    types,
    views,
    gallery_types: Sequence[str],
    probe_types: Mapping[str, Sequence[str]],
    metric: Metric = "euclidean",
    view_order: Sequence[str] | None = None,
    missing: Literal["count", "exclude"] = "count",
    dataset: str = "custom",
) -> RecognitionResult:
    """Generic cross-view protocol: rank-1 per (probe view, gallery view) and mAP per probe condition."""
    emb = _as_embeddings(embeddings, "embeddings")
    n = emb.shape[0]
    ids = _metadata(ids, "ids", n)
    types = _metadata(types, "types", n)
    views = _metadata(views, "views", n)
    if missing not in ("count", "exclude"):
        raise ValueError(f"missing must be 'count' or 'exclude', got {missing!r}")
    order = tuple(str(v) for v in view_order) if view_order is not None else _sorted_views(views)
    unknown_views = sorted(set(views.tolist()) - set(order))
    if unknown_views:
        raise ValueError(f"views {unknown_views} are not in the protocol's views {list(order)}")
    gallery_mask = np.isin(types, list(gallery_types))
    if not gallery_mask.any():
        raise ValueError(f"no gallery sequences: none of the types is in {list(gallery_types)} "
                         f"(types present: {sorted(set(types.tolist()))})")
    result = RecognitionResult(dataset=dataset, views=order)
    g_idx = np.flatnonzero(gallery_mask)
    for cond, cond_types in probe_types.items():
        p_idx = np.flatnonzero(np.isin(types, list(cond_types)))
        if p_idx.size == 0:
            raise ValueError(f"probe condition {cond}: no sequences of types {list(cond_types)}")
        dist = distance_matrix(emb[p_idx], emb[g_idx], metric)
        p_ids, p_views = ids[p_idx], views[p_idx]
        g_ids, g_views = ids[g_idx], views[g_idx]
        table = np.full((len(order), len(order)), np.nan)
        for i, pv in enumerate(order):
            rows = np.flatnonzero(p_views == pv)
            if rows.size == 0:
                continue
            for j, gv in enumerate(order):
                cols = np.flatnonzero(g_views == gv)
                if cols.size == 0:
                    continue
                probe_rows = rows
                if missing == "exclude":
                    probe_rows = rows[np.isin(p_ids[rows], g_ids[cols])]
                    if probe_rows.size == 0:
                        continue
                nearest = cols[np.argmin(dist[np.ix_(probe_rows, cols)], axis=1)]
                table[i, j] = 100.0 * np.mean(g_ids[nearest] == p_ids[probe_rows])
        aps = []
        for r in range(p_idx.size):
            cols = np.flatnonzero(g_views != p_views[r])
            ap = average_precision(dist[r, cols], g_ids[cols] == p_ids[r])
            if not np.isnan(ap):
                aps.append(ap)
        result.tables[cond] = table
        result.per_view[cond] = exclude_identical_view_mean(table)
        result.mean[cond] = float(np.nanmean(result.per_view[cond])) if np.any(~np.isnan(result.per_view[cond])) \
            else float("nan")
        result.map[cond] = 100.0 * float(np.mean(aps)) if aps else float("nan")
    return result


def evaluate_casia_b(embeddings, ids, types, views, metric: Metric = "euclidean") -> RecognitionResult:
    """CASIA-B: gallery nm-01..04; probes NM (nm-05, 06), BG (bg-01, 02), CL (cl-01, 02); 11 views."""
    return cross_view_evaluate(embeddings, ids, types, views, CASIA_B_GALLERY, CASIA_B_PROBES, metric,
                               view_order=CASIA_B_VIEWS, missing="count", dataset="CASIA-B")


def evaluate_ou_mvlp(embeddings, ids, types, views, metric: Metric = "euclidean",
                     missing: Literal["count", "exclude"] = "count") -> RecognitionResult:
    """OU-MVLP: gallery sequence 01, probe sequence 00, 14 views; see the module doc for ``missing``."""
    return cross_view_evaluate(embeddings, ids, types, views, OU_MVLP_GALLERY, OU_MVLP_PROBES, metric,
                               view_order=OU_MVLP_VIEWS, missing=missing, dataset="OU-MVLP")


def _fmt(v: float, width: int) -> str:
    return f"{'-':>{width}}" if np.isnan(v) else f"{v:>{width}.1f}"


def format_result(result: RecognitionResult, full_tables: bool = False) -> str:
    """Text table like the paper's Table 1: one row per condition, rank-1 per probe view, mean, mAP.

    With ``full_tables`` the [probe view x gallery view] matrix of every condition follows.
    """
    w = max(7, max(len(v) for v in result.views) + 2)
    lines = [f"{result.dataset} rank-1 accuracy (%) per probe view, identical views excluded"]
    header = f"{'probe':<6}" + "".join(f"{v:>{w}}" for v in result.views) + f"{'mean':>{w + 1}}{'mAP':>{w + 1}}"
    lines.append(header)
    for cond in result.tables:
        row = f"{cond:<6}" + "".join(_fmt(v, w) for v in result.per_view[cond])
        row += _fmt(result.mean[cond], w + 1) + _fmt(result.map[cond], w + 1)
        lines.append(row)
    if full_tables:
        for cond, table in result.tables.items():
            lines.append("")
            lines.append(f"{cond}: rows probe view, columns gallery view (diagonal = identical view, excluded)")
            lines.append(f"{'p/g':<6}" + "".join(f"{v:>{w}}" for v in result.views))
            for i, pv in enumerate(result.views):
                lines.append(f"{pv:<6}" + "".join(_fmt(v, w) for v in table[i]))
    return "\n".join(lines)
