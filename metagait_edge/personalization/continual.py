"""Continual personalization: after the few-shot calibration, keep learning the wearer as they walk.

The learner keeps two things about the walker:

* a *growing personal template*: the running mean of every stride walked since calibration (the walker's
  own mean cycle is most of what personalization can learn: docs/results/personalization_stride_information.md);
* a *bounded buffer* of the most recent ``buffer_strides`` strides (normalized, with channel validity).

Every ``every_strides`` new strides it proposes an update (:func:`propose_update`): the newest
``holdout_strides`` strides of the buffer are held out. Candidates, all from the older strides only: the current
weights and the fallback's (the pooled model: what the walker gets without personalization), each with the grown
template, the recent template (the last ``recent_strides`` strides: a walker's cycle drifts within and between
sessions) or the calibration's; the best of those with its output head refitted in closed form on the buffer
(:func:`refit_head`, ``ridge``); the best with every weight trained ``grad_steps`` Adam steps on the buffer
(:func:`train_steps`); the best with a per-phase residual added to its output (its mean error on the buffer per
channel and sample of the cycle, :func:`phase_residual`, ``residual_prior``); and the fallback itself. The best one on the held-out strides is accepted only if
it beats both the current state and the fallback there (optionally on a majority of the strides); otherwise the
current state stays (rollback). Because the held-out strides are newer than the last update
(``holdout_strides <= every_strides``), neither the current state nor the candidate has seen them.

:class:`Learner` keeps this state for one walker; the runtime's ``ContinualLearner`` (a thread, atomic profile
commits) and the evaluation (``continual_eval``) both drive it.

Torch is imported inside the functions: this module's config is part of the runtime's YAML
(``runtime.config.EdgeConfig.continual``), which must load without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections import deque
from typing import TYPE_CHECKING, Deque, Dict, Optional

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor


@dataclass
class ContinualConfig:
    """How the runtime (``enabled``) and the evaluation learn a walker continually (see the module docstring)."""

    enabled: bool = False  # runtime only: the evaluation always learns
    # every_strides, holdout_strides, recent_strides, ridge, grad_steps and residual_prior were chosen on the
    # shipped fold's 3 validation walkers (walk up to the future, docs/results/personalization_continual.md): the
    # head refit (ridge 0.1) with a 20-stride recent template closed 59 / 67 / 63 % of the gap after 50 / 100 / 200
    # strides there (33 / 37 / 27 % for the template alone, ridge 0); adding 4 gradient steps per update and a
    # per-phase residual (prior 5 strides) 80 / 89 / 105 %, none worse than pooled; the residual alone 65 / 77 / 77,
    # the gradient steps alone 65 / 85 / 84 with 1 walker worse, 10 steps 89 / 111 / 133 with 1 walker worse;
    # ridge 0.03, 0.3, buffers of 100 or 120, updates every 10 strides on 10 held out, a 60-stride grown template
    # and the majority test did no better
    every_strides: int = 5  # an update is proposed after every this many new valid strides
    buffer_strides: int = 60  # recent strides kept for adaptation (memory stays bounded on a long walk)
    holdout_strides: int = 5  # the newest strides of the buffer, held out to accept or reject an update
    # Weights: the output head is refitted in closed form on the buffer (``refit_head``), pulled towards the
    # current head with this weight per sample; 0 disables the refit (templates and the choice of weights only)
    ridge: float = 0.1
    # The template: the mean of every stride walked since calibration (0), or of the last this many (a walker's
    # cycle drifts between sessions as sensors are put on again)
    template_strides: int = 0
    # An extra candidate template: the mean of the last this many strides before the held-out ones (0: none);
    # a walker's cycle drifts within and between sessions
    recent_strides: int = 20
    # Gradient steps: an extra candidate trains every weight of the best candidate this many Adam steps (learning
    # rate ``grad_lr``, ``grad_batch`` random stride pairs of the buffer, masked MSE); accepted updates carry
    # the training on from one update to the next; 0: none
    grad_steps: int = 4
    grad_lr: float = 1e-3
    grad_batch: int = 32
    # A per-phase residual: an extra candidate adds the best candidate's mean error over the buffer, per channel
    # and sample of the cycle (what a 1x1 output head cannot learn), shrunk towards zero as sum / (n + this) for
    # n strides; 0: no residual
    residual_prior: float = 5.0
    # Session change: after a gap (a stride that does not follow the previous one: a pause, sensors put on
    # again), the first update whose held-out strides all follow the gap checks them; if the current state's
    # held-out loss exceeds the fallback's by more than this (relative), the walker is taken to have changed and
    # the learner re-anchors: the fallback weights with the mean of the strides since the gap as template (the
    # new fallback), the buffer and the grown template restarted from those strides; 0: no check. On the
    # validation walkers' name-order walk (docs/results/personalization_continual.md) 0.1 never fired: after every
    # gap the personalized state still beat the fallback on the strides it walked, so the curve was unchanged
    session_jump: float = 0.0
    min_improvement: float = 0.0  # relative: accept only if held-out loss < current * (1 - this)
    # accept only a candidate that also beats the current state on more than half of the held-out strides
    majority: bool = False

    def __post_init__(self) -> None:
        if self.every_strides < 1:
            raise ValueError(f"continual.every_strides must be >= 1, got {self.every_strides}")
        if not 1 <= self.holdout_strides <= self.every_strides:
            raise ValueError(f"continual.holdout_strides must be in 1..every_strides ({self.every_strides}), got "
                             f"{self.holdout_strides}: held-out strides must be newer than the last update")
        if self.buffer_strides < self.holdout_strides + 3:
            raise ValueError(f"continual.buffer_strides ({self.buffer_strides}) must exceed holdout_strides "
                             f"({self.holdout_strides}) by at least 3: an update needs strides to learn from")
        for name, zero_means in (("template_strides", "every stride"), ("recent_strides", "no recent template"),
                                 ("session_jump", "no session check"), ("residual_prior", "no residual"),
                                 ("ridge", "template only")):
            if getattr(self, name) < 0:
                raise ValueError(f"continual.{name} must be >= 0 (0: {zero_means}), got {getattr(self, name)}")
        if self.grad_steps < 0 or self.grad_lr <= 0 or self.grad_batch < 1:
            raise ValueError(f"continual.grad_steps must be >= 0, grad_lr > 0 and grad_batch >= 1, got "
                             f"{self.grad_steps}, {self.grad_lr}, {self.grad_batch}")
        if not 0.0 <= self.min_improvement < 1.0:
            raise ValueError(f"continual.min_improvement must be in [0, 1), got {self.min_improvement}")


class RunningTemplate:
    """The growing personal template: per channel and sample, the mean of every valid stride added."""

    def __init__(self, total: "Tensor", count: "Tensor") -> None:
        self.total = total.double().clone()  # [C, L]
        self.count = count.double().clone()  # [C]

    @classmethod
    def from_strides(cls, strides: "Tensor", valid: "Tensor") -> "RunningTemplate":
        w = valid.double()[:, :, None]
        return cls((strides.double() * w).sum(0), valid.double().sum(0))

    def add(self, stride: "Tensor", valid: "Tensor") -> None:
        w = valid.double()[:, None]
        self.total += stride.double() * w
        self.count += valid.double()

    def mean(self, without: Optional["Tensor"] = None, without_valid: Optional["Tensor"] = None) -> "Tensor":
        """The template, optionally without strides ``without [K, C, L]`` that were added (held out)."""
        import torch

        total, count = self.total, self.count
        if without is not None and len(without):
            w = without_valid.double()[:, :, None]
            total = total - (without.double() * w).sum(0)
            count = count - without_valid.double().sum(0)
        out = torch.where(count[:, None] > 0, total / count.clamp_min(1)[:, None], torch.zeros_like(total))
        return out.float()

    @property
    def strides(self) -> int:
        return int(self.count.max().item()) if self.count.numel() else 0


@dataclass
class ModelState:
    """What generates a walker's next cycle: network parameters and the normalized template [C, L]."""

    params: Dict[str, "Tensor"]
    template: "Tensor"
    residual: Optional["Tensor"] = None  # [C, L], added to the network's output (normalized channels)


def _output(model, params: Dict[str, "Tensor"], residual: Optional["Tensor"], x: "Tensor") -> "Tensor":
    from metagait_edge.meta.maml import functional_forward

    out = functional_forward(model, params, x)["output"]
    return out if residual is None else out + residual[None].to(out.dtype)


def predict(model, state: ModelState, x: "Tensor") -> "Tensor":
    """The next cycles ``state`` generates from generation inputs ``x`` (its template already in them)."""
    import torch

    with torch.no_grad():
        return _output(model, state.params, state.residual, x)


@dataclass
class UpdateDecision:
    accepted: bool
    state: ModelState  # the state to use from now on (the current one when rejected)
    kind: str  # "weights+template", "template" or "rejected"
    loss_current: float  # held-out loss of the state before the update
    loss_candidate: float  # held-out loss of the best candidate
    loss_fallback: float  # held-out loss of the model without personalization
    reason: str = ""


def generation_pairs(strides: "Tensor", valid: "Tensor", contiguous: "Tensor", targets, template: "Tensor"):
    """Generation examples ``prev -> next`` for the target positions (each needs a contiguous predecessor)."""
    import torch

    from metagait_edge.meta.maml import Batch
    from metagait_edge.personalization.inputs import generation_input

    pos = torch.as_tensor([int(p) for p in targets if p >= 1 and bool(contiguous[p])], dtype=torch.long)
    y, v = strides[pos], valid[pos]
    x = generation_input(strides[pos - 1], template[None].expand_as(y), v)
    return Batch(x=x, y=y, mask=v)


def held_out_loss(model, state: ModelState, batch) -> float:
    import torch

    from metagait_edge.metrics.masked import masked_mse

    return float(masked_mse(predict(model, state, batch.x), batch.y, batch.mask))


def with_template(batch, template: "Tensor"):
    """``batch`` (generation inputs) with another template: the middle third of the input channels."""
    from metagait_edge.meta.maml import Batch

    c = batch.y.shape[1]
    x = batch.x.clone()
    x[:, c: 2 * c] = template[None] * batch.x[:, 2 * c:]  # the template is masked by channel validity
    return Batch(x=x, y=batch.y, mask=batch.mask)


def refit_head(model, params: Dict[str, "Tensor"], batch, ridge: float) -> Dict[str, "Tensor"]:
    """``params`` with the output head (a 1x1 convolution, ``tcn.head``) refitted in closed form on ``batch``.

    Everything below the head stays as it is, so its features are computed once and each channel's head row
    is a ridge regression on them (valid strides only), pulled towards the current row with weight
    ``ridge`` per sample: ``min |W h + b - r|^2 + ridge * n * |[W, b] - [W0, b0]|^2``. One forward pass and
    C small solves: a fraction of a second on one core, where backpropagating through the network for a
    comparable fit costs tens of seconds (measured in docs/results/personalization_continual.md).
    """
    import torch

    from metagait_edge.meta.maml import functional_forward

    captured = {}
    hook = model.tcn.head.register_forward_hook(lambda module, inputs, output: captured.__setitem__("h", inputs[0]))
    try:
        with torch.no_grad():
            out = functional_forward(model, params, batch.x)["output"]
    finally:
        hook.remove()
    h = captured["h"].double()  # [B, H, L]
    w0, b0 = params["tcn.head.weight"].double(), params["tcn.head.bias"].double()  # [C, H, 1], [C]
    below = out.double() - (torch.einsum("ch,bhl->bcl", w0[:, :, 0], h) + b0[None, :, None])
    residual = batch.y.double() - below  # what the head has to produce
    feats = torch.cat([h, torch.ones_like(h[:, :1])], dim=1)  # [B, H+1, L]
    m = batch.mask.double()  # [B, C]
    gram = torch.einsum("bc,bil,bjl->cij", m, feats, feats)
    rhs = torch.einsum("bc,bil,bcl->ci", m, feats, residual)
    n = (m.sum(0) * h.shape[-1]).clamp_min(1.0)  # samples per channel
    theta0 = torch.cat([w0[:, :, 0], b0[:, None]], dim=1)  # [C, H+1]
    eye = torch.eye(feats.shape[1], dtype=torch.float64)
    theta = torch.linalg.solve(gram + ridge * n[:, None, None] * eye, rhs + ridge * n[:, None] * theta0)
    theta = torch.where(m.sum(0)[:, None] > 0, theta, theta0)  # a channel never valid keeps its row
    out_params = dict(params)
    out_params["tcn.head.weight"] = theta[:, :-1, None].to(params["tcn.head.weight"].dtype)
    out_params["tcn.head.bias"] = theta[:, -1].to(params["tcn.head.bias"].dtype)
    return out_params


def held_out_losses(model, state: ModelState, batch) -> "Tensor":
    """Per-stride masked MSE of ``state`` on ``batch`` (generation inputs with ``state``'s template)."""
    from metagait_edge.metrics.masked import masked_mse

    batch = with_template(batch, state.template)
    return masked_mse(predict(model, state, batch.x), batch.y, batch.mask, reduction="per_sample")


def phase_residual(model, state: ModelState, batch, prior: float) -> "Tensor":
    """The mean error ``y - prediction`` of ``state`` (without its residual) over the strides of ``batch``
    (generation inputs with ``state``'s template), per channel and sample, over valid strides only and shrunk
    towards zero: ``sum / (n + prior)``."""
    import torch

    err = (batch.y - predict(model, ModelState(state.params, state.template), batch.x)).double()  # [B, C, L]
    m = batch.mask.double()  # [B, C]
    total = torch.einsum("bc,bcl->cl", m, err)
    return (total / (m.sum(0)[:, None] + prior)).float()


def train_steps(model, state: ModelState, batch, steps: int, lr: float, batch_size: int, seed: int = 0
                ) -> Dict[str, "Tensor"]:
    """``state``'s parameters after ``steps`` Adam steps on random ``batch_size`` pairs of ``batch`` (generation
    inputs with ``state``'s template; its residual, if any, stays as it is), masked MSE."""
    import torch

    from metagait_edge.metrics.masked import masked_mse

    params = {k: v.detach().clone().requires_grad_(True) for k, v in state.params.items()}
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = batch.y.shape[0]
    with torch.enable_grad():
        for _ in range(steps):
            idx = torch.randperm(n, generator=gen)[:batch_size]
            loss = masked_mse(_output(model, params, state.residual, batch.x[idx]), batch.y[idx], batch.mask[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return {k: v.detach() for k, v in params.items()}


def _candidate_templates(running: RunningTemplate, strides: "Tensor", valid: "Tensor", n_fit: int,
                         config: ContinualConfig):
    """The templates an update may propose, from the strides before the held-out ones only."""
    from metagait_edge.personalization.inputs import template_from_support

    if config.template_strides:
        window = slice(max(0, n_fit - config.template_strides), n_fit)
        grown = template_from_support(strides[window], valid[window])
    else:
        grown = running.mean(strides[n_fit:], valid[n_fit:])
    out = [("template", grown)]
    if config.recent_strides:
        window = slice(max(0, n_fit - config.recent_strides), n_fit)
        out.append(("recent template", template_from_support(strides[window], valid[window])))
    return out


def propose_update(model, current: ModelState, fallback: ModelState, running: RunningTemplate, strides: "Tensor",
                   valid: "Tensor", contiguous: "Tensor", config: ContinualConfig) -> UpdateDecision:
    """One continual update on the buffer ``strides [N, C, L]`` (normalized, oldest first; ``contiguous[i]``:
    stride i directly follows stride i-1). ``running`` already holds every buffered stride; ``fallback`` is
    what the walker gets without personalization (the pooled weights with the calibration's template).

    Candidates: the current weights and the fallback's, each with the grown template (every stride since
    calibration, or the last ``template_strides``), the recent template (the last ``recent_strides`` before the
    held-out ones) and the fallback's template; with ``ridge > 0`` also the best of them with its output head
    refitted on the buffer; with ``grad_steps > 0`` the best so far with every weight trained that many Adam steps
    on the buffer; with ``residual_prior > 0`` the best so far with a per-phase residual (its mean error on the
    buffer). The best candidate on the newest ``holdout_strides`` is accepted only if its mean
    held-out loss beats the current state's (by ``min_improvement``) and the fallback's, and (``majority``) it
    beats the current state on more than half of the held-out strides; otherwise the current state stays. The
    fallback itself is a candidate: a personalization that no longer pays is replaced by it.
    """
    n, h = strides.shape[0], config.holdout_strides
    if n < h + 3:
        raise ValueError(f"a continual update needs at least {h + 3} buffered strides, got {n}")
    templates = _candidate_templates(running, strides, valid, n - h, config)
    hold = generation_pairs(strides, valid, contiguous, range(n - h, n), templates[0][1])
    fit = generation_pairs(strides, valid, contiguous, range(1, n - h), templates[0][1])
    if hold.y.shape[0] == 0 or fit.y.shape[0] == 0:
        return UpdateDecision(False, current, "rejected", math.nan, math.nan, math.nan,
                              "no contiguous stride pairs to learn from or to hold out")
    per_current = held_out_losses(model, current, hold)
    per_fallback = held_out_losses(model, fallback, hold)
    loss_current, loss_fallback = float(per_current.mean()), float(per_fallback.mean())
    candidates = [("fallback", fallback)]
    for weights, params in (("", current.params), ("fallback weights+", fallback.params)):
        residual = current.residual if not weights else None  # the current residual goes with its weights
        candidates += [(weights + kind, ModelState(params, t, residual)) for kind, t in templates]
    candidates.append(("fallback template", ModelState(current.params, fallback.template, current.residual)))
    scored = [(held_out_losses(model, state, hold), kind, state) for kind, state in candidates]
    key = lambda s: float(s[0].mean()) if math.isfinite(float(s[0].mean())) else math.inf  # noqa: E731
    if config.ridge > 0:
        per, kind, start = min(scored[1:], key=key)
        tuned = ModelState(refit_head(model, start.params, with_template(fit, start.template), config.ridge),
                           start.template)
        scored.append((held_out_losses(model, tuned, hold), "head+" + kind, tuned))
    if config.grad_steps > 0:
        per, kind, start = min(scored[1:], key=key)
        trained = ModelState(train_steps(model, start, with_template(fit, start.template), config.grad_steps,
                                         config.grad_lr, config.grad_batch, seed=running.strides),
                             start.template, start.residual)
        scored.append((held_out_losses(model, trained, hold), "trained+" + kind, trained))
    if config.residual_prior > 0:
        per, kind, start = min(scored[1:], key=key)
        residual = phase_residual(model, start, with_template(fit, start.template), config.residual_prior)
        shifted = ModelState(start.params, start.template, residual)
        scored.append((held_out_losses(model, shifted, hold), "residual+" + kind, shifted))
    per, kind, state = min(scored, key=key)
    loss = float(per.mean())
    bar = loss_current * (1.0 - config.min_improvement)
    if kind != "fallback":
        bar = min(bar, loss_fallback)
    wins = int((per < per_current).sum())
    majority = not config.majority or 2 * wins > per.numel()
    if math.isfinite(loss) and loss < bar and majority:
        return UpdateDecision(True, state, kind, loss_current, loss, loss_fallback)
    why = (f"held-out loss {loss:.4f} does not beat the current {loss_current:.4f} and the fallback "
           f"{loss_fallback:.4f}") if not loss < bar else \
        f"better than the current state on only {wins} of {per.numel()} held-out strides"
    return UpdateDecision(False, current, "rejected", loss_current, loss, loss_fallback, why)


class Learner:
    """The continual learner of one calibrated walker, without threads or storage: the runtime's
    ``ContinualLearner`` and the evaluation both drive it, stride by stride.

    ``state``: what generates the walker's strides now (the calibration); ``fallback``: the model without
    personalization (pooled weights, the calibration's template); ``template_weight``: how many strides the
    current template stands for (it starts the growing template).
    """

    def __init__(self, model, state: ModelState, fallback: ModelState, config: ContinualConfig,
                 template_weight: float, template_valid: Optional["Tensor"] = None) -> None:
        import torch

        self.model, self.state, self.fallback, self.config = model, state, fallback, config
        valid = (torch.ones(state.template.shape[0], dtype=torch.bool) if template_valid is None
                 else torch.as_tensor(template_valid, dtype=torch.bool))
        w = valid.double() * float(template_weight)
        self.running = RunningTemplate(state.template.double() * w[:, None], w)
        self.strides: Deque["Tensor"] = deque(maxlen=config.buffer_strides)
        self.valid: Deque["Tensor"] = deque(maxlen=config.buffer_strides)
        self.contiguous: Deque[bool] = deque(maxlen=config.buffer_strides)
        self.new = 0
        self.since_gap = 0  # strides since the last gap (the gap stride included)
        self.gap_pending = False  # a gap whose strides the session check has not looked at yet

    def add(self, stride: "Tensor", valid: "Tensor", contiguous: bool) -> Optional[UpdateDecision]:
        """Learn one normalized stride ``[C, L]`` (``contiguous``: it directly follows the previous one);
        every ``every_strides`` strides an update, whose decision is returned (``self.state`` follows it)."""
        self.strides.append(stride)
        self.valid.append(valid)
        self.contiguous.append(bool(contiguous))
        self.running.add(stride, valid)
        self.new += 1
        if contiguous:
            self.since_gap += 1
        else:
            self.since_gap, self.gap_pending = 1, True
        if self.new < self.config.every_strides or len(self.strides) < self.config.holdout_strides + 3:
            return None
        self.new = 0
        return self.update()

    def update(self) -> UpdateDecision:
        import torch

        contiguous = torch.as_tensor(list(self.contiguous))
        contiguous[0] = False  # the oldest buffered stride's predecessor has left the buffer
        if self.config.session_jump > 0 and self.gap_pending and self.since_gap > self.config.holdout_strides:
            self.gap_pending = False
            decision = self._session_check(contiguous)
            if decision is not None:
                return decision
        decision = propose_update(self.model, self.state, self.fallback, self.running, torch.stack(list(self.strides)),
                                  torch.stack(list(self.valid)), contiguous, self.config)
        self.state = decision.state
        return decision

    def _session_check(self, contiguous: "Tensor") -> Optional[UpdateDecision]:
        """Re-anchor on the strides since the last gap when the current state does worse than the fallback on the
        newest of them by more than ``session_jump`` (see :class:`ContinualConfig`); None: no change seen."""
        import torch

        from metagait_edge.personalization.inputs import template_from_support

        strides, valid = torch.stack(list(self.strides)), torch.stack(list(self.valid))
        n, h = len(strides), self.config.holdout_strides
        hold = generation_pairs(strides, valid, contiguous, range(n - h, n), self.state.template)
        if hold.y.shape[0] == 0:
            return None
        loss_current = float(held_out_losses(self.model, self.state, hold).mean())
        loss_fallback = float(held_out_losses(self.model, self.fallback, hold).mean())
        if not loss_current > loss_fallback * (1.0 + self.config.session_jump):
            return None
        keep = min(self.since_gap, n)
        post, post_valid = strides[n - keep:], valid[n - keep:]
        template = template_from_support(post, post_valid)
        self.fallback = ModelState(self.fallback.params, template)
        self.state = self.fallback
        self.running = RunningTemplate.from_strides(post, post_valid)
        kept = list(self.contiguous)[n - keep:]
        for buf in (self.strides, self.valid, self.contiguous):
            buf.clear()
        self.strides.extend(post)
        self.valid.extend(post_valid)
        self.contiguous.extend(kept)
        loss_new = float(held_out_losses(self.model, self.state, hold).mean())  # in-sample for the template
        return UpdateDecision(True, self.state, "re-anchored", loss_current, loss_new, loss_fallback,
                              f"session change: held-out loss {loss_current:.4f} against the fallback's "
                              f"{loss_fallback:.4f} after a gap")
