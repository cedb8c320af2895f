"""Continual personalization: after the few-shot calibration, keep learning the wearer as they walk.

The learner keeps two things about the walker:

* a *growing personal template*: the running mean of every stride walked since calibration (the walker's
  own mean cycle is most of what personalization can learn: docs/results/personalization_stride_information.md);
* a *bounded buffer* of the most recent ``buffer_strides`` strides (normalized, with channel validity).

Every ``every_strides`` new strides it proposes an update (:func:`propose_update`): the newest
``holdout_strides`` strides of the buffer are held out, the rest refit the output head of the current
weights (:func:`refit_head`; generation: each stride predicted from the one before, with the template of every
stride except the held-out ones). Three candidates are scored on the held-out strides: the current weights and the
fallback's with the new template, and the better of those with its head refitted. The best one is accepted only if it beats
both the current state and the fallback (the model the walker would get without personalization) on those
held-out strides; otherwise the current state stays (rollback). Because the held-out strides are newer than the last update
(``holdout_strides <= every_strides``), neither the current state nor the candidate has seen them.

Torch is imported inside the functions: this module's config is part of the runtime's YAML
(``runtime.config.EdgeConfig.continual``), which must load without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, Optional

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor


@dataclass
class ContinualConfig:
    """How the runtime (``enabled``) and the evaluation learn a walker continually (see the module docstring)."""

    enabled: bool = False  # runtime only: the evaluation always learns
    # every_strides, holdout_strides (5, 5 against 10, 10), template_strides and ridge were chosen on the shipped
    # fold's validation walkers (docs/results/personalization_continual.md)
    every_strides: int = 5  # an update is proposed after every this many new valid strides
    buffer_strides: int = 60  # recent strides kept for adaptation (memory stays bounded on a long walk)
    holdout_strides: int = 5  # the newest strides of the buffer, held out to accept or reject an update
    # Weights: the output head is refitted on the buffer (``refit_head``), pulled towards the current head with
    # this weight per sample; 0 disables weight updates (the template still grows)
    # 0 (the default, chosen on the fold's validation walkers: refitting cost 5x the compute and closed no more of
    # the gap there) leaves the head alone: the weights are then the current ones or the fallback's
    ridge: float = 0.0
    # The template: the mean of every stride walked since calibration (0), or of the last this many (a walker's
    # cycle drifts between sessions as sensors are put on again)
    template_strides: int = 0
    min_improvement: float = 0.0  # relative: accept only if held-out loss < current * (1 - this)

    def __post_init__(self) -> None:
        if self.every_strides < 1:
            raise ValueError(f"continual.every_strides must be >= 1, got {self.every_strides}")
        if not 1 <= self.holdout_strides <= self.every_strides:
            raise ValueError(f"continual.holdout_strides must be in 1..every_strides ({self.every_strides}), got "
                             f"{self.holdout_strides}: held-out strides must be newer than the last update")
        if self.buffer_strides < self.holdout_strides + 3:
            raise ValueError(f"continual.buffer_strides ({self.buffer_strides}) must exceed holdout_strides "
                             f"({self.holdout_strides}) by at least 3: an update needs strides to learn from")
        if self.template_strides < 0:
            raise ValueError(f"continual.template_strides must be >= 0 (0: every stride), got {self.template_strides}")
        if self.ridge < 0:
            raise ValueError(f"continual.ridge must be >= 0 (0: template only), got {self.ridge}")
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

    from metagait_edge.meta.maml import functional_forward
    from metagait_edge.metrics.masked import masked_mse

    with torch.no_grad():
        return float(masked_mse(functional_forward(model, state.params, batch.x)["output"], batch.y, batch.mask))


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


def propose_update(model, current: ModelState, fallback_params: Dict[str, "Tensor"], fallback_template: "Tensor",
                   running: RunningTemplate, strides: "Tensor", valid: "Tensor", contiguous: "Tensor",
                   config: ContinualConfig) -> UpdateDecision:
    """One continual update on the buffer ``strides [N, C, L]`` (normalized, oldest first; ``contiguous[i]``:
    stride i directly follows stride i-1). ``running`` already holds every buffered stride. Accepts a
    candidate only if it beats the current state and the fallback on the newest ``holdout_strides``."""
    n, h = strides.shape[0], config.holdout_strides
    if n < h + 3:
        raise ValueError(f"a continual update needs at least {h + 3} buffered strides, got {n}")
    held = range(n - h, n)
    if config.template_strides:
        from metagait_edge.personalization.inputs import template_from_support

        window = slice(max(0, n - h - config.template_strides), n - h)
        template = template_from_support(strides[window], valid[window])
    else:
        template = running.mean(strides[n - h:], valid[n - h:])
    hold = generation_pairs(strides, valid, contiguous, held, template)
    fit = generation_pairs(strides, valid, contiguous, range(1, n - h), template)
    if hold.y.shape[0] == 0 or fit.y.shape[0] == 0:
        return UpdateDecision(False, current, "rejected", math.nan, math.nan, math.nan,
                              "no contiguous stride pairs to learn from or to hold out")
    loss_current = held_out_loss(model, current, with_template(hold, current.template))
    loss_fallback = held_out_loss(model, ModelState(fallback_params, fallback_template),
                                  with_template(hold, fallback_template))
    # The current weights or the fallback's (a calibration can be worse than no calibration), with the new
    # template; then the better of the two with its head refitted on the buffer.
    candidates = [("template", ModelState(current.params, template)),
                  ("fallback weights+template", ModelState(fallback_params, template))]
    scored = [(held_out_loss(model, state, hold), kind, state) for kind, state in candidates]
    if config.ridge > 0:
        start = min(scored, key=lambda s: s[0] if math.isfinite(s[0]) else math.inf)
        tuned = ModelState(refit_head(model, start[2].params, fit, config.ridge), template)
        scored.append((held_out_loss(model, tuned, hold), "head+" + start[1], tuned))
    loss, kind, state = min(scored, key=lambda s: s[0] if math.isfinite(s[0]) else math.inf)
    bar = min(loss_current * (1.0 - config.min_improvement), loss_fallback)
    if math.isfinite(loss) and loss < bar:
        return UpdateDecision(True, state, kind, loss_current, loss, loss_fallback)
    return UpdateDecision(False, current, "rejected", loss_current, loss, loss_fallback,
                          f"held-out loss {loss:.4f} does not beat the current {loss_current:.4f} "
                          f"and the fallback {loss_fallback:.4f}")
