"""The methods compared in the personalization evaluation, each a function ``(task batches) -> prediction``.

* ``maml``: the meta-trained model adapted on the support set by the MAML inner loop (learned rates);
* ``support_mean``: the mean of the K support cycles;
* ``copy_previous`` (generation only): the previous cycle as the next;
* ``pooled``: the same network trained conventionally on all training walkers, not adapted;
* ``pooled_finetune``: ``pooled`` fine-tuned on the support set (rate and steps tuned on validation walkers);
* ``scratch``: the same network, freshly initialized, trained on the support set only;
* ``reference`` (not a baseline): ``pooled`` trained further on hundreds of the test walker's own cycles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional

import torch
from torch import Tensor

from metagait_edge.config import from_dict, to_dict
from metagait_edge.meta.maml import MAML, Batch, finetune, functional_forward, size_slot
from metagait_edge.metrics.masked import masked_mse
from metagait_edge.personalization.model import CycleModel, CycleModelConfig

@dataclass
class AdaptHParams:
    """Budget of a gradient-based adaptation: full-batch steps on the support set at one learning rate."""

    steps: int = 5
    lr: float = 1e-3
    optimizer: str = "adam"


Budgets = Mapping[int, AdaptHParams]
"""Tuned budgets by support size: a support set of K examples uses the largest tuned size <= K."""


def budget_for(budgets: Budgets, support_size: int) -> AdaptHParams:
    if not budgets:
        raise ValueError("no tuned adaptation budget")
    sizes = sorted(budgets)
    return budgets[sizes[size_slot(sizes, support_size)]]


def budgets_to_dict(budgets: Budgets) -> dict:
    """Budgets as stored with a checkpoint (JSON keys are strings); read back by ``budgets_from_dict``."""
    return {str(k): to_dict(v) for k, v in budgets.items()}


def budgets_from_dict(stored: dict) -> Dict[int, AdaptHParams]:
    """Budgets as stored with a checkpoint: ``{K: hparams}``, or one ``hparams`` for every K (older runs)."""
    if "lr" in stored:
        return {0: from_dict(AdaptHParams, stored)}
    return {int(k): from_dict(AdaptHParams, v) for k, v in stored.items()}


def predict_support_mean(query: Batch, problem: str) -> Tensor:
    c = query.y.shape[1]
    offset = c if problem == "generation" else 2 * c
    return query.x[:, offset: offset + c]


def predict_copy_previous(query: Batch) -> Tensor:
    c = query.y.shape[1]
    return query.x[:, :c]


@torch.no_grad()
def predict_model(model: CycleModel, query: Batch) -> Tensor:
    return model(query.x)["output"]


def predict_finetuned(model: CycleModel, support: Batch, query: Batch, hp: AdaptHParams) -> Tensor:
    params = finetune(model, support, masked_mse, steps=hp.steps, lr=hp.lr, optimizer=hp.optimizer)  # type: ignore[arg-type]
    with torch.no_grad():
        return functional_forward(model, params, query.x)["output"]


def predict_maml(maml: MAML, support: Batch, query: Batch) -> Tensor:
    fast = maml.adapt(support.x, support.y, support.mask, differentiable=False)
    with torch.no_grad():
        return maml.forward_with(fast, query.x)["output"]


def predict_scratch(config: CycleModelConfig, support: Batch, query: Batch, hp: AdaptHParams, seed: int) -> Tensor:
    torch.manual_seed(seed)
    model = CycleModel(config)
    return predict_finetuned(model, support, query, hp)


def all_predictions(
    problem: str,
    support: Batch,
    query: Batch,
    maml: MAML,
    pooled: CycleModel,
    finetune: Budgets,
    scratch: Budgets,
    seed: int,
    only: Optional[tuple] = None,
) -> Dict[str, Tensor]:
    """Every method's prediction for one task's query batch (``only`` restricts the methods); fine-tuning
    and scratch use the budgets tuned on validation walkers for this support size."""
    k = support.x.shape[0]
    finetune_hp, scratch_hp = budget_for(finetune, k), budget_for(scratch, k)
    fns: Dict[str, Callable[[], Tensor]] = {
        "maml": lambda: predict_maml(maml, support, query),
        "support_mean": lambda: predict_support_mean(query, problem),
        "pooled": lambda: predict_model(pooled, query),
        "pooled_finetune": lambda: predict_finetuned(pooled, support, query, finetune_hp),
        "scratch": lambda: predict_scratch(pooled.config, support, query, scratch_hp, seed),
    }
    if problem == "generation":
        fns["copy_previous"] = lambda: predict_copy_previous(query)
    return {name: fn().detach() for name, fn in fns.items() if only is None or name in only}
