"""Training for the personalization experiment: the pooled model, MAML meta-training, baseline tuning.

Each function does one job and returns what it made; checkpoints are written by the caller. All of them
run unchanged on a CPU, one GPU, or many under ``torchrun`` (``metagait_edge.distributed``): each rank
draws different tasks and DDP averages the gradients.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np
import torch
from tqdm import tqdm

from metagait_edge import distributed
from metagait_edge.meta.maml import MAML, Batch, functional_forward
from metagait_edge.metrics.masked import masked_mse
from metagait_edge.personalization.config import PersonalizationConfig
from metagait_edge.personalization.episodes import CycleTensors, meta_task, query_batch, support_batch
from metagait_edge.personalization.loss import cycle_loss
from metagait_edge.personalization.methods import AdaptHParams, predict_finetuned, predict_scratch
from metagait_edge.personalization.model import CycleModel, CycleModelConfig
from metagait_edge.personalization.tasks import Task, TaskSampler, WalkCycles, evaluation_tasks

log = logging.getLogger(__name__)


@dataclass
class History:
    """Logged metrics, one dict a row (written as CSV by the command)."""

    rows: List[Dict[str, float]] = field(default_factory=list)

    def log(self, **values: float) -> None:
        self.rows.append({k: float(v) for k, v in values.items()})


def concat_batches(batches: Sequence[Batch]) -> Batch:
    return Batch(
        x=torch.cat([b.x for b in batches]),
        y=torch.cat([b.y for b in batches]),
        mask=torch.cat([b.mask for b in batches]),
    )


def model_config(config: PersonalizationConfig, problem: str, channels: int) -> CycleModelConfig:
    base = config.model_base if problem == "generation" else "template"
    return CycleModelConfig(problem=problem, channels=channels, tcn=config.tcn_for(problem), base=base)


def validation_tasks(recordings: Sequence[WalkCycles], subjects: Sequence[int], config: PersonalizationConfig,
                     problem: str) -> List[Task]:
    """Main-protocol tasks of validation walkers, at every shot count, capped for speed."""
    tasks: List[Task] = []
    for k in config.protocol.shots:
        tasks += evaluation_tasks(recordings, subjects, k, config.protocol, problem == "generation")
    rng = np.random.default_rng(0)
    cap = config.train.val_max_tasks
    if len(tasks) > cap:
        tasks = [tasks[i] for i in sorted(rng.choice(len(tasks), cap, replace=False))]
    return tasks


def fixed_batches(data: CycleTensors, tasks: Sequence[Task], problem: str, config: PersonalizationConfig,
                   seed: int) -> List[tuple]:
    g = torch.Generator().manual_seed(seed)
    return [(support_batch(data, t, problem, config.masking, g), query_batch(data, t, problem, config.masking, g))
            for t in tasks]


def train_pooled(data: CycleTensors, sampler: TaskSampler, config: PersonalizationConfig, problem: str,
                 progress: bool = True) -> tuple[CycleModel, History]:
    """Conventional training on query-style examples of many training walkers (no adaptation); with
    ``train.shape_steps`` a second phase adds the soft-DTW shape term (``loss``) to a model trained on MSE."""
    ctx = distributed.init_from_env()
    tc = config.train
    if tc.shape_steps and config.loss.sdtw_weight == 0:
        raise ValueError("train.shape_steps > 0 needs a shape term: set loss.sdtw_weight > 0")
    torch.manual_seed(tc.seed)
    model = CycleModel(model_config(config, problem, data.x.shape[1])).to(ctx.device)
    wrapped = distributed.wrap_model(model, ctx)
    opt = torch.optim.Adam(wrapped.parameters(), lr=tc.pooled_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, tc.pooled_steps)
    rng = np.random.default_rng([tc.seed, ctx.rank, 1])
    g = torch.Generator().manual_seed(tc.seed * 1000 + ctx.rank)
    history = History()
    phases = [("pooled", tc.pooled_steps, cycle_loss(config.loss) if not tc.shape_steps else masked_mse, opt, sched)]
    if tc.shape_steps:
        phases.append(("shape", tc.shape_steps, cycle_loss(config.loss),
                       torch.optim.Adam(wrapped.parameters(), lr=tc.shape_lr), None))
    step = 0
    for name, steps, loss_fn, optimizer, scheduler in phases:
        bar = tqdm(range(steps), desc=f"{name} {problem}", disable=not (progress and ctx.is_main))
        for i in bar:
            tasks = [sampler.sample(rng) for _ in range(tc.pooled_tasks_per_step)]
            batch = concat_batches([query_batch(data, t, problem, config.masking, g) for t in tasks])
            loss = loss_fn(wrapped(batch.x.to(ctx.device))["output"], batch.y.to(ctx.device), batch.mask.to(ctx.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            value = distributed.all_reduce_mean(loss.detach()).item()
            if i % 20 == 0 or i == steps - 1:
                history.log(step=step, loss=value)
                bar.set_postfix(loss=f"{value:.4f}")
            step += 1
    return model, history


@torch.no_grad()
def val_loss_pooled(model: CycleModel, batches) -> float:
    return float(np.mean([masked_mse(model(q.x)["output"], q.y, q.mask).item() for _, q in batches]))


def by_support_size(batches) -> Dict[int, list]:
    """Validation (support, query) pairs grouped by the number of support examples."""
    groups: Dict[int, list] = {}
    for s, q in batches:
        groups.setdefault(int(s.x.shape[0]), []).append((s, q))
    return dict(sorted(groups.items()))


def val_loss_maml(maml: MAML, batches) -> float:
    losses = []
    for s, q in batches:
        fast = maml.adapt(s.x, s.y, s.mask, differentiable=False)
        with torch.no_grad():
            losses.append(masked_mse(maml.forward_with(fast, q.x)["output"], q.y, q.mask).item())
    return float(np.mean(losses))


def meta_step(opt: torch.optim.Optimizer, maml: MAML, loss: torch.Tensor) -> tuple[float, bool]:
    """One meta-update; skipped when the meta-loss (mean over ranks) or a gradient is not finite: an inner
    loop that diverged on one task batch must not turn every meta-parameter into NaN (it did, once, in a
    reconstruction run with large learned rates). Returns (meta-loss, whether the update was applied)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    value = distributed.all_reduce_mean(loss.detach()).item()
    finite = np.isfinite(value) and all(bool(torch.isfinite(p.grad).all()) for p in maml.parameters() if p.grad is not None)
    if not finite:
        opt.zero_grad(set_to_none=True)
        return value, False
    opt.step()
    with torch.no_grad():  # learned inner rates must stay positive
        for lr in maml.inner_lrs.values():
            lr.clamp_(min=1e-6)
    return value, True


def freeze_for_meta_learning(maml: MAML, meta_learn: str) -> List[str]:
    """Stop the outer loop from changing the network parameters ``train.meta_learn`` excludes; returns their
    names. The inner loop still adapts them (it differentiates fast weights, not these leaves)."""
    if meta_learn == "all":
        keep = None
    elif meta_learn == "rates":
        keep = set()
    elif meta_learn == "adapted":
        keep = set(maml.adapt_names)
    else:
        raise ValueError(f"train.meta_learn must be 'all', 'rates' or 'adapted', got {meta_learn!r}")
    frozen = [] if keep is None else [n for n, _ in maml.model.named_parameters() if n not in keep]
    for name, param in maml.model.named_parameters():
        param.requires_grad_(name not in frozen)
    return frozen


def train_maml(data: CycleTensors, sampler: TaskSampler, config: PersonalizationConfig, problem: str,
               init: CycleModel, val_batches, progress: bool = True) -> tuple[MAML, History, Dict[str, float]]:
    """MAML(++) meta-training warm-started from the pooled model; the checkpoint is selected on validation
    walkers (meta-overfitting sets in after a few hundred iterations with a dozen training walkers)."""
    ctx = distributed.init_from_env()
    tc = config.train
    torch.manual_seed(tc.seed)
    maml = MAML(copy.deepcopy(init), config.maml, meta_loss_fn=cycle_loss(config.loss)).to(ctx.device)
    frozen = freeze_for_meta_learning(maml, tc.meta_learn)
    wrapped = distributed.wrap_model(maml, ctx)
    opt = torch.optim.Adam([p for p in wrapped.parameters() if p.requires_grad], lr=tc.meta_lr)
    rng = np.random.default_rng([tc.seed, ctx.rank, 2])
    g = torch.Generator().manual_seed(tc.seed * 1000 + ctx.rank + 7)
    history = History()
    maml.eval()
    if config.maml.shot_sizes:
        choose_shot_scales(maml, val_batches, tc.inner_lr_scales)
    best = {"iteration": 0, "val_loss": val_loss_maml(maml, val_batches)}
    best_state = copy.deepcopy(maml.state_dict())
    history.log(iteration=0, val_loss=best["val_loss"])
    bar = tqdm(range(1, tc.meta_iterations + 1), desc=f"maml {problem}", disable=not (progress and ctx.is_main))
    skipped = 0
    for it in bar:
        maml.train()
        maml.set_progress(it / tc.meta_iterations)
        tasks = [meta_task(data, sampler.sample(rng), problem, config.masking, g) for _ in range(tc.meta_batch)]
        value, stepped = meta_step(opt, maml, wrapped(tasks))
        skipped += not stepped
        if it % tc.val_every == 0 or it == tc.meta_iterations:
            maml.eval()
            val = val_loss_maml(maml, val_batches)
            mean_lr = float(torch.stack([v.detach().mean() for v in maml.inner_lrs.values()]).mean())
            history.log(iteration=it, meta_loss=value, val_loss=val, mean_inner_lr=mean_lr, skipped_steps=skipped)
            bar.set_postfix(meta=f"{value:.4f}", val=f"{val:.4f}", lr=f"{mean_lr:.4f}")
            if val < best["val_loss"]:
                best = {"iteration": it, "val_loss": val}
                best_state = copy.deepcopy(maml.state_dict())
    maml.load_state_dict(best_state)
    for name in frozen:  # frozen for the outer loop only; fine-tuning a copy later must still work
        maml.model.get_parameter(name).requires_grad_(True)
    maml.eval()
    return maml, history, best


def best_finite(scores: Dict[float, float]) -> float:
    """The grid value with the lowest validation loss; a diverged one (NaN/Inf) never wins."""
    finite = {k: v for k, v in scores.items() if np.isfinite(v)}
    if not finite:
        raise ValueError(f"every grid value diverged on validation walkers: {scores}")
    return min(finite, key=finite.get)


def choose_shot_scales(maml: MAML, val_batches, scales: Sequence[float]) -> Dict[int, float]:
    """Start MAML's inner rates, per support size, at the multiplier that adapts best on validation walkers
    (as fine-tuning's rate is tuned); meta-training then learns them further."""
    chosen = {}
    for size, group in by_support_size(val_batches).items():
        scores = {}
        for scale in scales:
            maml.set_shot_scale(size, scale)
            scores[scale] = val_loss_maml(maml, group)
        chosen[size] = best_finite(scores)
        maml.set_shot_scale(size, chosen[size])
        log.info("MAML inner-rate multiplier for %d-shot on validation: %s -> %g", size, scores, chosen[size])
    return chosen


def tune_adaptation(pooled: CycleModel, val_batches, config: PersonalizationConfig,
                    scratch: bool) -> Dict[int, AdaptHParams]:
    """Pick the learning rate of fine-tuning (or of training from scratch) on validation walkers only, for
    each support size (MAML's inner rates depend on it too when ``maml.shot_sizes`` is set).

    The budget is MAML's: the same number of full-batch steps on the same support set.
    """
    tc = config.train
    steps = config.maml.eval_steps or config.maml.inner_steps
    grid = tc.scratch_lrs if scratch else tc.finetune_lrs
    groups = by_support_size(val_batches) if config.maml.shot_sizes else {0: list(val_batches)}
    budgets = {}
    for size, group in groups.items():
        scores = {}
        for lr in grid:
            hp = AdaptHParams(steps=steps, lr=lr, optimizer=tc.adapt_optimizer)
            losses = []
            for i, (s, q) in enumerate(group):
                pred = predict_scratch(pooled.config, s, q, hp, seed=i) if scratch else predict_finetuned(pooled, s, q, hp)
                losses.append(masked_mse(pred, q.y, q.mask).item())
            scores[lr] = float(np.mean(losses))
        best_lr = best_finite(scores)
        log.info("%s lr grid on validation (support size %s): %s -> %g", "scratch" if scratch else "finetune",
                 size or "any", scores, best_lr)
        budgets[size] = AdaptHParams(steps=steps, lr=best_lr, optimizer=tc.adapt_optimizer)
    return budgets


def train_reference(pooled: CycleModel, examples: Batch, config: PersonalizationConfig, seed: int) -> dict:
    """The personal reference: ``pooled`` trained further on hundreds of one walker's own cycles."""
    tc = config.train
    params = {n: p.detach().clone().requires_grad_(True) for n, p in pooled.named_parameters()}
    opt = torch.optim.Adam(list(params.values()), lr=tc.reference_lr)
    g = torch.Generator().manual_seed(seed)
    n = examples.x.shape[0]
    loss_fn = cycle_loss(config.loss)
    with torch.enable_grad():
        for _ in range(tc.reference_steps):
            idx = torch.randint(0, n, (min(tc.reference_batch, n),), generator=g)
            out = functional_forward(pooled, params, examples.x[idx])["output"]
            loss = loss_fn(out, examples.y[idx], examples.mask[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return {k: v.detach() for k, v in params.items()}


def timed(fn, repeats: int = 5) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))
