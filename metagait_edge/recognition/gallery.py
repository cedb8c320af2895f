"""Walker gallery for the runtime: enroll walkers, identify an embedding, reject unknown walkers.

Embeddings are the recognition model's ``embeddings`` output, [P, D] per sequence (P strips). Every
enrolled sequence is stored L2-normalized per strip; the distance between two sequences is the evaluator's
(``metagait_edge.recognition.metrics.distance_matrix``): the per-strip metric averaged over strips.

* ``mode="mean"``: a walker's template is the per-strip renormalized mean of their sequences.
* ``mode="all"``: every sequence is kept; a walker's distance is the minimum over their sequences.

Open-set rejection: ``identify`` accepts the nearest walker only if its distance is <= ``threshold``;
without a threshold (``threshold=None``, the default) nobody is accepted: an uncalibrated gallery cannot
tell an enrolled walker from a stranger, and a stranger must not get someone else's personalized model.
``fit_threshold`` / ``Gallery.calibrate`` pick the threshold from genuine / impostor distances for a
target false accept rate.
The gallery persists atomically to one safetensors file (all sequences + JSON metadata) and survives
restarts; a corrupt or foreign file raises :class:`GalleryError` naming the file.

NumPy + safetensors only; no torch import.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from metagait_edge.atomic import atomic_write_with
from metagait_edge.recognition.metrics import distance_matrix

FORMAT = "metagait-edge-gallery"
VERSION = 1
Metric = Literal["cosine", "euclidean"]
Mode = Literal["mean", "all"]


class GalleryError(ValueError):
    """Bad gallery input or a gallery file that cannot be read; the message names what and where."""


@dataclass(frozen=True)
class Identification:
    """Result of :meth:`Gallery.identify`.

    ``walker_id`` is the accepted walker or None (rejected / empty gallery); ``nearest_id`` is the nearest
    walker regardless of the threshold; ``margin`` is the second-nearest walker's distance minus the
    nearest one's (inf with fewer than two walkers): small margins mean an ambiguous identification.
    """

    walker_id: str | None
    distance: float
    margin: float
    nearest_id: str | None


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def far_frr_curve(genuine, impostor, thresholds=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False accept / false reject rates of the rule "accept when distance <= t".

    Returns ``(thresholds, far, frr)``; by default the thresholds are every distinct observed distance.
    FAR(t) = fraction of impostor distances <= t; FRR(t) = fraction of genuine distances > t.
    """
    g = _distances(genuine, "genuine")
    i = _distances(impostor, "impostor")
    t = np.unique(np.concatenate([g, i])) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    g_sorted, i_sorted = np.sort(g), np.sort(i)
    far = np.searchsorted(i_sorted, t, side="right") / i.size
    frr = 1.0 - np.searchsorted(g_sorted, t, side="right") / g.size
    return t, far, frr


def equal_error_rate(genuine, impostor) -> tuple[float, float]:
    """(EER, threshold) where FAR and FRR are closest on the observed thresholds."""
    t, far, frr = far_frr_curve(genuine, impostor)
    k = int(np.argmin(np.abs(far - frr)))
    return float((far[k] + frr[k]) / 2), float(t[k])


def fit_threshold(genuine, impostor, target_far: float) -> float:
    """The largest threshold whose FAR on ``impostor`` is <= ``target_far`` (accept when distance <= t).

    Larger thresholds accept more genuine attempts, so the largest admissible one minimizes FRR. The
    ``genuine`` distances are validated and only used by callers to report the resulting FRR.
    """
    _distances(genuine, "genuine")
    imp = np.sort(_distances(impostor, "impostor"))
    if not 0.0 <= target_far <= 1.0:
        raise GalleryError(f"target_far must be in [0, 1], got {target_far}")
    allowed = int(math.floor(target_far * imp.size + 1e-9))  # impostors that may be accepted
    if allowed >= imp.size:
        return float(imp[-1])
    # Everything strictly below the (allowed+1)-th smallest impostor distance: at most `allowed` accepted,
    # also when several impostor distances tie.
    return float(np.nextafter(imp[allowed], -np.inf))


def _distances(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise GalleryError(f"{name} distances are empty")
    if not np.isfinite(arr).all():
        raise GalleryError(f"{name} distances contain NaN or infinite values")
    return arr


class Gallery:
    """In-memory walker gallery with atomic persistence; see the module docstring."""

    def __init__(self, metric: Metric = "cosine", mode: Mode = "mean", threshold: float | None = None) -> None:
        if metric not in ("cosine", "euclidean"):
            raise GalleryError(f"gallery metric must be 'cosine' or 'euclidean', got {metric!r}")
        if mode not in ("mean", "all"):
            raise GalleryError(f"gallery mode must be 'mean' or 'all', got {mode!r}")
        self.metric = metric
        self.mode = mode
        self.threshold = None if threshold is None else float(threshold)
        self._samples: dict[str, np.ndarray] = {}  # walker -> [N, P, D] per-strip normalized

    # ---------------------------------------------------------------------------------------------

    @property
    def walkers(self) -> list[str]:
        return list(self._samples)

    @property
    def embedding_shape(self) -> tuple[int, int] | None:
        for arr in self._samples.values():
            return arr.shape[1], arr.shape[2]
        return None

    def __len__(self) -> int:
        return len(self._samples)

    def __contains__(self, walker_id: object) -> bool:
        return walker_id in self._samples

    def num_sequences(self, walker_id: str) -> int:
        return int(self._samples[walker_id].shape[0])

    def _check(self, embeddings, what: str, single: bool) -> np.ndarray:
        if hasattr(embeddings, "detach"):
            embeddings = embeddings.detach().cpu().numpy()
        arr = np.asarray(embeddings)
        if arr.dtype.kind not in "fiu":
            raise GalleryError(f"{what}: embeddings must be numeric, got dtype {arr.dtype}")
        arr = arr.astype(np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or (single and arr.shape[0] != 1):
            expected = "[P, D]" if single else "[P, D] or [N, P, D]"
            raise GalleryError(f"{what}: embeddings must be {expected}, got shape {np.asarray(embeddings).shape}")
        if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
            raise GalleryError(f"{what}: embeddings are empty (shape {arr.shape})")
        if not np.isfinite(arr).all():
            raise GalleryError(f"{what}: embeddings contain NaN or infinite values")
        if np.any(np.linalg.norm(arr, axis=-1) == 0):
            raise GalleryError(f"{what}: a strip embedding is all zeros and has no direction")
        shape = self.embedding_shape
        if shape is not None and arr.shape[1:] != shape:
            raise GalleryError(f"{what}: embeddings are [P, D] = {arr.shape[1:]}, the gallery holds {shape}")
        return _normalize(arr)

    def enroll(self, walker_id: str, embeddings) -> None:
        """Add one or more sequences ([P, D] or [N, P, D]) of ``walker_id`` (appends if already enrolled)."""
        if not isinstance(walker_id, str) or not walker_id.strip():
            raise GalleryError(f"walker_id must be a non-empty string, got {walker_id!r}")
        arr = self._check(embeddings, f"enroll {walker_id!r}", single=False)
        old = self._samples.get(walker_id)
        self._samples[walker_id] = arr if old is None else np.concatenate([old, arr])

    def remove(self, walker_id: str) -> None:
        if walker_id not in self._samples:
            raise GalleryError(f"walker {walker_id!r} is not enrolled (enrolled: {self.walkers})")
        del self._samples[walker_id]

    def templates(self) -> tuple[list[str], np.ndarray]:
        """(owner per row, [R, P, D] templates): one per walker (mean mode) or one per sequence (all)."""
        owners: list[str] = []
        rows = []
        for walker, arr in self._samples.items():
            if self.mode == "mean":
                owners.append(walker)
                rows.append(_normalize(arr.mean(0, keepdims=True)))
            else:
                owners += [walker] * arr.shape[0]
                rows.append(arr)
        if not rows:
            return owners, np.zeros((0, 0, 0), dtype=np.float32)
        return owners, np.concatenate(rows)

    def distances(self, embedding) -> dict[str, float]:
        """Distance from one sequence embedding [P, D] to every walker."""
        query = self._check(embedding, "identify", single=True)
        owners, templates = self.templates()
        if not owners:
            return {}
        d = distance_matrix(query, templates, self.metric)[0]
        best: dict[str, float] = {}
        for owner, value in zip(owners, d):
            if owner not in best or value < best[owner]:
                best[owner] = float(value)
        return best

    def identify(self, embedding) -> Identification:
        """Nearest walker, accepted only when its distance is <= ``threshold`` (never, when None)."""
        per_walker = self.distances(embedding)
        if not per_walker:
            return Identification(None, math.inf, math.inf, None)
        ranked = sorted(per_walker.items(), key=lambda kv: kv[1])
        nearest, distance = ranked[0]
        margin = ranked[1][1] - distance if len(ranked) > 1 else math.inf
        accepted = self.threshold is not None and distance <= self.threshold
        return Identification(nearest if accepted else None, distance, margin, nearest)

    def calibrate(self, genuine, impostor, target_far: float) -> float:
        """Set ``threshold`` with :func:`fit_threshold` and return it."""
        self.threshold = fit_threshold(genuine, impostor, target_far)
        return self.threshold

    # ---------------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the gallery atomically (a crash leaves the previous file intact)."""
        from safetensors.numpy import save_file

        walkers = self.walkers
        tensors = {f"walker_{i:06d}": np.ascontiguousarray(self._samples[w]) for i, w in enumerate(walkers)}
        meta = {"format": FORMAT, "version": VERSION, "metric": self.metric, "mode": self.mode,
                "threshold": self.threshold, "walkers": walkers}
        atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata={"gallery": json.dumps(meta)}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Gallery":
        """Read a gallery written by :meth:`save`; raises :class:`GalleryError` naming a bad file."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"gallery file not found: {path}")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as fh:
                raw = (fh.metadata() or {}).get("gallery")
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise GalleryError(f"gallery file {path} is corrupt or not a safetensors file: {exc}") from exc
        if raw is None:
            raise GalleryError(f"gallery file {path} has no gallery metadata (not written by Gallery.save)")
        try:
            meta = json.loads(raw)
            if meta.get("format") != FORMAT:
                raise GalleryError(f"gallery file {path}: format {meta.get('format')!r}, expected {FORMAT!r}")
            if meta.get("version") != VERSION:
                raise GalleryError(f"gallery file {path}: version {meta.get('version')!r} is not supported "
                                   f"(this code reads version {VERSION})")
            gallery = cls(metric=meta["metric"], mode=meta["mode"], threshold=meta["threshold"])
            walkers = meta["walkers"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise GalleryError(f"gallery file {path}: unreadable metadata ({exc!r})") from exc
        if len(walkers) != len(tensors):
            raise GalleryError(f"gallery file {path}: {len(walkers)} walkers in metadata but {len(tensors)} arrays")
        for i, walker in enumerate(walkers):
            key = f"walker_{i:06d}"
            if key not in tensors:
                raise GalleryError(f"gallery file {path}: array {key} for walker {walker!r} is missing")
            try:
                gallery.enroll(walker, tensors[key])
            except GalleryError as exc:
                raise GalleryError(f"gallery file {path}: walker {walker!r}: {exc}") from exc
        return gallery
