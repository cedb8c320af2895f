"""MAML / MAML++ on ``torch.func.functional_call`` (no learn2learn, no higher).

The model's parameters are never modified during adaptation: adaptation produces a *fast-weight* dict
``{name: tensor}`` (names as in ``model.named_parameters()``) that ``functional_call`` runs the model
with. One pure function, :func:`adapt`, implements the inner loop; meta-training (:class:`MAML`) and the
on-device calibration of a deployed model both call it, so the deployed adaptation is exactly the one
meta-training optimised for (same steps, same per-layer per-step learning rates).

Modes of :func:`adapt`:

* ``create_graph=True`` (second-order MAML): the inner gradients are themselves differentiable, so the
  meta-gradient includes the Hessian-vector terms;
* ``create_graph=False`` (first-order MAML): the inner gradients are constants, the meta-gradient flows
  through the ``theta' = theta - lr * g`` identity path only (learned learning rates still get gradients);
* ``detach=True`` (deployment / evaluation): no graph to the model's parameters is kept at all.

:func:`finetune` is the plain fine-tuning baseline with the same budget semantics (``steps`` full-batch
gradient steps on the support set), using SGD or Adam.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Literal, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metagait_edge.metrics.masked import masked_mse

LossFn = Callable[[Tensor, Tensor, Optional[Tensor]], Tensor]
"""``loss_fn(prediction, target, mask) -> scalar``; ``mask`` is the target validity mask (or None)."""

Params = Dict[str, Tensor]
LRs = Union[float, Sequence[float], Mapping[str, Union[float, Tensor]]]


@dataclass
class Batch:
    """Inputs and targets of one support or query set.

    ``x [B, C_in, T]`` is the model input, ``y [B, C_out, T]`` the target, ``mask`` the validity of ``y``
    for the loss (``[B, C_out]`` or ``[B, C_out, T]``) and ``x_mask`` the mask passed to the model as
    ``forward(x, mask=x_mask)`` (input validity, e.g. for reconstruction).
    """

    x: Tensor
    y: Tensor
    mask: Optional[Tensor] = None
    x_mask: Optional[Tensor] = None

    def to(self, device: Union[str, torch.device]) -> "Batch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(move(self.x), move(self.y), move(self.mask), move(self.x_mask))


@dataclass
class Episode:
    """One few-shot task as tensors: adapt on ``support``, evaluate on ``query`` (the batches MAML trains on;
    ``personalization.tasks.Task`` is the task as cycle indices, ``personalization.episodes.meta_task`` turns
    one into the other)."""

    support: Batch
    query: Batch


@dataclass
class MAMLConfig:
    """Meta-learning settings.

    ``learn_inner_lr``: MAML++ per-layer (per parameter tensor) per-step learned inner learning rates.
    ``multi_step_loss``: MAML++ weighted sum of the query losses after every inner step; the weights of
    the non-final steps anneal linearly to a floor over the first ``msl_anneal_fraction`` of training.
    ``first_order_until``: MAML++ derivative-order annealing; first-order while training progress is
    below this fraction (0 = never first-order unless ``first_order``).
    ``adapt``: which parameters the inner loop changes: ``all``, ``head`` (ANIL), ``film`` or ``bias``.
    ``eval_steps``: inner steps at evaluation / deployment (default ``inner_steps``); steps beyond the
    learned schedule reuse the last step's learning rates.
    ``shot_sizes``: support sizes (number of support examples) that get their own learned multiplier of
    every inner rate; a support set of K examples uses the one of the largest listed size <= K (the
    smallest for fewer). One cycle's gradient is noisy and five cycles' is not, so the step that helps
    at 5 shots overfits at 1 shot (measured on validation walkers). Empty: one schedule for every K.
    """

    inner_steps: int = 5
    inner_lr: float = 0.01
    first_order: bool = False
    learn_inner_lr: bool = True
    multi_step_loss: bool = True
    msl_anneal_fraction: float = 0.3
    first_order_until: float = 0.0
    adapt: Literal["all", "head", "film", "bias"] = "all"
    eval_steps: Optional[int] = None
    output_key: str = "output"
    shot_sizes: List[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if any(k < 1 for k in self.shot_sizes) or list(self.shot_sizes) != sorted(set(self.shot_sizes)):
            raise ValueError(f"MAMLConfig.shot_sizes must be increasing sizes >= 1, got {self.shot_sizes}")
        if self.inner_steps < 1:
            raise ValueError(f"MAMLConfig.inner_steps must be >= 1, got {self.inner_steps}")
        if self.eval_steps is not None and self.eval_steps < 0:
            raise ValueError(f"MAMLConfig.eval_steps must be >= 0, got {self.eval_steps}")
        if self.inner_lr <= 0:
            raise ValueError(f"MAMLConfig.inner_lr must be > 0, got {self.inner_lr}")
        for name in ("msl_anneal_fraction", "first_order_until"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"MAMLConfig.{name} must be in [0, 1], got {getattr(self, name)}")


# ----------------------------------------------------------------------------------------------------
# Pure functions: shared by meta-training, evaluation and on-device calibration.


def size_slot(sizes: Sequence[int], support_size: int) -> int:
    """Index of the entry of the increasing ``sizes`` that a support set of ``support_size`` examples uses:
    the largest size <= ``support_size``, the smallest for fewer. Rates and budgets tuned per support size
    all follow this rule."""
    return max([i for i, k in enumerate(sizes) if k <= support_size], default=0)


def model_params(model: nn.Module, detach: bool = False) -> Params:
    """The model's parameters as a fast-weight dict (the starting point of an adaptation)."""
    return {n: (p.detach() if detach else p) for n, p in model.named_parameters()}


def functional_forward(
    model: nn.Module, params: Mapping[str, Tensor], x: Tensor, mask: Optional[Tensor] = None
) -> Dict[str, Tensor]:
    """Run ``model`` with ``params`` in place of its own parameters (its buffers are used as they are)."""
    kwargs = {} if mask is None else {"mask": mask}
    return functional_call(model, dict(params), (x,), kwargs, strict=False)


def batch_loss(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batch: Batch,
    loss_fn: LossFn = masked_mse,
    output_key: str = "output",
) -> Tensor:
    out = functional_forward(model, params, batch.x, batch.x_mask)
    if output_key not in out:
        raise KeyError(f"model output has no {output_key!r}; it has {sorted(out)}")
    return loss_fn(out[output_key], batch.y, batch.mask)


def _lr_at(lrs: LRs, name: str, step: int) -> Union[float, Tensor]:
    if isinstance(lrs, (int, float)):
        return float(lrs)
    if isinstance(lrs, Mapping):
        if name not in lrs:
            raise KeyError(f"no inner learning rate for parameter {name!r}")
        lr = lrs[name]
        if isinstance(lr, Tensor) and lr.dim() > 0:
            return lr[min(step, lr.shape[0] - 1)]
        return lr
    seq = list(lrs)
    return float(seq[min(step, len(seq) - 1)])


def adapt(
    model: nn.Module,
    params: Mapping[str, Tensor],
    support: Batch,
    loss_fn: LossFn = masked_mse,
    steps: int = 5,
    lrs: LRs = 0.01,
    *,
    adapt_names: Optional[Sequence[str]] = None,
    create_graph: bool = False,
    detach: bool = False,
    output_key: str = "output",
    trajectory: bool = False,
) -> Union[Params, List[Params]]:
    """``steps`` gradient-descent steps on the support loss, starting from ``params``.

    ``lrs``: one float, a per-step sequence, or a mapping ``name -> float | Tensor[steps]`` (per-layer,
    per-step; tensors may be learnable). ``adapt_names``: the parameters changed (default: all of
    ``params``); the others stay as given. Returns the adapted dict, or with ``trajectory`` the list of
    dicts after 0, 1, ..., ``steps`` steps (for the multi-step loss).
    """
    if steps < 0:
        raise ValueError(f"adapt: steps must be >= 0, got {steps}")
    names = list(params) if adapt_names is None else list(adapt_names)
    unknown = [n for n in names if n not in params]
    if unknown:
        raise KeyError(f"adapt: parameters {unknown} are not in the parameter dict")
    if detach and create_graph:
        raise ValueError("adapt: detach=True and create_graph=True contradict each other")
    current: Params = dict(params)
    if detach:
        current = {n: p.detach() for n, p in current.items()}
    history = [current]
    # Calibration may run under torch.no_grad() (e.g. inside a runtime); the inner loop needs gradients.
    with torch.enable_grad():
        for step in range(steps):
            leaves = {}
            for n in names:
                p = current[n]
                if not p.requires_grad:
                    p = p.detach().requires_grad_(True)
                leaves[n] = p
            current = {**current, **leaves}
            loss = batch_loss(model, current, support, loss_fn, output_key)
            grads = torch.autograd.grad(
                loss, [leaves[n] for n in names], create_graph=create_graph, allow_unused=True
            )
            updated = dict(current)
            for n, g in zip(names, grads):
                if g is None:  # parameter does not influence the support loss
                    continue
                new = current[n] - _lr_at(lrs, n, step) * g
                updated[n] = new.detach() if detach else new
            current = updated
            history.append(current)
    if detach:
        current = {n: p.detach() for n, p in current.items()}
        history[-1] = current
    return history if trajectory else current


def finetune(
    model: nn.Module,
    support: Batch,
    loss_fn: LossFn = masked_mse,
    steps: int = 5,
    lr: float = 1e-3,
    optimizer: Literal["sgd", "adam"] = "adam",
    *,
    adapt_names: Optional[Sequence[str]] = None,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    output_key: str = "output",
) -> Params:
    """Plain fine-tuning baseline: ``steps`` full-batch SGD or Adam steps on the support set.

    The update rules are those of ``torch.optim.SGD`` / ``torch.optim.Adam`` (L2 ``weight_decay`` added
    to the gradient), written out on the fast-weight dict: no optimizer object, and no first-step import
    of ``torch._dynamo`` (seconds on a small board). The model is not modified; returns a detached
    fast-weight dict for :func:`functional_forward`.
    """
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"finetune: optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    params = model_params(model, detach=True)
    names = list(params) if adapt_names is None else list(adapt_names)
    unknown = [n for n in names if n not in params]
    if unknown:
        raise KeyError(f"finetune: parameters {unknown} are not in the model")
    b1, b2 = betas
    m = {n: torch.zeros_like(params[n]) for n in names}
    v = {n: torch.zeros_like(params[n]) for n in names}
    with torch.enable_grad():
        for t in range(1, steps + 1):
            leaves = {n: params[n].detach().requires_grad_(True) for n in names}
            params.update(leaves)
            loss = batch_loss(model, params, support, loss_fn, output_key)
            grads = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True)
            with torch.no_grad():
                for n, g in zip(names, grads):
                    p = leaves[n].detach()
                    g = torch.zeros_like(p) if g is None else g
                    if weight_decay:
                        g = g + weight_decay * p
                    if optimizer == "sgd":
                        params[n] = p - lr * g
                        continue
                    m[n] = b1 * m[n] + (1 - b1) * g
                    v[n] = b2 * v[n] + (1 - b2) * g * g
                    denom = (v[n] / (1 - b2**t)).sqrt() + eps
                    params[n] = p - lr * (m[n] / (1 - b1**t)) / denom
    return {n: p.detach() for n, p in params.items()}


def multi_step_weights(steps: int, progress: float, anneal_fraction: float = 0.3) -> List[float]:
    """MAML++ multi-step-loss weights over the query losses after steps 1..``steps``.

    At ``progress`` 0 all steps weigh ``1/steps``; the non-final weights decay linearly to
    ``0.03/steps`` by ``progress == anneal_fraction``; the final step takes the rest (sum is 1).
    """
    if steps == 1:
        return [1.0]
    floor = 0.03 / steps
    frac = 1.0 if anneal_fraction <= 0 else min(max(progress, 0.0) / anneal_fraction, 1.0)
    non_final = max(1.0 / steps * (1.0 - frac), floor)
    return [non_final] * (steps - 1) + [1.0 - non_final * (steps - 1)]


# ----------------------------------------------------------------------------------------------------


def _lr_key(name: str) -> str:
    return name.replace(".", "__")


class MAML(nn.Module):
    """A learn2learn-like wrapper: ``adapt`` a model on a support set, ``meta_loss`` over tasks.

    ``maml.parameters()`` holds the meta-parameters: the model's parameters and, with
    ``learn_inner_lr``, the per-layer per-step inner learning rates; give them all to the meta-optimizer.
    ``forward(tasks)`` is ``meta_loss(tasks)`` so that the wrapper can be put under DDP.
    """

    def __init__(self, model: nn.Module, config: MAMLConfig | None = None, loss_fn: LossFn = masked_mse,
                 meta_loss_fn: Optional[LossFn] = None):
        super().__init__()
        self.model = model
        self.config = config = config or MAMLConfig()
        self.loss_fn = loss_fn  # the inner loop's, on support sets (also what ``adapt`` uses on a device)
        self.meta_loss_fn = meta_loss_fn or loss_fn  # the outer loop's, on query sets
        self.progress = 0.0
        self.last_step_losses: Optional[Tensor] = None
        if config.adapt == "all":
            self.adapt_names = [n for n, _ in model.named_parameters()]
        elif hasattr(model, "adaptation_parameter_names"):
            self.adapt_names = list(model.adaptation_parameter_names(config.adapt))
        else:
            raise ValueError(f"adapt={config.adapt!r} needs a model with adaptation_parameter_names()")
        if not self.adapt_names:
            raise ValueError(f"adapt={config.adapt!r} selects no parameters of {type(model).__name__}")
        init = torch.full((config.inner_steps,), float(config.inner_lr))
        self.inner_lrs = nn.ParameterDict(
            {_lr_key(n): nn.Parameter(init.clone(), requires_grad=config.learn_inner_lr) for n in self.adapt_names}
        )
        if config.shot_sizes:
            # log-multipliers keep the rates positive whatever the meta-gradient does
            self.log_shot_scale = nn.Parameter(torch.zeros(len(config.shot_sizes)),
                                               requires_grad=config.learn_inner_lr)

    def shot_index(self, support_size: int) -> int:
        """Which ``shot_sizes`` multiplier a support set of ``support_size`` examples uses."""
        return size_slot(self.config.shot_sizes, support_size)

    def shot_scale(self, support_size: Optional[int]) -> Optional[Tensor]:
        if not self.config.shot_sizes or support_size is None:
            return None
        return self.log_shot_scale[self.shot_index(support_size)].exp()

    def set_shot_scale(self, support_size: int, scale: float) -> None:
        """Set the multiplier used for ``support_size`` examples (e.g. chosen on validation walkers)."""
        if not self.config.shot_sizes:
            raise ValueError("set_shot_scale: this MAML has no shot_sizes")
        if scale <= 0:
            raise ValueError(f"set_shot_scale: scale must be > 0, got {scale}")
        with torch.no_grad():
            self.log_shot_scale[self.shot_index(support_size)] = float(torch.log(torch.tensor(scale)))

    def learning_rates(self, support_size: Optional[int] = None) -> Dict[str, Tensor]:
        """Per-parameter inner learning-rate schedules ``name -> Tensor[inner_steps]`` (for a support set of
        ``support_size`` examples when the rates depend on it)."""
        scale = self.shot_scale(support_size)
        lrs = {n: self.inner_lrs[_lr_key(n)] for n in self.adapt_names}
        return lrs if scale is None else {n: v * scale for n, v in lrs.items()}

    def set_progress(self, progress: float) -> None:
        """Fraction of meta-training done, in [0, 1]; drives the MAML++ annealing schedules."""
        self.progress = float(progress)

    def _first_order_now(self) -> bool:
        return self.config.first_order or self.progress < self.config.first_order_until

    def adapt(
        self,
        support_x: Tensor,
        support_y: Tensor,
        support_mask: Optional[Tensor] = None,
        loss_fn: Optional[LossFn] = None,
        steps: Optional[int] = None,
        *,
        x_mask: Optional[Tensor] = None,
        differentiable: Optional[bool] = None,
        max_backtracks: int = 2,
    ) -> Params:
        """Fast weights after adapting on the support set.

        ``differentiable`` (default: ``self.training``) keeps the graph to the meta-parameters
        (second-order unless first-order is configured / annealed); otherwise the result is detached,
        as used for evaluation and deployment. ``steps`` defaults to ``inner_steps`` when
        differentiable, else ``eval_steps``.

        Detached adaptation is safeguarded, on the support set only: when the adapted support loss is not
        finite or above the unadapted one, the adaptation is redone with a third of the rates, up to
        ``max_backtracks`` times, and finally the unadapted weights are returned. Rates tuned to the edge of
        stability on some walkers can diverge on an unusual one, and a calibration must never produce NaN.
        """
        support = Batch(support_x, support_y, support_mask, x_mask)
        differentiable = self.training if differentiable is None else differentiable
        fast = self._adapt(support, loss_fn, steps, differentiable, trajectory=False)
        if differentiable:
            return fast  # type: ignore[return-value]
        loss = loss_fn or self.loss_fn
        with torch.no_grad():
            start = model_params(self.model, detach=True)
            before = batch_loss(self.model, start, support, loss, self.config.output_key).item()
            for attempt in range(max_backtracks + 1):
                if attempt:
                    fast = self._adapt(support, loss_fn, steps, False, trajectory=False, lr_scale=3.0**-attempt)
                after = batch_loss(self.model, fast, support, loss, self.config.output_key).item()
                if math.isfinite(after) and after <= before:
                    return fast  # type: ignore[return-value]
        return start

    def _adapt(self, support, loss_fn, steps, differentiable, trajectory, lr_scale: float = 1.0):
        cfg = self.config
        differentiable = self.training if differentiable is None else differentiable
        if steps is None:
            steps = cfg.inner_steps if differentiable or cfg.eval_steps is None else cfg.eval_steps
        lrs = {n: v * lr_scale for n, v in self.learning_rates(support.x.shape[0]).items()}
        if not differentiable:
            lrs = {n: v.detach() for n, v in lrs.items()}
        return adapt(
            self.model,
            model_params(self.model, detach=not differentiable),
            support,
            loss_fn or self.loss_fn,
            steps,
            lrs,
            adapt_names=self.adapt_names,
            create_graph=differentiable and not self._first_order_now(),
            detach=not differentiable,
            output_key=cfg.output_key,
            trajectory=trajectory,
        )

    def forward_with(self, fast_params: Mapping[str, Tensor], x: Tensor, mask: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """The model's output dict computed with ``fast_params``."""
        return functional_forward(self.model, fast_params, x, mask)

    def task_loss(self, task: Episode, progress: Optional[float] = None) -> tuple[Tensor, Tensor]:
        """(weighted meta-loss, per-step query losses [steps]) of one task."""
        cfg = self.config
        steps = cfg.inner_steps
        traj = self._adapt(task.support, None, steps, True, trajectory=cfg.multi_step_loss)
        if cfg.multi_step_loss:
            p = self.progress if progress is None else progress
            weights = multi_step_weights(steps, p, cfg.msl_anneal_fraction)
            losses = torch.stack(
                [batch_loss(self.model, traj[s + 1], task.query, self.meta_loss_fn, cfg.output_key) for s in range(steps)]
            )
            total = sum(w * l for w, l in zip(weights, losses))
            return total, losses.detach()
        loss = batch_loss(self.model, traj, task.query, self.meta_loss_fn, cfg.output_key)
        return loss, loss.detach()[None]

    def meta_loss(self, tasks: Sequence[Episode], progress: Optional[float] = None) -> Tensor:
        """Mean over tasks of the (multi-step weighted) query loss after adaptation; call ``.backward()``.

        The per-step query losses (mean over tasks) are kept in ``self.last_step_losses``.
        """
        if not tasks:
            raise ValueError("meta_loss: empty task batch")
        totals, per_step = [], []
        for task in tasks:
            total, steps = self.task_loss(task, progress)
            totals.append(total)
            per_step.append(steps)
        self.last_step_losses = torch.stack(per_step).mean(0)
        return torch.stack(totals).mean()

    def forward(self, tasks: Sequence[Episode], progress: Optional[float] = None) -> Tensor:  # type: ignore[override]
        return self.meta_loss(tasks, progress)
