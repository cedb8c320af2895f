"""Walker identity from the worn IMUs: stride features, a session-robust embedding, an open-set identifier.

A stride (right-shank IC to IC, ``data.cycles``) becomes the six accelerometers (18 channels, g) resampled to
``points`` samples with each channel's own mean removed: the mean is mostly gravity seen through how the
sensor sat on the leg that day, which identifies the session rather than the walker. Gyroscopes are left out:
corrupted (x10, clipped) gyroscopes are common in HuGaDB and the runtime cannot tell which ones they are.

The embedding (``fit_embedding``) is linear and trained on walkers other than the ones it identifies:
PCA to ``dims`` directions, removal of the ``session_dims`` directions along which a walker's recordings
differ from each other (nuisance attribute projection over per-recording mean offsets), then whitening of
the within-walker scatter (WCCN), cosine distance. Scores are z-normalized per enrolled walker against a
cohort of strides of training walkers (``ImuIdentityModel.cohort``), so that one threshold fits every walker.

``ImuIdentifier`` enrolls walkers in a :class:`~metagait_edge.recognition.gallery.Gallery` (the mean of
their stride embeddings is their template) and accepts the nearest one only when its z-score is <= the
model's threshold, fitted on training walkers only (``recognition.imu_protocol``). NumPy + safetensors.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from metagait_edge.atomic import atomic_write_with
from metagait_edge.recognition.gallery import Gallery, GalleryError
from metagait_edge.sensors import IMU_CHANNELS

ACC_CHANNELS = tuple(c for c in IMU_CHANNELS if c.startswith("acc_"))  # the six worn accelerometers, x y z
FORMAT = "metagait-edge-imu-identity"
# z-units from the acceptance threshold (confidence 0.5) to full confidence (1.0): two standard deviations of the
# cohort's distances. At the shipped threshold (-4.7) about 7 in 10 genuine 5-stride identifications across
# sessions reach the runtime's confidence gate of 0.7 (z <= -5.5: 71 % of 194 runs of fold 0's held-out walkers,
# enrolled from calibration strides; median genuine z -6.9).
CONFIDENCE_SPAN_Z = 2.0
VERSION = 1


class ImuIdentityError(ValueError):
    """Bad strides, a bad model file or an unusable enrollment; the message names what and where."""


@dataclass(frozen=True)
class ImuEmbeddingConfig:
    points: int = 26  # samples per stride and channel (strides are smooth: 26 keep what 101 do)
    dims: int = 200  # PCA directions kept
    session_dims: int = 5  # directions of recording-to-recording change removed
    ridge: float = 1e-2  # within-walker scatter regularization, relative to its mean eigenvalue

    def __post_init__(self) -> None:
        if self.points < 4 or self.dims < 1 or self.session_dims < 0 or self.ridge <= 0:
            raise ValueError(f"invalid IMU embedding config {self}")


def stride_features(cycles: np.ndarray, channels: Sequence[str], points: int = 26) -> np.ndarray:
    """[N, C, P] cycles (physical units, ``channels`` naming C) -> [N, 18 * points] float32 features."""
    cycles = np.asarray(cycles, dtype=np.float64)
    if cycles.ndim == 2:
        cycles = cycles[None]
    if cycles.ndim != 3 or cycles.shape[1] != len(channels) or cycles.shape[2] < 2:
        raise ImuIdentityError(f"strides must be [N, {len(channels)} channels, P >= 2], got {cycles.shape}")
    missing = [c for c in ACC_CHANNELS if c not in channels]
    if missing:
        raise ImuIdentityError(f"strides lack the accelerometer channels {missing}")
    acc = cycles[:, [list(channels).index(c) for c in ACC_CHANNELS]]
    if not np.isfinite(acc).all():
        bad = np.flatnonzero(~np.isfinite(acc).all(axis=(1, 2)))
        raise ImuIdentityError(f"strides {bad[:5].tolist()} have non-finite accelerometer samples")
    pos = np.linspace(0.0, acc.shape[2] - 1.0, points)
    i0 = np.minimum(np.floor(pos).astype(int), acc.shape[2] - 2)
    f = pos - i0
    x = acc[..., i0] * (1.0 - f) + acc[..., i0 + 1] * f
    x -= x.mean(axis=-1, keepdims=True)  # the sensor's static tilt this session, not the walker
    return x.reshape(len(x), -1).astype(np.float32)


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class ImuEmbedding:
    """``normalize((features - mean) @ projection)``: [N, F] -> [N, D] unit vectors."""

    mean: np.ndarray  # float32 [F]
    projection: np.ndarray  # float32 [F, D]

    def __call__(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.mean.shape[0]:
            raise ImuIdentityError(f"features must be [N, {self.mean.shape[0]}], got {features.shape}")
        return _normalize((features - self.mean) @ self.projection).astype(np.float32)


def fit_embedding(features: np.ndarray, walker: np.ndarray, session: np.ndarray,
                  config: ImuEmbeddingConfig = ImuEmbeddingConfig()) -> ImuEmbedding:
    """PCA -> remove session directions -> whiten within-walker scatter, from training walkers' strides."""
    x = np.asarray(features, dtype=np.float64)
    walker, session = np.asarray(walker), np.asarray(session)
    if x.ndim != 2 or len(x) != len(walker) or len(x) != len(session):
        raise ImuIdentityError(f"features {x.shape}, walker {walker.shape} and session {session.shape} disagree")
    if len(np.unique(walker)) < 2:
        raise ImuIdentityError("the embedding needs strides of at least two training walkers")
    dims = min(config.dims, x.shape[1], len(x) - 1)
    mean = x.mean(0)
    ev, vec = np.linalg.eigh(np.cov((x - mean).T))
    pca = vec[:, ::-1][:, :dims]
    z = (x - mean) @ pca
    walker_mean = {w: z[walker == w].mean(0) for w in np.unique(walker)}
    offsets = np.stack([z[session == s].mean(0) - walker_mean[walker[session == s][0]] for s in np.unique(session)])
    keep = np.eye(dims)
    k = min(config.session_dims, len(offsets))
    if k:
        nuisance = np.linalg.svd(offsets, full_matrices=False)[2][:k].T
        keep -= nuisance @ nuisance.T
    zp = z @ keep
    within = sum(np.cov(zp[walker == w].T, bias=True) * (walker == w).sum() for w in np.unique(walker)) / len(z)
    within += config.ridge * np.trace(within) / dims * np.eye(dims)
    ev, vec = np.linalg.eigh(within)
    whiten = vec @ np.diag(ev ** -0.5) @ vec.T
    return ImuEmbedding(mean.astype(np.float32), (pca @ keep @ whiten).astype(np.float32))


def group_means(embeddings: np.ndarray, k: int) -> np.ndarray:
    """[G, S, D] runs of consecutive stride embeddings -> [G, D]: the unit mean of each run's first k."""
    if not 1 <= k <= embeddings.shape[1]:
        raise ImuIdentityError(f"k = {k} strides, the cohort holds runs of {embeddings.shape[1]}")
    return _normalize(embeddings[:, :k].mean(1))


@dataclass
class ImuIdentityModel:
    """Embedding + z-norm cohort ([G, S, D] runs of S consecutive training strides) + open-set threshold."""

    embedding: ImuEmbedding
    cohort: np.ndarray
    threshold: float  # accept the nearest walker when its z-score is <= this
    config: ImuEmbeddingConfig = field(default_factory=ImuEmbeddingConfig)
    meta: dict = field(default_factory=dict)

    def embed(self, cycles: np.ndarray, channels: Sequence[str]) -> np.ndarray:
        return self.embedding(stride_features(cycles, channels, self.config.points))

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.numpy import save_file

        # float16 halves the shipped file; cosine scores move by well under the thresholds' resolution
        tensors = {"mean": self.embedding.mean.astype(np.float16), "projection": self.embedding.projection.astype(np.float16),
                   "cohort": np.ascontiguousarray(self.cohort, dtype=np.float16)}
        info = {"format": FORMAT, "version": VERSION, "threshold": self.threshold, "config": asdict(self.config),
                "meta": self.meta}
        atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata={"imu_identity": json.dumps(info)}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ImuIdentityModel":
        """Strict: every tensor present with consistent shapes, the format and version this code writes."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"IMU identity model not found: {path}")
        try:
            with safe_open(str(path), framework="numpy") as fh:
                info = json.loads((fh.metadata() or {}).get("imu_identity", "null"))
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as exc:  # safetensors raises its own error type on a corrupt file
            raise ImuIdentityError(f"IMU identity model {path} is unreadable: {exc}") from exc
        if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("version") != VERSION:
            raise ImuIdentityError(f"{path} is not a version-{VERSION} {FORMAT} file")
        if set(tensors) != {"mean", "projection", "cohort"}:
            raise ImuIdentityError(f"{path}: tensors {sorted(tensors)}, expected cohort, mean, projection")
        mean, proj, cohort = (tensors[k].astype(np.float32) for k in ("mean", "projection", "cohort"))
        if proj.ndim != 2 or mean.shape != proj.shape[:1] or cohort.ndim != 3 or cohort.shape[2] != proj.shape[1]:
            raise ImuIdentityError(f"{path}: inconsistent shapes mean {mean.shape}, projection {proj.shape}, "
                                   f"cohort {cohort.shape}")
        config = ImuEmbeddingConfig(**info["config"])
        if mean.shape[0] != len(ACC_CHANNELS) * config.points:
            raise ImuIdentityError(f"{path}: {mean.shape[0]} features for {config.points} points per channel")
        return cls(ImuEmbedding(mean, proj), cohort, float(info["threshold"]), config, dict(info.get("meta", {})))


@dataclass(frozen=True)
class ImuIdentification:
    walker_id: Optional[str]  # accepted walker; None when unknown
    nearest_id: Optional[str]
    score: float  # z-normalized distance to the nearest walker (lower: more alike)
    confidence: float  # 0.5 at the threshold, 1 at CONFIDENCE_SPAN_Z below it; 0 when not accepted
    reason: str = ""  # why nobody was accepted; "" when accepted


class ImuIdentifier:
    """Open-set identification of enrolled walkers from a few strides (see the module docstring)."""

    def __init__(self, model: ImuIdentityModel, threshold: Optional[float] = None) -> None:
        self.model = model
        self.threshold = model.threshold if threshold is None else float(threshold)
        self.gallery = Gallery(metric="cosine", mode="mean", threshold=None)  # thresholds act on z-scores here
        self._stats: dict[tuple[str, int], tuple[float, float]] = {}

    @property
    def walkers(self) -> list[str]:
        return self.gallery.walkers

    def enroll(self, walker_id: str, stride_embeddings: np.ndarray) -> None:
        """Add [K, D] stride embeddings of ``walker_id`` (their mean joins the walker's template)."""
        emb = np.asarray(stride_embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.model.embedding.projection.shape[1] or len(emb) == 0:
            raise ImuIdentityError(f"enroll {walker_id!r}: stride embeddings must be [K >= 1, "
                                   f"{self.model.embedding.projection.shape[1]}], got {emb.shape}")
        try:
            self.gallery.enroll(walker_id, emb[:, None, :])
        except GalleryError as exc:
            raise ImuIdentityError(str(exc)) from exc
        self._stats = {key: v for key, v in self._stats.items() if key[0] != walker_id}

    def scores(self, stride_embeddings: np.ndarray) -> dict[str, float]:
        """Z-normalized distance from K stride embeddings [K, D] (their mean) to every enrolled walker."""
        emb = np.asarray(stride_embeddings, dtype=np.float32)
        if emb.ndim != 2 or len(emb) == 0:
            raise ImuIdentityError(f"probe stride embeddings must be [K >= 1, D], got {emb.shape}")
        k = min(len(emb), self.model.cohort.shape[1])
        distances = self.gallery.distances(_normalize(emb.mean(0)))
        out = {}
        for walker, d in distances.items():
            mu, sd = self._cohort_stats(walker, k)
            out[walker] = (d - mu) / sd
        return out

    def _cohort_stats(self, walker: str, k: int) -> tuple[float, float]:
        key = (walker, k)
        if key not in self._stats:
            owners, templates = self.gallery.templates()
            template = templates[owners.index(walker), 0]
            d = 1.0 - group_means(self.model.cohort, k) @ template
            self._stats[key] = (float(d.mean()), float(max(d.std(), 1e-6)))
        return self._stats[key]

    def identify(self, stride_embeddings: np.ndarray) -> ImuIdentification:
        if len(self.gallery) == 0:
            return ImuIdentification(None, None, math.inf, 0.0, "no walker enrolled from IMU strides")
        ranked = sorted(self.scores(stride_embeddings).items(), key=lambda kv: kv[1])
        nearest, score = ranked[0]
        if score > self.threshold:
            return ImuIdentification(None, nearest, score, 0.0,
                                     f"IMU strides match nobody (nearest {nearest}, z {score:.2f} > {self.threshold:.2f})")
        conf = float(np.clip(0.5 + 0.5 * (self.threshold - score) / CONFIDENCE_SPAN_Z, 0.0, 1.0))
        return ImuIdentification(nearest, nearest, score, conf)


__all__ = [
    "ACC_CHANNELS", "ImuEmbedding", "ImuEmbeddingConfig", "ImuIdentification", "ImuIdentifier", "ImuIdentityError",
    "ImuIdentityModel", "fit_embedding", "group_means", "stride_features",
]
