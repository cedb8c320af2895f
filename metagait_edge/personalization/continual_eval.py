"""Continual personalization evaluated on held-out walkers: the share of the pooled-to-reference gap closed
after 5, 10, 20, 50, 100, 200 strides walked.

For each held-out walker, the walking recordings are joined in recording order into one walk (the walker
keeps walking, session after session). Its last ``queries`` strides (each with its true predecessor) are the
held-out future strides; the learner walks every stride before them, in order:

* after 5 strides the pooled model with their mean as template; from the 6th stride on the few-shot calibration
  (MAML adapted on the 5 strides) if it predicts the 6th better than that, as the runtime calibrates; then :mod:`personalization.continual` learns on (growing template, bounded buffer,
  an update every ``every_strides`` strides, accepted only if it improves held-out recent strides);
* at each curve point the learner's current state generates every held-out future stride from its predecessor.

Two fixed models bound the curve, both scored on the same future strides:

* **pooled model**: the network trained on all training walkers, not adapted, with the mean of the walker's
  first 5 strides as template (the ``pooled`` baseline of the 5-shot table);
* **personal reference**: the pooled model trained further on every walking stride of the walker outside the
  future strides (hundreds; ``evaluate.reference_examples``), with their mean as template.

Gap closed at n strides = (pooled MSE - learner MSE) / (pooled MSE - reference MSE), from the means over the
walkers that have walked n strides (and per walker).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from metagait_edge.meta.maml import Batch, model_params
from metagait_edge.metrics.masked import masked_mse
from metagait_edge.personalization import train as T
from metagait_edge.personalization.config import PersonalizationConfig
from metagait_edge.personalization.continual import (
    ContinualConfig, Learner, ModelState, generation_pairs, held_out_loss, predict, with_template,
)
from metagait_edge.personalization.episodes import query_batch, support_batch
from metagait_edge.personalization.evaluate import angle_sq_errors_deg, reference_examples
from metagait_edge.personalization.experiment import Prepared, ProblemModels
from metagait_edge.personalization.inputs import template_from_support
from metagait_edge.personalization.tasks import Task

CURVE_POINTS = (5, 10, 20, 50, 100, 200)
CALIBRATION_SHOTS = 5


@dataclass
class WalkerWalk:
    """One held-out walker's walking strides in time order, split into what the learner walks and the future."""

    subject: int
    learn: np.ndarray  # cycle indices the learner walks, in order
    learn_contiguous: np.ndarray  # bool: stride i directly follows stride i-1
    query: np.ndarray  # held-out future strides
    query_prev: np.ndarray  # their predecessors
    query_recording: str
    same_recording: int = 0  # how many of the last learnt strides come from the future strides' recording


def walker_walk(prepared: Prepared, subject: int, conditions: Sequence[str], queries: int) -> Optional[WalkerWalk]:
    """The walk of ``subject`` (None when it is too short for a calibration and the future strides)."""
    recs = sorted((r for r in prepared.recordings if r.subject == subject and r.condition in conditions),
                  key=lambda r: r.key)
    if not recs:
        return None
    indices = np.concatenate([r.indices for r in recs])
    contiguous = np.concatenate([np.r_[False, r.contiguous_prev[1:]] for r in recs])
    keys = np.concatenate([[r.key] * len(r) for r in recs])
    candidates = np.flatnonzero(contiguous)
    if len(candidates) < queries:
        return None
    future = candidates[-queries:]
    learn_until = int(future.min()) - 1  # the first future stride's predecessor is an input, never learnt
    if learn_until < CALIBRATION_SHOTS + 1:
        return None
    last = str(keys[future[-1]])
    same = int(np.cumprod(keys[:learn_until][::-1] == last).sum())
    return WalkerWalk(subject, indices[:learn_until], contiguous[:learn_until], indices[future], indices[future - 1],
                      last, same)


def _score(model, state: ModelState, batch: Batch, std: np.ndarray, angle_index: List[int]) -> dict:
    pred = predict(model, state, with_template(batch, state.template).x)
    mse = float(masked_mse(pred, batch.y, batch.mask, reduction="per_sample").mean())
    sq = angle_sq_errors_deg(pred, batch.y, batch.mask, std, angle_index)
    seen = np.isfinite(sq).any(axis=0)  # a joint never valid for this walker has no error, not zero error
    return {"mse": mse, "sq_deg": [float(np.nanmean(sq[:, j])) if seen[j] else math.nan for j in range(sq.shape[1])]}


@dataclass
class WalkerBounds:
    """What the learner is measured against on one walker's future strides."""

    queries: Batch  # the future strides (generation inputs with the calibration template)
    reference: ModelState  # the personal reference and its template


def walker_bounds(models: ProblemModels, prepared: Prepared, walk: WalkerWalk, pconfig: PersonalizationConfig,
                  seed: int = 0) -> WalkerBounds:
    data = prepared.tensors
    exclude = set(walk.query.tolist()) | set(walk.query_prev.tolist())
    gen = torch.Generator().manual_seed(seed * 7919 + walk.subject)
    examples, templates = reference_examples(data, prepared.recordings, walk.subject, exclude, "generation",
                                             pconfig, gen)
    own = [i for r in prepared.recordings if r.subject == walk.subject and r.condition in pconfig.protocol.conditions
           for i in r.indices.tolist() if i not in exclude]
    # the query recording's other strides, as the few-shot report's reference; all of them when it has none
    own_template = templates.get(walk.query_recording)
    if own_template is None:
        own_template = template_from_support(data.x[torch.as_tensor(own)], data.valid[torch.as_tensor(own)])
    reference = ModelState(T.train_reference(models.pooled, examples, pconfig, seed * 31 + walk.subject), own_template)
    task = Task(walk.subject, "walking", walk.learn[:CALIBRATION_SHOTS], walk.query, walk.query_prev, "walk", "walk")
    queries = query_batch(data, task, "generation", pconfig.masking, template=reference.template)
    return WalkerBounds(queries, reference)


def calibration(models: ProblemModels, prepared: Prepared, walk: WalkerWalk, shots: np.ndarray,
                pconfig: PersonalizationConfig) -> tuple:
    """The few-shot calibration on the strides ``shots`` (MAML adapted, their mean as template) and the pooled
    model with the same template (what the walker gets without personalization)."""
    data = prepared.tensors
    calib = template_from_support(data.x[torch.as_tensor(shots)], data.valid[torch.as_tensor(shots)])
    task = Task(walk.subject, "walking", shots, walk.query, walk.query_prev, "walk", "walk")
    support = support_batch(data, task, "generation", pconfig.masking)
    fast = models.maml.adapt(support.x, support.y, support.mask, differentiable=False)
    return (ModelState({k: v.detach() for k, v in fast.items()}, calib),
            ModelState(model_params(models.pooled, detach=True), calib))


def learn_walk(model, calibrated: ModelState, pooled: ModelState, x: Tensor, valid: Tensor, contiguous: Tensor,
               config: ContinualConfig, points: Sequence[int] = (), on_point=None) -> dict:
    """Walk the strides ``x`` (normalized, in order; the first ``CALIBRATION_SHOTS`` are the calibration's) as the
    runtime does: the pooled model until a held-out stride confirms the calibration, then the library's
    :class:`Learner`. ``on_point(n, state)`` at each of ``points`` strides walked. Returns the update log."""
    log = {"accepted": 0, "rejected": 0, "update_ms": [], "kinds": {}}
    state, learner = pooled, None
    for n in range(CALIBRATION_SHOTS, len(x) + 1):
        if n == CALIBRATION_SHOTS + 1:  # the runtime's calibration: adapted on 5 strides, kept if the 6th agrees
            hold = generation_pairs(x[:n], valid[:n], contiguous[:n], [n - 1], pooled.template)
            state = calibrated if held_out_loss(model, calibrated, hold) < held_out_loss(model, pooled, hold) \
                else pooled
            learner = Learner(model, state, pooled, config, CALIBRATION_SHOTS,
                              valid[:CALIBRATION_SHOTS].any(0))
        if n > CALIBRATION_SHOTS:
            t0 = time.perf_counter()
            decision = learner.add(x[n - 1], valid[n - 1], bool(contiguous[n - 1]))
            if decision is not None:
                log["update_ms"].append(1e3 * (time.perf_counter() - t0))
                log["accepted" if decision.accepted else "rejected"] += 1
                if decision.accepted:
                    log["kinds"][decision.kind] = log["kinds"].get(decision.kind, 0) + 1
            state = learner.state
        if n in points and on_point is not None:
            on_point(n, state)
    return log


PROTOCOLS = ("up-to-future", "name-order")


def walker_curve(models: ProblemModels, prepared: Prepared, walk: WalkerWalk, bounds: WalkerBounds,
                 config: ContinualConfig, points: Sequence[int], angle_index: List[int],
                 pconfig: PersonalizationConfig, protocol: str = "up-to-future") -> dict:
    """The learner's and the pooled model's scores on the future strides at each reachable point, the personal
    reference's, and the update log (accepted, rejected, wall time per update on this thread).

    ``up-to-future``: for each point n, a learner calibrated on the 5 strides n strides before the future ones
    walks the n - 5 strides between (the walker calibrates, walks n strides, and the next strides are scored);
    ``name-order``: one learner calibrated on the walk's first 5 strides, scored as it walks."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    data = prepared.tensors
    std = models.normalizer.std
    model = models.maml.model
    learn = torch.as_tensor(walk.learn)
    x, valid = data.x[learn], data.valid[learn]
    contiguous = torch.as_tensor(walk.learn_contiguous)
    out = {"subject": walk.subject, "strides_walked": len(learn),
           "reference": _score(model, bounds.reference, bounds.queries, std, angle_index), "points": {},
           # diagnosis: the pooled weights with the personal reference's template (the future recording's mean)
           "pooled_reference_template": _score(model, ModelState(model_params(models.pooled, detach=True),
                                                                 bounds.reference.template), bounds.queries, std,
                                               angle_index),
           "same_recording_strides": walk.same_recording,
           "pooled_points": {}, "accepted": 0, "rejected": 0, "update_ms": [], "kinds": {}}

    def merge(log: dict) -> None:
        for k in ("accepted", "rejected"):
            out[k] += log[k]
        out["update_ms"] += log["update_ms"]
        for k, v in log["kinds"].items():
            out["kinds"][k] = out["kinds"].get(k, 0) + v

    def record(n: int, state: ModelState) -> None:
        out["points"][n] = _score(model, state, bounds.queries, std, angle_index)

    if protocol == "name-order":
        calibrated, pooled = calibration(models, prepared, walk, walk.learn[:CALIBRATION_SHOTS], pconfig)
        pooled_score = _score(model, pooled, bounds.queries, std, angle_index)
        merge(learn_walk(model, calibrated, pooled, x, valid, contiguous, config, points, record))
        out["pooled_points"] = {n: pooled_score for n in out["points"]}
        return out
    for n in points:
        if n > len(learn):
            continue
        start = len(learn) - n
        calibrated, pooled = calibration(models, prepared, walk, walk.learn[start:start + CALIBRATION_SHOTS], pconfig)
        out["pooled_points"][n] = _score(model, pooled, bounds.queries, std, angle_index)
        head = contiguous[start:].clone()
        head[0] = False
        merge(learn_walk(model, calibrated, pooled, x[start:], valid[start:], head, config, (n,), record))
    return out


def evaluate_continual(models: ProblemModels, prepared: Prepared, pconfig: PersonalizationConfig,
                       config: ContinualConfig, points: Sequence[int] = CURVE_POINTS, queries: int = 40,
                       subjects: Optional[Sequence[int]] = None, progress: bool = True, seed: int = 0,
                       protocols: Sequence[str] = PROTOCOLS) -> Dict[str, List[dict]]:
    """:func:`walker_curve` under each protocol for every held-out walker of the fold (or ``subjects``) with a
    long enough walk; the personal reference is trained once per walker (the future strides are the same)."""
    channels = list(models.channels)
    from metagait_edge.data.joint_angles import ANGLE_CHANNELS

    angle_index = [channels.index(c) for c in ANGLE_CHANNELS]
    walkers = []
    for subject in (models.split["test"] if subjects is None else subjects):
        walk = walker_walk(prepared, int(subject), pconfig.protocol.conditions, queries)
        if walk is not None:
            walkers.append(walk)
    if not walkers:
        raise ValueError(f"no held-out walker has {queries} future strides after a {CALIBRATION_SHOTS}-stride calibration")
    results: Dict[str, List[dict]] = {p: [] for p in protocols}
    for walk in tqdm(walkers, desc="continual walkers", disable=not progress):
        bounds = walker_bounds(models, prepared, walk, pconfig, seed)
        for protocol in protocols:
            results[protocol].append(walker_curve(models, prepared, walk, bounds, config, points, angle_index,
                                                  pconfig, protocol))
    return results


def _rmse_deg(sq_deg_rows: List[List[float]]) -> List[float]:
    """Mean over walkers of per-walker joint-angle RMSE (degrees) from per-walker mean squared errors."""
    arr = np.sqrt(np.asarray(sq_deg_rows, dtype=float))
    return [float(np.nanmean(col)) if np.isfinite(col).any() else math.nan for col in arr.T]


def _pooled(w: dict, n: int) -> dict:
    return w["pooled_points"].get(n, w["pooled_points"].get(str(n)))


def _point(w: dict, n: int) -> Optional[dict]:
    return w["points"].get(n, w["points"].get(str(n)))


def summarize_curve(walkers: List[dict], points: Sequence[int] = CURVE_POINTS) -> dict:
    """Per point: walkers that reached it, mean MSE of pooled / learner / reference over them, the gap closed
    (from those means), per joint RMSE in degrees; and the walkers ever worse than the pooled model."""
    rows = []
    worse = set()
    for n in points:
        reached = [w for w in walkers if _point(w, n) is not None]
        if not reached:
            rows.append({"strides": n, "walkers": 0})
            continue
        mean = {"pooled": float(np.mean([_pooled(w, n)["mse"] for w in reached])),
                "learner": float(np.mean([_point(w, n)["mse"] for w in reached])),
                "reference": float(np.mean([w["reference"]["mse"] for w in reached]))}
        gap = mean["pooled"] - mean["reference"]
        for w in reached:
            if _point(w, n)["mse"] > _pooled(w, n)["mse"]:
                worse.add(w["subject"])
        rows.append({
            "strides": n, "walkers": len(reached), "mse_pooled": mean["pooled"], "mse_learner": mean["learner"],
            "mse_reference": mean["reference"],
            "gap_closed": float((mean["pooled"] - mean["learner"]) / gap) if gap > 0 else math.nan,
            "walkers_worse": sum(_point(w, n)["mse"] > _pooled(w, n)["mse"] for w in reached),
            "deg_pooled": _rmse_deg([_pooled(w, n)["sq_deg"] for w in reached]),
            "deg_learner": _rmse_deg([_point(w, n)["sq_deg"] for w in reached]),
            "deg_reference": _rmse_deg([w["reference"]["sq_deg"] for w in reached]),
        })
    update_ms = [t for w in walkers for t in w["update_ms"]]
    kinds: Dict[str, int] = {}
    for w in walkers:
        for k, v in w.get("kinds", {}).items():
            kinds[k] = kinds.get(k, 0) + v
    return {
        "strides": [r["strides"] for r in rows],
        "gap_closed": [r.get("gap_closed", math.nan) for r in rows],
        "walkers_worse_than_pooled": len(worse),
        "points": rows,
        "updates": {"accepted": sum(w["accepted"] for w in walkers), "rejected": sum(w["rejected"] for w in walkers),
                    "accepted_kinds": kinds,
                    "ms_median": float(np.median(update_ms)) if update_ms else math.nan,
                    "ms_p95": float(np.percentile(update_ms, 95)) if update_ms else math.nan},
        "per_walker": [{k: v for k, v in w.items() if k != "update_ms"} for w in walkers],
    }


def merge_seeds(walkers: List[dict]) -> List[dict]:
    """One entry per walker: scores averaged over the seeds (runs) that evaluated it, update logs joined."""
    by_subject: Dict[int, List[dict]] = {}
    for w in walkers:
        by_subject.setdefault(w["subject"], []).append(w)
    merged = []
    for subject, runs in sorted(by_subject.items()):
        def avg(scores: List[dict]) -> dict:
            return {"mse": float(np.mean([s["mse"] for s in scores])),
                    "sq_deg": np.nanmean(np.asarray([s["sq_deg"] for s in scores], dtype=float), axis=0).tolist()}

        common = sorted(set.intersection(*(set(r["points"]) for r in runs)))
        kinds: Dict[str, int] = {}
        for r in runs:
            for k, v in r.get("kinds", {}).items():
                kinds[k] = kinds.get(k, 0) + v
        merged.append({"subject": subject, "strides_walked": runs[0]["strides_walked"],
                       "same_recording_strides": runs[0]["same_recording_strides"],
                       "reference": avg([r["reference"] for r in runs]),
                       "pooled_reference_template": avg([r["pooled_reference_template"] for r in runs]),
                       "points": {n: avg([r["points"][n] for r in runs]) for n in common},
                       "pooled_points": {n: avg([r["pooled_points"][n] for r in runs]) for n in common},
                       "accepted": sum(r["accepted"] for r in runs), "rejected": sum(r["rejected"] for r in runs),
                       "kinds": kinds, "update_ms": [t for r in runs for t in r["update_ms"]], "seeds": len(runs)})
    return merged


QUICK_WALKERS = 3


def evaluate_runs(root, quick: bool, seeds: Optional[Sequence[int]] = None, folds: Optional[Sequence[int]] = None,
                  progress: bool = True, cycles_path=None, config: Optional[ContinualConfig] = None,
                  queries: int = 40) -> dict:
    """Every trained (seed, fold) generation model under ``root`` on its fold's held-out walkers (``quick``:
    the first few walkers of the first run), as ``{"protocol", "continual"}`` (see :func:`summarize_curve`)."""
    from dataclasses import asdict

    from metagait_edge.personalization.experiment import load_problem, prepare, stored_config
    from metagait_edge.personalization.runner import available_runs, fold_dir, load_cycles, shown_path

    config = config or ContinualConfig()
    runs = [(s, f) for s, f in available_runs(root) if (seeds is None or s in seeds) and (folds is None or f in folds)
            and (fold_dir(root, s, f) / "generation" / "maml.safetensors").is_file()]
    if not runs:
        raise FileNotFoundError(f"no trained generation checkpoints under {root} (seed<s>/fold<k>/generation)")
    if quick:
        runs = runs[:1]
    walkers: Dict[str, List[dict]] = {p: [] for p in PROTOCOLS}
    cycles = None
    for seed, fold in runs:
        pconfig = stored_config(fold_dir(root, seed, fold) / "generation")
        cycles = cycles if cycles is not None else load_cycles(pconfig, progress, cycles_path)
        models = load_problem(pconfig, fold_dir(root, seed, fold), "generation")
        prepared = prepare(cycles, models.split, models.normalizer)
        subjects = models.split["test"][:QUICK_WALKERS] if quick else None
        for p, ws in evaluate_continual(models, prepared, pconfig, config, queries=queries, subjects=subjects,
                                        progress=progress, seed=seed).items():
            walkers[p] += ws
    protocol = {"dataset": "HuGaDB v1", "checkpoints": shown_path(root), "runs": [list(r) for r in runs],
                "quick": quick, "queries": queries, "calibration_shots": CALIBRATION_SHOTS,
                "protocol": PROTOCOLS[0], "continual": {k: v for k, v in asdict(config).items() if k != "enabled"}}
    return {"protocol": protocol, "continual": summarize_curve(merge_seeds(walkers[PROTOCOLS[0]])),
            "continual_name_order": summarize_curve(merge_seeds(walkers["name-order"]))}
