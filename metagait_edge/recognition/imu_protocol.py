"""Evaluation protocol of IMU identity on HuGaDB (``metagait-edge eval-identity --imu``).

* **Strides**: every walking stride of the cycle set (``data.cycles``); the walking files are one session per
  walker, the walking bouts inside the "various" recordings another (other files, put on again; walker 1's
  on another date too). Walker 2 has no walking file: never enrolled, always an impostor.
* **Cross-session** (the headline): enroll a walker from all their walking-file strides, probe with runs of K
  consecutive strides (K = 1, 5) of their "various" walking bouts. Beside it, enrolled as the runtime's
  calibration does: 6 strides of one walking file only (``calibration_strides``). **Within-session** (beside it): enroll from
  the first half of each walking file's strides, probe with runs from its second half.
* **Subject-disjoint folds**: the embedding is fitted on the walkers of the other folds (all their walking
  strides, recordings as sessions); the test fold's walkers are enrolled and probed. The open-set threshold
  comes from an inner cross-validation over the training walkers only, never from the test fold.
* **Open set**: each enrolled walker's probes are scored against every enrolled walker; rank-1 is the nearest
  being right; for the impostor side the walker's own template is left out (as if never enrolled), and
  walkers without a walking file are impostors outright. EER from the genuine and impostor scores.
* **Nearest-neighbour baseline** (issue 18): raw accelerometer strides (18 x 101), per-walker nearest
  enrolled stride (Euclidean), averaged over the K probe strides; all 17 enrollable walkers in one gallery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from metagait_edge.recognition.gallery import equal_error_rate, far_frr_curve
from metagait_edge.recognition.imu_identity import (
    ACC_CHANNELS, ImuEmbeddingConfig, ImuIdentifier, ImuIdentityModel, fit_embedding, stride_features,
)

STRIDES = (1, 5)
COHORT_RUN = 5  # strides per cohort run: the most any probe uses
CALIBRATION_STRIDES = 6  # strides a calibration enrolls: 5 shots + the held-out one
# Settings an inner cross-validation may choose from (``--select``): PCA directions x session directions removed.
SELECTION_GRID = tuple(ImuEmbeddingConfig(dims=d, session_dims=n) for d in (100, 200, 400) for n in (0, 5))
COHORT_MAX = 96  # cohort runs kept (z-norm statistics per enrolled walker)


@dataclass
class WalkingStrides:
    """The walking strides of HuGaDB, features and where each came from (all arrays share the first axis)."""

    features: np.ndarray  # [N, F] ``stride_features``
    raw_acc: np.ndarray  # [N, 18 * 101] the baseline's raw accelerometer strides
    walker: np.ndarray  # int [N]
    file_id: np.ndarray  # str [N]
    segment: np.ndarray  # int [N]
    index: np.ndarray  # int [N] stride number in its recording
    enroll_session: np.ndarray  # bool [N]: from a walking file (else from a "various" recording)


def walking_strides(cycle_set, config: ImuEmbeddingConfig = ImuEmbeddingConfig()) -> WalkingStrides:
    from metagait_edge.data.hugadb import parse_file_name

    cs = cycle_set.select(cycle_set.condition == "walking")
    if len(cs) == 0:
        raise ValueError("the cycle set holds no walking strides")
    activity = np.array([parse_file_name(f + ".txt")[0] for f in cs.file_id])
    acc = cs.cycles[:, cs.channel_index(list(ACC_CHANNELS))]
    return WalkingStrides(stride_features(cs.cycles, cs.channels, config.points), acc.reshape(len(acc), -1),
                          cs.subject.astype(int), cs.file_id, cs.segment, cs.index, activity == "walking")


def runs(data: WalkingStrides, mask: np.ndarray, k: int) -> list[np.ndarray]:
    """Non-overlapping runs of k strides in recording order, within one gait bout, of the strides in ``mask``."""
    out = []
    idx = np.flatnonzero(mask)
    keys = np.char.add(data.file_id[idx].astype(str), np.char.add("#", data.segment[idx].astype(str)))
    for key in np.unique(keys):
        bout = idx[keys == key]
        bout = bout[np.argsort(data.index[bout], kind="stable")]
        out += [bout[c:c + k] for c in range(0, len(bout) - k + 1, k)]
    return out


def first_half(data: WalkingStrides) -> np.ndarray:
    """bool [N]: the strides in the first half of their walking file (within-session enrollment)."""
    out = np.zeros(len(data.walker), bool)
    for f in np.unique(data.file_id[data.enroll_session]):
        idx = np.flatnonzero(data.file_id == f)
        idx = idx[np.argsort(data.index[idx], kind="stable")]
        out[idx[: len(idx) // 2]] = True
    return out


@dataclass
class OpenSetScores:
    """Scores of probe runs (lower: more alike) against the enrolled walkers, in the module's open-set terms."""

    walker: list  # true walker per scored probe run of an enrolled walker
    correct: list  # bool: nearest enrolled walker is the right one
    genuine: list  # score to the walker's own template
    impostor: list  # nearest score with the own template left out (or to everyone, walker never enrolled)
    claims: list  # every other enrolled walker's score: verification of a false identity claim (closed set)

    @classmethod
    def empty(cls) -> "OpenSetScores":
        return cls([], [], [], [], [])

    def add(self, scores: np.ndarray, probe_walkers: Sequence[int], enrolled: Sequence[int]) -> None:
        enrolled = list(enrolled)
        for row, w in zip(np.asarray(scores, dtype=np.float64), probe_walkers):
            if w in enrolled:
                j = enrolled.index(w)
                self.walker.append(int(w))
                self.correct.append(bool(enrolled[int(np.argmin(row))] == w))
                self.genuine.append(float(row[j]))
                row = np.delete(row, j)
                self.claims += row.tolist()
            if len(row):
                self.impostor.append(float(row.min()))

    def summary(self, threshold: Optional[float] = None) -> dict:
        correct, walker = np.asarray(self.correct), np.asarray(self.walker)
        per = {str(w): float(correct[walker == w].mean()) for w in sorted(set(self.walker))}
        out = {"rank1": float(correct.mean()), "eer": equal_error_rate(self.genuine, self.impostor)[0],
               "per_walker_rank1": per, "probes": int(len(correct)), "impostor_probes": len(self.impostor),
               "eer_verification": equal_error_rate(self.genuine, self.claims)[0] if self.claims else float("nan")}
        if threshold is not None:
            _, far, frr = far_frr_curve(self.genuine, self.impostor, [threshold])
            out.update(far_at_threshold=float(far[0]), frr_at_threshold=float(frr[0]), threshold=float(threshold))
        return out


def calibration_strides(data: WalkingStrides, strides: int = CALIBRATION_STRIDES, settle: int = 1) -> np.ndarray:
    """bool [N]: per walker, the ``strides`` strides after the first ``settle`` of their first walking file's
    first bout: what the runtime's calibration sees (``CalibrationConfig``: settle 1, 5 shots + 1 held out)."""
    out = np.zeros(len(data.walker), bool)
    for w in np.unique(data.walker[data.enroll_session]):
        first = sorted(set(data.file_id[data.enroll_session & (data.walker == w)].tolist()))[0]
        run = runs(data, data.file_id == first, settle + strides)
        if run:
            out[run[0][settle:]] = True
    return out


def folds_of(walkers: Sequence[int], n_folds: int = 3, seed: int = 0) -> list[list[int]]:
    perm = np.random.default_rng(seed).permutation(sorted(walkers))
    return [sorted(int(w) for w in perm[i::n_folds]) for i in range(n_folds)]


def fit_model(data: WalkingStrides, walkers: Sequence[int], config: ImuEmbeddingConfig,
              threshold: float = 0.0, meta: Optional[dict] = None) -> ImuIdentityModel:
    """Embedding + cohort (runs of ``COHORT_RUN`` strides) from ``walkers``' strides, both sessions."""
    train = np.isin(data.walker, walkers)
    embedding = fit_embedding(data.features[train], data.walker[train], data.file_id[train], config)
    cohort_runs = runs(data, train, COHORT_RUN)
    # Evenly spread over walkers and sessions; capped so that the shipped model stays small (under 1 MB).
    pick = np.unique(np.linspace(0, len(cohort_runs) - 1, min(COHORT_MAX, len(cohort_runs))).round().astype(int))
    cohort = np.stack([embedding(data.features[cohort_runs[i]]) for i in pick])
    return ImuIdentityModel(embedding, cohort, threshold, config, dict(meta or {}))


def score_runs(model: ImuIdentityModel, data: WalkingStrides, enrolled: Sequence[int], enroll_mask: np.ndarray,
               probe_runs: list[np.ndarray]) -> np.ndarray:
    """[R, len(enrolled)] z-scores of each probe run against each enrolled walker."""
    ident = ImuIdentifier(model)
    for w in enrolled:
        ident.enroll(str(w), model.embedding(data.features[enroll_mask & (data.walker == w)]))
    emb = model.embedding(data.features)
    return np.array([[s[str(w)] for w in enrolled] for s in (ident.scores(emb[r]) for r in probe_runs)])


def cross_session_masks(data: WalkingStrides, walkers: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    mine = np.isin(data.walker, walkers)
    return mine & data.enroll_session, mine & ~data.enroll_session


def fitted_thresholds(data: WalkingStrides, walkers: Sequence[int], config: ImuEmbeddingConfig,
                      grid: Sequence[ImuEmbeddingConfig] = ()) -> tuple[ImuEmbeddingConfig, dict[int, float]]:
    """The settings (``config``, or the one of ``grid`` with the lowest 5-stride EER) and per K the EER threshold,
    from a cross-session, subject-disjoint cross-validation over ``walkers`` only."""
    best = None
    for candidate in grid or [config]:
        scores = inner_scores(data, walkers, candidate)
        eer5, _ = equal_error_rate(scores[5].genuine, scores[5].impostor)
        if best is None or eer5 < best[0]:
            best = (eer5, candidate, {k: equal_error_rate(scores[k].genuine, scores[k].impostor)[1] for k in STRIDES})
    return best[1], best[2]


def inner_scores(data: WalkingStrides, walkers: Sequence[int], config: ImuEmbeddingConfig) -> dict[int, OpenSetScores]:
    scores = {k: OpenSetScores.empty() for k in STRIDES}
    for test in folds_of(walkers, 3, seed=1):
        model = fit_model(data, [w for w in walkers if w not in test], config)
        enroll, probe = cross_session_masks(data, test)
        enrolled = sorted(set(data.walker[enroll].tolist()))
        if not enrolled:  # e.g. a fold of walkers without a walking file: nobody to identify
            continue
        for k in STRIDES:
            probe_runs = runs(data, probe, k)
            scores[k].add(score_runs(model, data, enrolled, enroll, probe_runs), [data.walker[r[0]] for r in probe_runs],
                          enrolled)
    return scores


def evaluate_embedding(data: WalkingStrides, config: ImuEmbeddingConfig = ImuEmbeddingConfig(), n_folds: int = 3,
                       progress: Callable = lambda it, **kw: it, grid: Sequence[ImuEmbeddingConfig] = ()) -> dict:
    """Cross- and within-session open-set figures of the embedding over subject-disjoint folds; with ``grid``,
    each fold's settings are chosen by the inner cross-validation over its training walkers."""
    walkers = sorted(set(data.walker.tolist()))
    half = first_half(data)
    cross = {k: OpenSetScores.empty() for k in STRIDES}
    calibration = {k: OpenSetScores.empty() for k in STRIDES}  # enrolled from calibration strides only
    calib = calibration_strides(data)
    within = {k: OpenSetScores.empty() for k in STRIDES}
    thresholds, galleries, chosen = {k: [] for k in STRIDES}, [], []
    for test in progress(folds_of(walkers, n_folds), desc="identity folds"):
        train = [w for w in walkers if w not in test]
        enroll, probe = cross_session_masks(data, test)
        enrolled = sorted(set(data.walker[enroll].tolist()))
        if not enrolled:
            continue
        galleries.append(enrolled)
        fold_config, fitted = fitted_thresholds(data, train, config, grid)
        chosen.append({"dims": fold_config.dims, "session_dims": fold_config.session_dims})
        model = fit_model(data, train, fold_config)
        for k in STRIDES:
            thresholds[k].append(fitted[k])
            probe_runs = runs(data, probe, k)
            cross[k].add(score_runs(model, data, enrolled, enroll, probe_runs), [data.walker[r[0]] for r in probe_runs],
                         enrolled)
            calibration[k].add(score_runs(model, data, enrolled, enroll & calib, probe_runs),
                               [data.walker[r[0]] for r in probe_runs], enrolled)
            w_runs = runs(data, enroll & ~half, k)
            within[k].add(score_runs(model, data, enrolled, enroll & half, w_runs), [data.walker[r[0]] for r in w_runs],
                          enrolled)
    # Each fold's threshold applies to its own test walkers; the pooled operating point uses their mean.
    return {"cross": {str(k): cross[k].summary(float(np.mean(thresholds[k]))) for k in STRIDES},
            "within": {str(k): within[k].summary() for k in STRIDES},
            "cross_calibration_enrollment": {str(k): calibration[k].summary(float(np.mean(thresholds[k])))
                                             for k in STRIDES},
            "thresholds": {str(k): [float(t) for t in thresholds[k]] for k in STRIDES}, "galleries": galleries,
            "settings": chosen,
            "curves": {k: (cross[k].genuine, cross[k].impostor) for k in STRIDES}}


def nearest_neighbour_baseline(data: WalkingStrides, within_session: bool = False, probe_every: int = 1,
                               folds: Optional[list[list[int]]] = None) -> dict:
    """The issue's baseline on raw accelerometer strides: all enrollable walkers in one gallery, or (``folds``)
    one gallery per fold of walkers, as the embedding is scored."""
    half = first_half(data)
    out = {}
    for k in STRIDES:
        scores = OpenSetScores.empty()
        for walkers in folds or [sorted(set(data.walker.tolist()))]:
            mine = np.isin(data.walker, walkers)
            enroll = mine & (data.enroll_session & half if within_session else data.enroll_session)
            probe = mine & (data.enroll_session & ~half if within_session else ~data.enroll_session)
            _nearest_neighbour_scores(data, enroll, runs(data, probe, k)[::probe_every], k, scores)
        out[str(k)] = scores.summary()
        out[str(k)]["curve"] = (scores.genuine, scores.impostor)
    return out


def _nearest_neighbour_scores(data: WalkingStrides, enroll: np.ndarray, probe_runs: list[np.ndarray], k: int,
                              scores: OpenSetScores) -> None:
    enrolled = sorted(set(data.walker[enroll].tolist()))
    gallery = data.raw_acc[enroll].astype(np.float32)
    g_walker = data.walker[enroll]
    g_sq = (gallery * gallery).sum(1)
    for chunk in range(0, len(probe_runs), 256):
        batch = probe_runs[chunk:chunk + 256]
        idx = np.concatenate(batch)
        x = data.raw_acc[idx].astype(np.float32)
        d = np.sqrt(np.maximum((x * x).sum(1)[:, None] + g_sq[None] - 2.0 * x @ gallery.T, 0.0))
        per_walker = np.stack([d[:, g_walker == w].min(1) for w in enrolled], 1)
        run_scores = np.add.reduceat(per_walker, np.cumsum([0] + [len(r) for r in batch[:-1]]), axis=0) / k
        scores.add(run_scores, [data.walker[r[0]] for r in batch], enrolled)
