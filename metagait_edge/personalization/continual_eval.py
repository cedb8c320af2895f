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
from collections import deque
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from metagait_edge.meta.maml import Batch, functional_forward, model_params
from metagait_edge.metrics.masked import masked_mse
from metagait_edge.personalization import train as T
from metagait_edge.personalization.config import PersonalizationConfig
from metagait_edge.personalization.continual import (
    ContinualConfig, ModelState, RunningTemplate, generation_pairs, held_out_loss, propose_update, with_template,
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
    return WalkerWalk(subject, indices[:learn_until], contiguous[:learn_until], indices[future], indices[future - 1],
                      str(keys[future[-1]]))


def _score(model, state: ModelState, batch: Batch, std: np.ndarray, angle_index: List[int]) -> dict:
    with torch.no_grad():
        pred = functional_forward(model, state.params, with_template(batch, state.template).x)["output"]
    mse = float(masked_mse(pred, batch.y, batch.mask, reduction="per_sample").mean())
    sq = angle_sq_errors_deg(pred, batch.y, batch.mask, std, angle_index)
    seen = np.isfinite(sq).any(axis=0)  # a joint never valid for this walker has no error, not zero error
    return {"mse": mse, "sq_deg": [float(np.nanmean(sq[:, j])) if seen[j] else math.nan for j in range(sq.shape[1])]}


@dataclass
class WalkerBounds:
    """What the learner is measured against on one walker's future strides."""

    queries: Batch  # the future strides (generation inputs with the calibration template)
    calibration: ModelState  # MAML adapted on the first 5 strides, their mean as template
    pooled: ModelState  # pooled weights, the same template
    reference: ModelState  # the personal reference and its template


def walker_bounds(models: ProblemModels, prepared: Prepared, walk: WalkerWalk, pconfig: PersonalizationConfig,
                  seed: int = 0) -> WalkerBounds:
    data = prepared.tensors
    learn = torch.as_tensor(walk.learn[:CALIBRATION_SHOTS])
    calib = template_from_support(data.x[learn], data.valid[learn])
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
    support = support_batch(data, task, "generation", pconfig.masking)
    fast = models.maml.adapt(support.x, support.y, support.mask, differentiable=False)
    queries = query_batch(data, task, "generation", pconfig.masking, template=calib)
    return WalkerBounds(queries, ModelState({k: v.detach() for k, v in fast.items()}, calib),
                        ModelState(model_params(models.pooled, detach=True), calib), reference)


def walker_curve(models: ProblemModels, prepared: Prepared, walk: WalkerWalk, bounds: WalkerBounds,
                 config: ContinualConfig, points: Sequence[int], angle_index: List[int]) -> dict:
    """The learner's scores on the future strides at each reachable point, with the pooled model's and the
    personal reference's, and the update log (accepted, rejected, wall time per update on this thread)."""
    data = prepared.tensors
    std = models.normalizer.std
    model = models.maml.model
    learn = torch.as_tensor(walk.learn)
    x, valid = data.x[learn], data.valid[learn]
    contiguous = torch.as_tensor(walk.learn_contiguous)
    pooled = bounds.pooled
    state = pooled  # until the calibration is validated, as on the device: the model without one
    running = RunningTemplate.from_strides(x[:CALIBRATION_SHOTS], valid[:CALIBRATION_SHOTS])
    buffer: deque = deque(range(CALIBRATION_SHOTS), maxlen=config.buffer_strides)
    out = {"subject": walk.subject, "strides_walked": len(learn),
           "pooled": _score(model, pooled, bounds.queries, std, angle_index),
           "reference": _score(model, bounds.reference, bounds.queries, std, angle_index), "points": {},
           "accepted": 0, "rejected": 0, "update_ms": []}
    for n in range(CALIBRATION_SHOTS, len(learn) + 1):
        if n == CALIBRATION_SHOTS + 1:  # the runtime's calibration: adapted on 5 strides, kept if the 6th agrees
            hold = generation_pairs(x[:n], valid[:n], contiguous[:n], [n - 1], pooled.template)
            if held_out_loss(model, bounds.calibration, hold) < held_out_loss(model, pooled, hold):
                state = bounds.calibration
        if n > CALIBRATION_SHOTS:
            running.add(x[n - 1], valid[n - 1])
            buffer.append(n - 1)
            if (n - CALIBRATION_SHOTS) % config.every_strides == 0 and len(buffer) >= config.holdout_strides + 3:
                pos = torch.as_tensor(list(buffer))
                recent = contiguous[pos].clone()
                recent[0] = False  # the buffer's oldest stride has no predecessor inside it
                t0 = time.perf_counter()
                decision = propose_update(model, state, pooled.params, pooled.template, running, x[pos], valid[pos],
                                          recent, config)
                out["update_ms"].append(1e3 * (time.perf_counter() - t0))
                out["accepted" if decision.accepted else "rejected"] += 1
                state = decision.state
        if n in points:
            out["points"][n] = _score(model, state, bounds.queries, std, angle_index)
    return out


def evaluate_continual(models: ProblemModels, prepared: Prepared, pconfig: PersonalizationConfig,
                       config: ContinualConfig, points: Sequence[int] = CURVE_POINTS, queries: int = 40,
                       subjects: Optional[Sequence[int]] = None, progress: bool = True, seed: int = 0) -> List[dict]:
    """:func:`walker_curve` for every held-out walker of the fold (or ``subjects``) with a long enough walk."""
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
    results = []
    for walk in tqdm(walkers, desc="continual walkers", disable=not progress):
        bounds = walker_bounds(models, prepared, walk, pconfig, seed)
        results.append(walker_curve(models, prepared, walk, bounds, config, points, angle_index))
    return results


def _rmse_deg(sq_deg_rows: List[List[float]]) -> List[float]:
    """Mean over walkers of per-walker joint-angle RMSE (degrees) from per-walker mean squared errors."""
    arr = np.sqrt(np.asarray(sq_deg_rows, dtype=float))
    return [float(np.nanmean(col)) if np.isfinite(col).any() else math.nan for col in arr.T]


def summarize_curve(walkers: List[dict], points: Sequence[int] = CURVE_POINTS) -> dict:
    """Per point: walkers that reached it, mean MSE of pooled / learner / reference over them, the gap closed
    (from those means), per joint RMSE in degrees; and the walkers ever worse than the pooled model."""
    rows = []
    worse = set()
    for n in points:
        reached = [w for w in walkers if n in w["points"]]
        if not reached:
            rows.append({"strides": n, "walkers": 0})
            continue
        mean = {k: float(np.mean([w[k]["mse"] if k != "learner" else w["points"][n]["mse"] for w in reached]))
                for k in ("pooled", "learner", "reference")}
        gap = mean["pooled"] - mean["reference"]
        for w in reached:
            if w["points"][n]["mse"] > w["pooled"]["mse"]:
                worse.add(w["subject"])
        rows.append({
            "strides": n, "walkers": len(reached), "mse_pooled": mean["pooled"], "mse_learner": mean["learner"],
            "mse_reference": mean["reference"],
            "gap_closed": float((mean["pooled"] - mean["learner"]) / gap) if gap > 0 else math.nan,
            "walkers_worse": sum(w["points"][n]["mse"] > w["pooled"]["mse"] for w in reached),
            "deg_pooled": _rmse_deg([w["pooled"]["sq_deg"] for w in reached]),
            "deg_learner": _rmse_deg([w["points"][n]["sq_deg"] for w in reached]),
            "deg_reference": _rmse_deg([w["reference"]["sq_deg"] for w in reached]),
        })
    update_ms = [t for w in walkers for t in w["update_ms"]]
    return {
        "strides": [r["strides"] for r in rows],
        "gap_closed": [r.get("gap_closed", math.nan) for r in rows],
        "walkers_worse_than_pooled": len(worse),
        "points": rows,
        "updates": {"accepted": sum(w["accepted"] for w in walkers), "rejected": sum(w["rejected"] for w in walkers),
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

        common = set.intersection(*(set(r["points"]) for r in runs))
        merged.append({"subject": subject, "strides_walked": runs[0]["strides_walked"],
                       "pooled": avg([r["pooled"] for r in runs]), "reference": avg([r["reference"] for r in runs]),
                       "points": {n: avg([r["points"][n] for r in runs]) for n in sorted(common)},
                       "accepted": sum(r["accepted"] for r in runs), "rejected": sum(r["rejected"] for r in runs),
                       "update_ms": [t for r in runs for t in r["update_ms"]], "seeds": len(runs)})
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
    walkers: List[dict] = []
    cycles = None
    for seed, fold in runs:
        pconfig = stored_config(fold_dir(root, seed, fold) / "generation")
        cycles = cycles if cycles is not None else load_cycles(pconfig, progress, cycles_path)
        models = load_problem(pconfig, fold_dir(root, seed, fold), "generation")
        prepared = prepare(cycles, models.split, models.normalizer)
        subjects = models.split["test"][:QUICK_WALKERS] if quick else None
        walkers += evaluate_continual(models, prepared, pconfig, config, queries=queries, subjects=subjects,
                                      progress=progress, seed=seed)
    protocol = {"dataset": "HuGaDB v1", "checkpoints": shown_path(root), "runs": [list(r) for r in runs],
                "quick": quick, "queries": queries, "calibration_shots": CALIBRATION_SHOTS,
                "continual": {k: v for k, v in asdict(config).items() if k != "enabled"}}
    return {"protocol": protocol, "continual": summarize_curve(merge_seeds(walkers))}
