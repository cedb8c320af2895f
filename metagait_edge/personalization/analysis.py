"""Where the gap between the pooled model and the personal reference comes from: the template.

Every model here takes the walker's template (the mean of known cycles) as an input. The personal reference
differs from the pooled model in two ways: its weights were trained on hundreds of the walker's cycles, and
its template is the mean of all of them. ``template_gap`` separates the two on the main protocol's test
tasks: it scores the pooled model and the reference's weights with templates averaged over the first M
cycles of the recording (M = 1, 2, 5, ...), and reports for each the fraction of the pooled-to-reference
gap it closes. If a template from M cycles is what closes the gap, then no method that sees K < M cycles
can close it: the information is not in the support set.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from typing import Dict, Sequence

import numpy as np
import torch
from tqdm import tqdm

from metagait_edge.meta.maml import functional_forward
from metagait_edge.metrics.masked import masked_mse
from metagait_edge.personalization import train as T
from metagait_edge.personalization.episodes import query_batch, support_batch
from metagait_edge.personalization.evaluate import across_walkers, gap_closed, reference_examples
from metagait_edge.personalization.experiment import Prepared, ProblemModels
from metagait_edge.personalization.inputs import template_from_support
from metagait_edge.personalization.methods import predict_maml
from metagait_edge.personalization.tasks import evaluation_tasks

ALL = "all"  # the template of every non-query cycle of the recording (the reference's own)


def first_cycles(recording_indices: np.ndarray, exclude: set, m: int | str) -> np.ndarray:
    """The first ``m`` cycles of a recording that are not queries (all of them for ``ALL``)."""
    own = np.array([i for i in recording_indices if i not in exclude], dtype=np.int64)
    return own if m == ALL else own[: int(m)]


def template_gap(models: ProblemModels, prepared: Prepared, config, shots: int = 5,
                 template_sizes: Sequence[int | str] = (1, 2, 5, 10, 20, ALL), seed: int = 0,
                 progress: bool = True) -> Dict[str, Dict[int, list]]:
    """Per test walker, mean query MSE of: ``pooled@M`` (pooled weights, template of the first M cycles),
    ``reference@M`` (the reference's weights), and ``maml`` (adapted on the ``shots``-cycle support).

    Returns ``{variant: {walker: [mse per query cycle]}}``; ``pooled@shots`` is the pooled baseline and
    ``reference@all`` the personal reference of the evaluation report.
    """
    problem, data = models.problem, prepared.tensors
    tasks = evaluation_tasks(prepared.recordings, models.split["test"], shots, config.protocol,
                             problem == "generation", "main")
    by_key = {r.key: r for r in prepared.recordings}
    exclude: Dict[int, set] = defaultdict(set)
    for t in tasks:
        exclude[t.subject].update(t.query.tolist() + t.query_prev.tolist())
    out: Dict[str, Dict[int, list]] = defaultdict(lambda: defaultdict(list))
    pooled_params = {n: p.detach() for n, p in models.pooled.named_parameters()}
    references: Dict[int, dict] = {}
    for task in tqdm(tasks, desc=f"template gap {problem}", disable=not progress):
        if task.subject not in references:  # the evaluation's personal reference, trained once per walker
            gen = torch.Generator().manual_seed(seed * 7919 + task.subject)
            examples, _ = reference_examples(data, prepared.recordings, task.subject, exclude[task.subject],
                                             problem, config, gen)
            references[task.subject] = T.train_reference(models.pooled, examples, config, seed * 31 + task.subject)
        ref_params = references[task.subject]
        mask_seed = zlib.crc32(f"{seed}/{task.recording}".encode())
        for m in template_sizes:
            idx = torch.as_tensor(first_cycles(by_key[task.recording].indices, exclude[task.subject], m))
            template = template_from_support(data.x[idx], data.valid[idx])
            query = query_batch(data, task, problem, config.masking, torch.Generator().manual_seed(mask_seed), template)
            for name, params in (("pooled", pooled_params), ("reference", ref_params)):
                out[f"{name}@{m}"][task.subject].extend(_query_mse(models, params, query))
        support = support_batch(data, task, problem, config.masking, torch.Generator().manual_seed(mask_seed + 1))
        query = query_batch(data, task, problem, config.masking, torch.Generator().manual_seed(mask_seed))
        pred = predict_maml(models.maml, support, query)
        out["maml"][task.subject].extend(masked_mse(pred, query.y, query.mask, reduction="per_sample").tolist())
    return {k: dict(v) for k, v in out.items()}


def _query_mse(models: ProblemModels, params: dict, query) -> list:
    with torch.no_grad():
        pred = functional_forward(models.pooled, params, query.x)["output"]
    return masked_mse(pred, query.y, query.mask, reduction="per_sample").tolist()


def summarize_gap(per_walker: Dict[str, Dict[int, list]], shots: int) -> Dict[str, dict]:
    """Mean ± SD over walkers of per-walker mean MSE, and the fraction of the gap between the pooled
    baseline (``pooled@shots``) and the personal reference (``reference@all``) that each variant closes."""
    out = {}
    for name, walkers in per_walker.items():
        mse, sd, _ = across_walkers(walkers)
        out[name] = {"mse": mse, "mse_sd": sd, "walkers": len(walkers)}
    base, ref = out[f"pooled@{shots}"]["mse"], out["reference@all"]["mse"]
    for row in out.values():
        row["gap_closed"] = gap_closed(base, row["mse"], ref)
    return out
