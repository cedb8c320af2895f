"""What K calibration strides reveal about a walker, measured without any network.

Every model of the experiment predicts a query cycle from the walker's template plus whatever its other inputs
add, and the personal reference's advantage is mostly that it knows the walker's mean cycle (see
``personalization.analysis``). So the question "how much can K strides personalize?" has a model-free part:
how well can the walker's mean cycle be estimated from K strides? Each estimator below is scored as a
prediction of the main protocol's query cycles (the template alone, no network):

* ``population``: the mean cycle of the training walkers (no personalization);
* ``prior``: the Gaussian posterior mean of the walker's mean cycle given the K-stride mean, with the
  between-walker covariance of the training walkers (what a prior learned across walkers, the thing
  meta-learning learns, adds to the strides) and their within-walker stride variance;
* ``support``: the mean of the K support strides (the first K of the recording, as calibrated);
* ``later<s>``: the mean of K strides taken after the first ``s`` ones (the cost of the start-of-walk
  transient the support strides contain);
* ``oracle_shrinkage``: ``population + alpha * (support - population)`` with one ``alpha`` per channel and
  sample fitted on the test walkers' own queries: an in-sample optimum, an upper bound for any per-element
  linear shrinkage of the support mean;
* ``own``: the mean of every non-query cycle of the recording (the personal reference's template).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
import torch
from torch import Tensor

from metagait_edge.metrics.masked import masked_mse
from metagait_edge.personalization.experiment import Prepared
from metagait_edge.personalization.inputs import template_from_support
from metagait_edge.personalization.tasks import ProtocolConfig, WalkCycles, evaluation_tasks

def estimator_names(skips: Sequence[int]) -> List[str]:
    """Every estimator's name, in table order, with the later-window ones for ``skips``."""
    return ["population", "prior", "support", *(f"later{s}" for s in skips), "oracle_shrinkage", "own"]


@dataclass
class WalkerStrides:
    """One main-protocol task's query cycles and the templates the estimators start from."""

    subject: int
    queries: Tensor  # [Q, C, L]
    query_valid: Tensor  # [Q, C]
    support: Tensor  # [C, L] mean of the K support strides
    support_valid: Tensor  # [C]
    later: Dict[int, Tensor]  # skip -> [C, L] mean of K strides after the first ``skip``
    own: Tensor  # [C, L] mean of every non-query cycle of the recording


@dataclass
class PopulationPrior:
    """What the training walkers say about walkers in general: the mean cycle, the walkers' deviations from it
    (``deviations [W, C, L]``) and the within-walker stride variance per element (``stride_var [C, L]``)."""

    mean: Tensor
    deviations: Tensor
    stride_var: Tensor


def _mean(data_x: Tensor, valid: Tensor, indices) -> Tensor:
    idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    return template_from_support(data_x[idx], valid[idx])


def population_prior(x: Tensor, valid: Tensor, recordings: Sequence[WalkCycles], subjects: Sequence[int],
                     condition: str = "walking") -> PopulationPrior:
    """The prior of :func:`posterior_mean`, from the ``condition`` recordings of ``subjects`` only."""
    recs = [r for r in recordings if r.subject in set(subjects) and r.condition == condition]
    walkers = sorted({r.subject for r in recs})
    if len(walkers) < 2:
        raise ValueError(f"a population prior needs at least 2 walkers with {condition} recordings; of subjects "
                         f"{sorted(subjects)} these have some: {walkers}")
    mean = _mean(x, valid, np.concatenate([r.indices for r in recs]))
    deviations, sq, count = [], torch.zeros_like(mean), torch.zeros_like(mean)
    for subject in walkers:
        mine = [r for r in recs if r.subject == subject]
        cycles = np.concatenate([r.indices for r in mine])
        walker_mean = _mean(x, valid, cycles)
        seen = valid[torch.as_tensor(cycles)].any(0)
        deviations.append(torch.where(seen[:, None], walker_mean - mean, torch.zeros_like(mean)))
        for r in mine:  # stride-to-stride spread around the recording's own mean
            idx = torch.as_tensor(r.indices)
            w = valid[idx].to(x.dtype)[:, :, None]
            sq += (((x[idx] - _mean(x, valid, r.indices)) ** 2) * w).sum(0)
            count += w.sum(0)
    stride_var = torch.where(count > 1, sq / count.clamp_min(1), sq.new_tensor(float("nan")))
    stride_var = torch.nan_to_num(stride_var, nan=float(np.nanmean(stride_var.numpy())))
    return PopulationPrior(mean, torch.stack(deviations), stride_var)


def posterior_mean(prior: PopulationPrior, support: Tensor, support_valid: Tensor, shots: int) -> Tensor:
    """Posterior mean of a walker's mean cycle given the mean of ``shots`` of its strides, under the Gaussian
    prior N(mean, U U^T) spanned by the training walkers' deviations (U = deviations / sqrt(W - 1)) and
    independent stride noise of variance ``stride_var / shots`` (none observed on invalid channels)."""
    w = prior.deviations.shape[0]
    u = prior.deviations.reshape(w, -1).T.double() / max(w - 1, 1) ** 0.5  # [D, W]
    observed = support_valid[:, None].expand_as(support).reshape(-1)
    precision = torch.where(observed, shots / prior.stride_var.reshape(-1).double().clamp_min(1e-8),
                            torch.zeros((), dtype=torch.float64))
    residual = (support - prior.mean).reshape(-1).double()
    system = torch.eye(w, dtype=torch.float64) + u.T @ (precision[:, None] * u)
    coefficients = torch.linalg.solve(system, u.T @ (precision * residual))
    return prior.mean + (u @ coefficients).reshape(support.shape).to(support.dtype)


def oracle_shrinkage(walkers: Sequence[WalkerStrides], population: Tensor) -> Tensor:
    """Per-element ``alpha`` in [0, 1] minimising the squared error of ``population + alpha * (support -
    population)`` over every walker's query cycles (fitted on the queries it is scored on: an upper bound)."""
    num = torch.zeros_like(population, dtype=torch.float64)
    den = torch.zeros_like(num)
    for walker in walkers:
        w = walker.query_valid.double()[:, :, None]
        step = (walker.support - population).double()
        num += ((walker.queries - population).double() * step * w).sum(0)
        den += (step ** 2 * w).sum(0)
    alpha = torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num))
    return alpha.clamp(0.0, 1.0).to(population.dtype)


def walker_strides(prepared: Prepared, subjects: Sequence[int], shots: int, protocol: ProtocolConfig,
                   skips: Sequence[int] = ()) -> List[WalkerStrides]:
    """The main protocol's tasks of ``subjects`` (queries as in the evaluation) with their templates."""
    x, valid = prepared.tensors.x, prepared.tensors.valid
    by_key = {r.key: r for r in prepared.recordings}
    out = []
    for task in evaluation_tasks(prepared.recordings, subjects, shots, protocol, False, "main"):
        positions = {int(i): p for p, i in enumerate(by_key[task.recording].indices)}
        later = {}
        for skip in skips:
            window = by_key[task.recording].indices[skip: skip + shots]
            if len(window) < shots or positions[int(window[-1])] >= positions[int(task.query.min())]:
                raise ValueError(f"recording {task.recording}: strides {skip}..{skip + shots - 1} reach its "
                                 f"queries; use a smaller skip than the protocol's gap ({protocol.gap})")
            later[skip] = _mean(x, valid, window)
        queries = set(task.query.tolist())
        own = [i for i in by_key[task.recording].indices if int(i) not in queries]
        query_idx = torch.as_tensor(task.query)
        out.append(WalkerStrides(
            subject=task.subject, queries=x[query_idx], query_valid=valid[query_idx],
            support=_mean(x, valid, task.support), support_valid=valid[torch.as_tensor(task.support)].any(0),
            later=later, own=_mean(x, valid, own)))
    return out


def score_estimators(walkers: Sequence[WalkerStrides], prior: PopulationPrior, shots: int,
                     alpha: Tensor) -> Dict[str, Dict[int, List[float]]]:
    """``{estimator: {walker: [query MSE per cycle]}}`` for every estimator (:func:`estimator_names`)."""
    scores: Dict[str, Dict[int, List[float]]] = defaultdict(lambda: defaultdict(list))
    for walker in walkers:
        templates = {
            "population": prior.mean,
            "prior": posterior_mean(prior, walker.support, walker.support_valid, shots),
            "support": walker.support,
            **{f"later{skip}": later for skip, later in walker.later.items()},
            "oracle_shrinkage": prior.mean + alpha * (walker.support - prior.mean),
            "own": walker.own,
        }
        for name, template in templates.items():
            pred = template.expand_as(walker.queries)
            mse = masked_mse(pred, walker.queries, walker.query_valid, reduction="per_sample")
            scores[name][walker.subject].extend(mse.tolist())
    return {k: dict(v) for k, v in scores.items()}
