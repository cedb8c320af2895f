"""Soft-DTW (Cuturi & Blondel, 2017) between gait cycles, differentiable, as a training loss.

The evaluation scores cycles by DTW (:mod:`metagait_edge.metrics.dtw`); a network trained on MSE alone
learns the average of the timings it cannot predict, a cycle with blunted peaks that DTW, which forgives
timing, penalizes. Soft-DTW replaces DTW's hard minimum over warping paths by a soft minimum
``-gamma * log(sum(exp(-cost / gamma)))``, so a loss can reward the shape the metric looks at.

Conventions match the DTW metric: one warping path shared by all channels, local cost the squared
distance over valid channels (here their *mean*, so the value has the scale of an MSE), and a cycle's
value divided by its length. ``gamma -> 0`` gives DTW's squared distance over the same (mean) cost.

The recursion runs over anti-diagonals: every cell of one anti-diagonal depends only on the previous
two, so each of the ``n + m - 1`` steps is one vectorized operation over the batch and the diagonal; the
gradient runs the same way backwards (Cuturi & Blondel's algorithm 2).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from metagait_edge.metrics.masked import expand_mask, _safe_target

# A large finite stand-in for the infinite cost outside the alignment matrix: infinities would turn the
# soft minimum's gradient into NaN where all three neighbours are outside.
_OUTSIDE = 1e10


def pairwise_cost(a: Tensor, b: Tensor, channel_mask: Tensor) -> Tensor:
    """Mean squared distance over valid channels between every sample of ``a [B, C, n]`` and every sample
    of ``b [B, C, m]``: ``[B, n, m]``. ``channel_mask [B, C]`` (nonzero = valid)."""
    w = (channel_mask != 0).to(a.dtype)
    count = w.sum(1).clamp(min=1.0)[:, None, None]
    a = a * w[:, :, None]
    b = b * w[:, :, None]
    sq_a = (a * a).sum(1)[:, :, None]
    sq_b = (b * b).sum(1)[:, None, :]
    cross = torch.einsum("bci,bcj->bij", a, b)
    return (sq_a + sq_b - 2.0 * cross).clamp(min=0.0) / count


def soft_dtw_from_cost(cost: Tensor, gamma: float) -> Tensor:
    """Soft-DTW value ``[B]`` of a cost matrix ``[B, n, m]`` (sum of costs along the soft-best path).

    Differentiable once, with the backward recursion of Cuturi & Blondel (2017, algorithm 2) over the same
    anti-diagonals: autograd through the forward loop records a graph of thousands of small operations, and
    a training step with the shape term took twice as long. Only the cost needs a gradient here (MAML's
    inner loop stays on MSE); for a second derivative use :func:`soft_dtw_autograd`.
    """
    return _SoftDTW.apply(cost, float(gamma))


def soft_dtw_autograd(cost: Tensor, gamma: float) -> Tensor:
    """:func:`soft_dtw_from_cost` differentiated by autograd through the forward recursion (any order)."""
    return _forward_recursion(cost, gamma, keep_weights=False)[0]


class _SoftDTW(torch.autograd.Function):
    @staticmethod
    def forward(ctx, cost: Tensor, gamma: float) -> Tensor:
        value, weights = _forward_recursion(cost, gamma, keep_weights=True)
        ctx.save_for_backward(weights)
        ctx.cost_shape = cost.shape
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_value: Tensor):
        (weights,) = ctx.saved_tensors
        return _backward_recursion(weights, grad_value, ctx.cost_shape), None


def _skew_index(n: int, m: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """Row and column of cell ``i`` of anti-diagonal ``k`` (``[n + m - 1, n]`` each) and whether it is inside
    the ``n x m`` matrix."""
    rows = torch.arange(n, device=device)
    diag = torch.arange(n + m - 1, device=device)
    cols = diag[:, None] - rows[None, :]
    return rows[None, :].expand_as(cols), cols, (cols >= 0) & (cols < m)


def _forward_recursion(cost: Tensor, gamma: float, keep_weights: bool) -> tuple[Tensor, Optional[Tensor]]:
    """The soft-DTW value and, with ``keep_weights``, each cell's soft-min weights over its three predecessors
    (diagonal, above, left) as ``[n + m - 1, 3, B, n]``."""
    if gamma <= 0:
        raise ValueError(f"soft-DTW gamma must be > 0, got {gamma}")
    batch, n, m = cost.shape
    rows, cols, inside = _skew_index(n, m, cost.device)
    # skewed[:, k, i] = cost[:, i, k - i]: anti-diagonal k of the cost matrix, indexed by row i.
    skewed = cost[:, rows, cols.clamp(0, m - 1)]
    skewed = torch.where(inside[None], skewed, torch.full_like(skewed, _OUTSIDE))
    # r_k[:, i + 1] = accumulated cost of cell (i, k - i); column 0 is the border row above the matrix.
    outside_row = torch.full((batch, n + 1), _OUTSIDE, dtype=cost.dtype, device=cost.device)
    before_prev = torch.cat([torch.zeros_like(outside_row[:, :1]), outside_row[:, 1:]], dim=1)  # r(-1, -1) = 0
    prev = outside_row
    border = outside_row[:, :1]
    weights = []
    for k in range(n + m - 1):
        diagonal, above, left = before_prev[:, :-1], prev[:, :-1], prev[:, 1:]
        # soft min = lowest - gamma * log(sum(exp(-(x - lowest) / gamma))), written out: logsumexp over a
        # stacked dim was most of the run time at these sizes.
        lowest = torch.minimum(torch.minimum(diagonal, above), left)
        e_diagonal = torch.exp((lowest - diagonal) / gamma)
        e_above = torch.exp((lowest - above) / gamma)
        e_left = torch.exp((lowest - left) / gamma)
        total = e_diagonal + e_above + e_left
        if keep_weights:
            weights.append(torch.stack([e_diagonal, e_above, e_left]) / total)
        current = torch.cat([border, skewed[:, k] + lowest - gamma * torch.log(total)], dim=1)
        before_prev, prev = prev, current
    return prev[:, n], (torch.stack(weights) if keep_weights else None)


def _backward_recursion(weights: Tensor, grad_value: Tensor, cost_shape) -> Tensor:
    """d value / d cost: the expected alignment matrix, accumulated from the last cell back along the
    anti-diagonals (each cell passes its gradient to its predecessors in proportion to their soft-min weights)."""
    batch, n, m = cost_shape
    diagonals = n + m - 1
    rows, cols, inside = _skew_index(n, m, weights.device)
    # Gradients accumulated for diagonals k, k - 1 and k - 2 (a cell's predecessors lie at most two back);
    # index 0 is the border row, as in the forward recursion.
    current, previous, before_previous = (weights.new_zeros(batch, n + 1) for _ in range(3))
    current[:, n] = grad_value
    grad_skewed = weights.new_zeros(batch, diagonals, n)
    for k in range(diagonals - 1, -1, -1):
        g = current[:, 1:] * inside[k]
        grad_skewed[:, k] = g
        w = weights[k]
        previous[:, :-1] += g * w[1]  # cell above: row i - 1 of diagonal k - 1
        previous[:, 1:] += g * w[2]   # cell to the left: row i of diagonal k - 1
        before_previous[:, :-1] += g * w[0]  # diagonal predecessor: row i - 1 of diagonal k - 2
        current, previous, before_previous = previous, before_previous, current.zero_()
    grad_cost = weights.new_zeros(batch, n, m)
    grad_cost[:, rows[inside], cols[inside]] = grad_skewed[:, inside]
    return grad_cost


def soft_dtw(pred: Tensor, target: Tensor, mask: Optional[Tensor] = None, gamma: float = 0.1) -> Tensor:
    """Per-cycle soft-DTW ``[B]`` between ``pred`` and ``target`` ``[B, C, L]``, divided by ``L``."""
    pred, target, channel_mask = _valid_only(pred, target, mask)
    return soft_dtw_from_cost(pairwise_cost(pred, target, channel_mask), gamma) / target.shape[-1]


def soft_dtw_divergence(pred: Tensor, target: Tensor, mask: Optional[Tensor] = None, gamma: float = 0.1,
                        points: int = 0) -> Tensor:
    """Soft-DTW divergence ``[B]`` (Blondel et al., 2021): ``sdtw(p, t) - (sdtw(p, p) + sdtw(t, t)) / 2``.
    Soft-DTW itself is not minimized by the target (a smoother prediction can score lower); the divergence
    is zero at ``pred == target`` and, with these squared-distance costs, never negative, so it can be added
    to an MSE loss as is. ``points > 0`` first resamples both cycles to that many
    samples (linear interpolation): the recursion's cost grows with the square of the length."""
    pred, target, channel_mask = _valid_only(pred, target, mask)
    if points and points != target.shape[-1]:
        pred = F.interpolate(pred, size=points, mode="linear", align_corners=True)
        target = F.interpolate(target, size=points, mode="linear", align_corners=True)
    # The three terms in one recursion: its cost is per step, nearly independent of the batch size.
    cost = torch.cat([pairwise_cost(pred, target, channel_mask), pairwise_cost(pred, pred, channel_mask),
                      pairwise_cost(target, target, channel_mask)])
    cross, self_pred, self_target = soft_dtw_from_cost(cost, gamma).chunk(3)
    return (cross - 0.5 * (self_pred + self_target.detach())) / target.shape[-1]


def _valid_only(pred: Tensor, target: Tensor, mask: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Both cycles with invalid channels zeroed (NaN there never reaches the arithmetic), and the
    ``[B, C]`` channel mask."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    channel_mask = _channel_mask(mask, target)
    valid = expand_mask(channel_mask, target)
    return torch.where(valid > 0, pred, torch.zeros_like(pred)), _safe_target(target, valid), channel_mask


def _channel_mask(mask: Optional[Tensor], target: Tensor) -> Tensor:
    if mask is None:
        return torch.ones(target.shape[:2], dtype=torch.bool, device=target.device)
    if mask.dim() == 3:  # per-sample mask: a channel counts only where every sample is valid
        mask = (mask != 0).all(dim=2)
    if tuple(mask.shape) != tuple(target.shape[:2]):
        raise ValueError(f"soft-DTW mask must be [batch, channels] {tuple(target.shape[:2])}, got {tuple(mask.shape)}")
    return mask != 0
