"""Walker gallery for the runtime: enroll walkers, identify an embedding, reject unknown walkers.

Embeddings are the recognition model's ``embeddings`` output, [P, D] per sequence (P strips). Every
enrolled sequence is stored L2-normalized per strip; the distance between two sequences is the evaluator's
(``metagait_edge.recognition.metrics.distance_matrix``): the per-strip metric averaged over strips.

* ``mode="mean"``: a walker's template is the per-strip renormalized mean of their sequences.
* ``mode="all"`` (the default): every sequence is a template (views, passes; each with a label saying where
  it came from); a walker's distance is the minimum over their templates. The shipped thresholds are fitted
  for this mode.

Open-set rejection: ``identify`` accepts the nearest walker only if its distance is <= ``threshold`` and no
other walker is within the threshold too (that answer is *uncertain*: rejected); without a threshold
(``threshold=None``, the default) nobody is accepted: an uncalibrated gallery cannot tell an enrolled walker
from a stranger, and a stranger must not get someone else's personalized model. ``fit_threshold`` picks the
threshold from genuine / impostor distances for a target false accept rate; a recognition checkpoint carries
the one fitted on its validation identities (:class:`OpenSetThreshold`, in its JSON sidecar), which
:meth:`Gallery.use_model` adopts.

Embeddings of two models are not comparable: a gallery records the fingerprint of the model that made its
templates and refuses any other model (:meth:`Gallery.use_model`).
The gallery persists atomically to one safetensors file (all templates + JSON metadata: fingerprint,
threshold and where it came from, template labels) and survives restarts and crashes mid-write; a corrupt,
foreign or older file raises :class:`GalleryError` naming the file.

NumPy + safetensors only; no torch import.
"""

from __future__ import annotations

import dataclasses
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
VERSION = 2  # 2: model fingerprint, threshold source and template labels
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
    reason: str = ""  # why it was rejected ("" when accepted)


@dataclass(frozen=True)
class OpenSetThreshold:
    """The open-set rule fitted for one recognition model (stored in its checkpoint sidecar, ``extra.open_set``).

    ``threshold`` applies to ``metric`` distances in a gallery of ``mode``; it was fitted for ``target_far`` on
    the identities ``fitted_on`` names (never the test identities), where it gave ``val_far`` / ``val_frr``
    (0-1; ``eer`` threshold-free). ``model_fingerprint`` ties it to the weights it was fitted for.
    """

    threshold: float
    metric: str
    mode: str
    target_far: float
    model_fingerprint: str
    fitted_on: str
    val_far: float
    val_frr: float
    eer: float
    n_genuine: int
    n_impostor: int
    command: str = ""
    created: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.threshold, (int, float)) and math.isfinite(self.threshold) and self.threshold >= 0):
            raise GalleryError(f"open-set threshold must be a finite number >= 0, got {self.threshold!r}")
        if self.metric not in ("cosine", "euclidean") or self.mode not in ("mean", "all"):
            raise GalleryError(f"open-set threshold: metric {self.metric!r} / mode {self.mode!r} unknown")
        if not self.model_fingerprint:
            raise GalleryError("open-set threshold: no model fingerprint (which weights was it fitted for?)")

    def describe(self) -> str:
        return (f"{self.threshold:.6g} ({self.metric}, {self.mode} templates) fitted for FAR {100 * self.target_far:g} % "
                f"on {self.fitted_on}: FAR {100 * self.val_far:.1f} %, FRR {100 * self.val_frr:.1f} %")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw, where: str) -> "OpenSetThreshold":
        if not isinstance(raw, dict):
            raise GalleryError(f"{where}: open-set threshold record must be a mapping, got {type(raw).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        unknown, missing = sorted(set(raw) - names), sorted(required - set(raw))
        if unknown or missing:
            raise GalleryError(f"{where}: open-set threshold record: "
                               + "; ".join(([f"missing {', '.join(missing)}"] if missing else [])
                                           + ([f"unknown {', '.join(unknown)}"] if unknown else [])))
        try:
            return cls(**raw)
        except GalleryError as exc:
            raise GalleryError(f"{where}: {exc}") from None


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

    def __init__(self, metric: Metric = "cosine", mode: Mode = "all", threshold: float | None = None,
                 model_fingerprint: str | None = None, threshold_source: str = "") -> None:
        if metric not in ("cosine", "euclidean"):
            raise GalleryError(f"gallery metric must be 'cosine' or 'euclidean', got {metric!r}")
        if mode not in ("mean", "all"):
            raise GalleryError(f"gallery mode must be 'mean' or 'all', got {mode!r}")
        self.metric = metric
        self.mode = mode
        self.threshold = None if threshold is None else float(threshold)
        self.threshold_source = threshold_source or ("" if threshold is None else "set by the caller")
        self.model_fingerprint = model_fingerprint  # the model that made the templates (None: not known yet)
        self._samples: dict[str, np.ndarray] = {}  # walker -> [N, P, D] per-strip normalized
        self._labels: dict[str, list[str]] = {}  # walker -> one label per template (pass, view, source)

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

    def labels(self, walker_id: str) -> list[str]:
        """Where each of ``walker_id``'s templates came from, in enrollment order."""
        return list(self._labels[walker_id])

    def use_model(self, fingerprint: str, calibrated: OpenSetThreshold | None = None, where: str = "gallery") -> None:
        """Bind the gallery to the model with ``fingerprint`` (the one that makes its embeddings) and, when the
        gallery has no threshold yet, adopt that model's ``calibrated`` open-set threshold.

        Refuses (:class:`GalleryError`) templates made by another model, templates of an unknown model, and
        a calibration fitted for other weights or another metric / template mode.
        """
        if self.model_fingerprint is None:
            if len(self):
                raise GalleryError(f"{where}: the gallery holds templates without a model fingerprint (made by an "
                                   f"unknown model): enroll the walkers again with this model (metagait-edge enroll)")
            self.model_fingerprint = fingerprint
        elif self.model_fingerprint != fingerprint:
            raise GalleryError(f"{where}: the gallery was enrolled with recognition model {self.model_fingerprint[:16]}, "
                               f"this model is {fingerprint[:16]}: embeddings of different models cannot be compared; "
                               f"enroll the walkers again with this model (metagait-edge enroll)")
        if calibrated is None or self.threshold is not None:
            return
        if calibrated.model_fingerprint != fingerprint:
            raise GalleryError(f"{where}: the model's open-set threshold was fitted for weights "
                               f"{calibrated.model_fingerprint[:16]}, not these ({fingerprint[:16]}): "
                               f"rerun metagait-edge calibrate-threshold")
        if not len(self):
            self.metric, self.mode = calibrated.metric, calibrated.mode  # type: ignore[assignment]
        if (self.metric, self.mode) != (calibrated.metric, calibrated.mode):
            raise GalleryError(f"{where}: the threshold was fitted for {calibrated.metric} distances to {calibrated.mode} "
                               f"templates, the gallery uses {self.metric} / {self.mode}")
        self.threshold = float(calibrated.threshold)
        self.threshold_source = calibrated.describe()

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

    def enroll(self, walker_id: str, embeddings, labels: str | list[str] = "") -> None:
        """Add one or more templates ([P, D] or [N, P, D]) of ``walker_id`` (appends if already enrolled);
        ``labels``: one per template, or one for all (where they came from: file, pass, frames)."""
        if not isinstance(walker_id, str) or not walker_id.strip():
            raise GalleryError(f"walker_id must be a non-empty string, got {walker_id!r}")
        arr = self._check(embeddings, f"enroll {walker_id!r}", single=False)
        names = [labels] * arr.shape[0] if isinstance(labels, str) else [str(x) for x in labels]
        if len(names) != arr.shape[0]:
            raise GalleryError(f"enroll {walker_id!r}: {len(names)} labels for {arr.shape[0]} templates")
        old = self._samples.get(walker_id)
        self._samples[walker_id] = arr if old is None else np.concatenate([old, arr])
        self._labels[walker_id] = self._labels.get(walker_id, []) + names

    def remove(self, walker_id: str) -> None:
        if walker_id not in self._samples:
            raise GalleryError(f"walker {walker_id!r} is not enrolled (enrolled: {self.walkers})")
        del self._samples[walker_id]
        del self._labels[walker_id]

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
        """Nearest walker, accepted only when its distance is <= ``threshold`` (never, when None) and no other
        walker's is (two walkers within the threshold: uncertain, rejected)."""
        per_walker = self.distances(embedding)
        if not per_walker:
            return Identification(None, math.inf, math.inf, None, "empty gallery")
        ranked = sorted(per_walker.items(), key=lambda kv: kv[1])
        nearest, distance = ranked[0]
        margin = ranked[1][1] - distance if len(ranked) > 1 else math.inf
        if self.threshold is None:
            reason = "no calibrated threshold"
        elif distance > self.threshold:
            reason = f"unknown: nearest {nearest} at {distance:.4g} > threshold {self.threshold:.4g}"
        elif len(ranked) > 1 and ranked[1][1] <= self.threshold:
            reason = f"uncertain: {nearest} and {ranked[1][0]} both within threshold {self.threshold:.4g}"
        else:
            return Identification(nearest, distance, margin, nearest)
        return Identification(None, distance, margin, nearest, reason)

    def calibrate(self, genuine, impostor, target_far: float) -> float:
        """Set ``threshold`` with :func:`fit_threshold` and return it."""
        self.threshold = fit_threshold(genuine, impostor, target_far)
        self.threshold_source = f"Gallery.calibrate for FAR {100 * target_far:g} % on {np.size(impostor)} impostor distances"
        return self.threshold

    # ---------------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the gallery atomically (a crash leaves the previous file intact)."""
        from safetensors.numpy import save_file

        walkers = self.walkers
        tensors = {f"walker_{i:06d}": np.ascontiguousarray(self._samples[w]) for i, w in enumerate(walkers)}
        meta = {"format": FORMAT, "version": VERSION, "metric": self.metric, "mode": self.mode,
                "threshold": self.threshold, "threshold_source": self.threshold_source,
                "model_fingerprint": self.model_fingerprint, "walkers": walkers,
                "labels": [self._labels[w] for w in walkers]}
        atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata={"gallery": json.dumps(meta)}))

    @classmethod
    def load(cls, path: str | os.PathLike, model_fingerprint: str | None = None) -> "Gallery":
        """Read a gallery written by :meth:`save`; raises :class:`GalleryError` naming a bad file, and, with
        ``model_fingerprint``, a gallery enrolled with another model (see :meth:`use_model`)."""
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
                                   f"(this code reads version {VERSION}; version 1 galleries do not say which model "
                                   f"made them: enroll the walkers again with metagait-edge enroll)")
            gallery = cls(metric=meta["metric"], mode=meta["mode"], threshold=meta["threshold"],
                          model_fingerprint=meta["model_fingerprint"], threshold_source=meta["threshold_source"])
            walkers, labels = meta["walkers"], meta["labels"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise GalleryError(f"gallery file {path}: unreadable metadata ({exc!r})") from exc
        if not len(walkers) == len(tensors) == len(labels):
            raise GalleryError(f"gallery file {path}: {len(walkers)} walkers and {len(labels)} label lists in metadata "
                               f"but {len(tensors)} arrays")
        for i, walker in enumerate(walkers):
            key = f"walker_{i:06d}"
            if key not in tensors:
                raise GalleryError(f"gallery file {path}: array {key} for walker {walker!r} is missing")
            try:
                gallery.enroll(walker, tensors[key], labels[i])
            except GalleryError as exc:
                raise GalleryError(f"gallery file {path}: walker {walker!r}: {exc}") from exc
        if model_fingerprint is not None:
            gallery.use_model(model_fingerprint, where=f"gallery file {path}")
        return gallery
