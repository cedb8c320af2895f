"""The personalization evaluation: every method on held-out walkers, MSE and DTW, mean +- SD over walkers.

Scores are computed on normalized channels (training-walker statistics) and only on valid channels:
a corrupted gyroscope, or a joint angle that needs one, never counts. For each held-out walker the
scores of all its query cycles (over its tasks) are averaged; the table reports the mean and SD of those
per-walker means across walkers (pooled over folds and seeds: a walker's score is its mean over seeds).
"""

from __future__ import annotations

import logging
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from metagait_edge.meta.maml import Batch, functional_forward
from metagait_edge.metrics.dtw import batch_dtw
from metagait_edge.metrics.masked import masked_mse
from metagait_edge.personalization import train as T
from metagait_edge.personalization.config import PersonalizationConfig
from metagait_edge.personalization.episodes import CycleTensors, query_batch, support_batch
from metagait_edge.personalization.experiment import Prepared, ProblemModels
from metagait_edge.personalization.inputs import template_from_support
from metagait_edge.personalization.methods import all_predictions
from metagait_edge.personalization.tasks import Task, WalkCycles, evaluation_tasks

log = logging.getLogger(__name__)

REFERENCE = "reference"
SQ_DEG = "sq_deg_"  # per-query squared joint-angle error in degrees², per joint (a raw score)
RMSE_DEG = "rmse_deg_"  # per-walker RMSE in degrees, per joint (the summary of SQ_DEG)


@dataclass
class Scores:
    """Per-walker lists of per-query scores: scores[problem][protocol][shots][method][metric][subject]."""

    values: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(
        lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list)))))))

    def add(self, problem, protocol, shots, method, subject, metrics: Dict[str, np.ndarray]) -> None:
        for name, vals in metrics.items():
            self.values[problem][protocol][str(shots)][method][name][int(subject)].extend(np.asarray(vals).tolist())

    def to_json(self) -> dict:
        """Plain nested dicts (walker ids as strings), for saving partial runs and merging them."""
        def plain(d):
            return {str(k): plain(v) for k, v in d.items()} if isinstance(d, dict) else list(d)
        return plain(self.values)

    def merge_json(self, data: dict) -> None:
        """Add the per-query scores of another (disjoint) run, e.g. another fold evaluated in parallel."""
        for problem, a in data.items():
            for protocol, b in a.items():
                for shots, c in b.items():
                    for method, d in c.items():
                        for metric, e in d.items():
                            for subject, vals in e.items():
                                self.values[problem][protocol][shots][method][metric][int(subject)].extend(vals)


def angle_spec(channels: Sequence[str], std: np.ndarray) -> tuple:
    """``(std, indices, names)`` of the joint-angle channels: what :func:`score_prediction` needs for degrees."""
    from metagait_edge.data.joint_angles import ANGLE_CHANNELS

    return std, [list(channels).index(c) for c in ANGLE_CHANNELS], ANGLE_CHANNELS


def score_prediction(pred: torch.Tensor, query: Batch, with_dtw: bool = True,
                     angles: tuple | None = None) -> Dict[str, np.ndarray]:
    mse = masked_mse(pred, query.y, query.mask, reduction="per_sample").numpy()
    out = {"mse": mse}
    if angles is not None:
        std, index, names = angles
        sq = angle_sq_errors_deg(pred, query.y, query.mask, std, index)
        out.update({SQ_DEG + name: sq[:, j] for j, name in enumerate(names)})
    if with_dtw:
        d = batch_dtw(pred.numpy(), query.y.numpy(), query.mask.numpy())
        out["dtw"] = d["distance"]
        out["dtw_norm"] = d["normalized"]
    return out


def angle_sq_errors_deg(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, std: np.ndarray,
                        angle_index: Sequence[int]) -> np.ndarray:
    """Per cycle and joint, the mean squared joint-angle error in degrees² ``[B, len(angle_index)]`` (NaN where
    the angle is not valid). The normalization is ``(x - mean) / std`` per channel, so an error of ``e``
    normalized units is ``e * std`` degrees: the mean cancels."""
    idx = torch.as_tensor(list(angle_index), dtype=torch.long)
    scale = torch.as_tensor(np.asarray(std, dtype=np.float64)[list(angle_index)])
    err = (pred[:, idx].double() - target[:, idx].double()) * scale[None, :, None]
    sq = (err ** 2).mean(-1)
    return torch.where(valid[:, idx].bool(), sq, torch.full_like(sq, float("nan"))).numpy()


def reference_examples(data: CycleTensors, recordings: Sequence[WalkCycles], subject: int, exclude: set,
                       problem: str, config: PersonalizationConfig, gen: torch.Generator) -> tuple[Batch, Dict[str, torch.Tensor]]:
    """Training examples for a walker's personal reference (all its cycles except the query cycles and
    their predecessors), and per recording the template of its non-query cycles."""
    batches, templates = [], {}
    for rec in recordings:
        if rec.subject != subject or rec.condition not in config.protocol.conditions:
            continue
        keep = np.array([i not in exclude for i in rec.indices])
        own = rec.indices[keep]
        if len(own) == 0:
            continue
        template = template_from_support(data.x[torch.as_tensor(own)], data.valid[torch.as_tensor(own)])
        templates[rec.key] = template
        positions = np.flatnonzero(keep[1:] & keep[:-1] & rec.contiguous_prev[1:]) + 1
        if len(positions) == 0:
            continue
        task = Task(subject, rec.condition, own, rec.indices[positions], rec.indices[positions - 1], rec.key, rec.key)
        batches.append(query_batch(data, task, problem, config.masking, gen, template=template))
    if not batches:
        raise ValueError(f"walker {subject} has no cycles outside the query set for a personal reference")
    return T.concat_batches(batches), templates


def evaluate_problem(models: ProblemModels, prepared: Prepared, config: PersonalizationConfig, scores: Scores,
                     seed: int, protocols: Sequence[str] = ("main", "redonning"), max_tasks: int | None = None,
                     max_redonning_tasks: int | None = 24,
                     with_dtw: bool = True, progress: bool = True) -> None:
    """Score every method on the fold's test walkers for one problem; adds into ``scores``."""
    problem = models.problem
    data = prepared.tensors
    test_subjects = models.split["test"]
    generation = problem == "generation"
    task_sets = []
    for protocol in protocols:
        for k in config.protocol.shots:
            tasks = evaluation_tasks(prepared.recordings, test_subjects, k, config.protocol, generation, protocol)
            cap = max_tasks if protocol == "main" or max_redonning_tasks is None else min(
                max_redonning_tasks, max_tasks or max_redonning_tasks)
            if cap is not None and len(tasks) > cap:
                pick = np.random.default_rng(seed).choice(len(tasks), cap, replace=False)
                tasks = [tasks[i] for i in sorted(pick)]
            task_sets.append((protocol, k, tasks))
    # Personal reference per walker, trained once, scored on the main-protocol queries.
    main_tasks = [t for p, _, ts in task_sets if p == "main" for t in ts]
    query_cycles: Dict[int, set] = defaultdict(set)
    for t in main_tasks:
        query_cycles[t.subject].update(t.query.tolist())
        query_cycles[t.subject].update(t.query_prev.tolist())
    reference = {}
    for subject in sorted(query_cycles):
        gen = torch.Generator().manual_seed(seed * 7919 + subject)
        examples, templates = reference_examples(data, prepared.recordings, subject, query_cycles[subject], problem,
                                                 config, gen)
        reference[subject] = (T.train_reference(models.pooled, examples, config, seed * 31 + subject), templates)
    total = sum(len(ts) for _, _, ts in task_sets)
    bar = tqdm(total=total, desc=f"eval {problem}", disable=not progress)
    angles = angle_spec(models.channels, models.normalizer.std)
    for protocol, k, tasks in task_sets:
        for i, task in enumerate(tasks):
            gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{protocol}/{k}/{i}/{task.recording}".encode()))
            support = support_batch(data, task, problem, config.masking, gen)
            mask_state = gen.get_state()
            query = query_batch(data, task, problem, config.masking, gen)
            preds = all_predictions(problem, support, query, models.maml, models.pooled, models.finetune,
                                    models.scratch, seed=seed * 100003 + i)
            if protocol == "main" and task.subject in reference:
                params, templates = reference[task.subject]
                same_masks = torch.Generator()
                same_masks.set_state(mask_state)
                ref_query = query_batch(data, task, problem, config.masking, same_masks,
                                        template=templates[task.recording])
                with torch.no_grad():
                    preds[REFERENCE] = functional_forward(models.pooled, params, ref_query.x)["output"]
            for method, pred in preds.items():
                scores.add(problem, protocol, k, method, task.subject, score_prediction(pred, query, with_dtw, angles))
            bar.update(1)
    bar.close()


def across_walkers(by_subject: Mapping[int, Sequence[float]]) -> tuple[float, float, Dict[int, float]]:
    """Mean and SD across walkers of per-walker mean scores, and those per-walker means."""
    means = {s: float(np.mean(v)) for s, v in by_subject.items()}
    vals = np.array(list(means.values()))
    return float(vals.mean()), (float(vals.std(ddof=1)) if len(vals) > 1 else 0.0), means


def gap_closed(baseline: float, method: float, reference: float) -> float:
    """Fraction of the baseline-to-reference error gap that ``method`` closes (NaN without a gap)."""
    gap = baseline - reference
    return float((baseline - method) / gap) if gap > 0 else float("nan")


def summarize(scores: Scores) -> dict:
    """Mean and SD across walkers of per-walker mean scores, plus the per-walker table and gap closed."""
    out: dict = {}
    for problem, by_protocol in scores.values.items():
        for protocol, by_shots in by_protocol.items():
            for shots, by_method in by_shots.items():
                cell: dict = {}
                per_subject: dict = {}
                for method, by_metric in by_method.items():
                    entry = {}
                    for metric, by_subject in by_metric.items():
                        if metric.startswith(SQ_DEG):  # per walker: the RMSE of its valid queries, in degrees
                            rmse = {s: [float(np.sqrt(np.nanmean(v)))] for s, v in by_subject.items()
                                    if np.isfinite(np.asarray(v, dtype=float)).any()}
                            if not rmse:
                                continue
                            metric, by_subject = RMSE_DEG + metric[len(SQ_DEG):], rmse
                        entry[metric], entry[metric + "_sd"], means = across_walkers(by_subject)
                        per_subject.setdefault(method, {})[metric] = means
                    entry["n_walkers"] = len(next(iter(by_metric.values())))
                    cell[method] = entry
                if REFERENCE in cell and "pooled" in cell:
                    cell["gap_closed"] = {m: gap_closed(cell["pooled"]["mse"], cell[m]["mse"], cell[REFERENCE]["mse"])
                                          for m in ("maml", "pooled_finetune") if m in cell}
                out.setdefault(protocol, {}).setdefault(problem, {})[shots] = {"methods": cell, "per_walker": per_subject}
    return out


def timing(models: ProblemModels, prepared: Prepared, config: PersonalizationConfig) -> Dict[str, float]:
    """Adaptation and single-cycle inference wall time on one thread (ms, median of repeats)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rec = max(prepared.recordings, key=len)
        out = {}
        for k in (1, 5):
            task = Task(rec.subject, rec.condition, rec.indices[:k], rec.indices[k + 1: k + 2], rec.indices[k: k + 1],
                        rec.key, rec.key)
            support = support_batch(prepared.tensors, task, models.problem, config.masking)
            out[f"adapt_{k}shot"] = T.timed(lambda: models.maml.adapt(support.x, support.y, support.mask,
                                                                       differentiable=False))
        query = query_batch(prepared.tensors, task, models.problem, config.masking)
        with torch.no_grad():
            out["generate_cycle"] = T.timed(lambda: models.maml.model(query.x[:1]), repeats=20)
        return out
    finally:
        torch.set_num_threads(threads)
