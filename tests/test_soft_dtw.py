"""Soft-DTW as a training loss: the metric it approximates, its gradients, and why it is there."""

import math

import pytest
import torch

from metagait_edge.meta.maml import MAML, Batch, MAMLConfig, Episode
from metagait_edge.metrics.dtw import dtw_distance
from metagait_edge.metrics.masked import masked_mse
from metagait_edge.metrics.soft_dtw import (
    pairwise_cost,
    soft_dtw,
    soft_dtw_autograd,
    soft_dtw_divergence,
    soft_dtw_from_cost,
)
from metagait_edge.personalization.loss import CycleLossConfig, cycle_loss


def test_small_gamma_soft_dtw_is_the_dtw_metric_on_valid_channels():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 5, 30, generator=g, dtype=torch.float64)
    b = torch.randn(3, 5, 30, generator=g, dtype=torch.float64)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 2] = False
    b[1, 2] = float("nan")  # an invalid channel's values never reach the arithmetic
    values = soft_dtw(a, b, mask, gamma=1e-4)
    for i in range(3):
        expected = dtw_distance(a[i].numpy(), torch.nan_to_num(b[i]).numpy(), mask[i].numpy()).distance ** 2
        # soft_dtw uses the mean over valid channels and divides by the length
        assert values[i].item() * int(mask[i].sum()) * 30 == pytest.approx(expected, rel=1e-3)


def test_rectangular_cost_matrix_matches_a_direct_recursion():
    g = torch.Generator().manual_seed(1)
    cost = torch.rand(2, 4, 7, generator=g, dtype=torch.float64)
    gamma = 0.5

    def direct(c):
        n, m = c.shape
        r = [[math.inf] * (m + 1) for _ in range(n + 1)]
        r[0][0] = 0.0
        for i in range(1, n + 1):
            for j in range(1, m + 1):
                z = [-r[i - 1][j - 1] / gamma, -r[i - 1][j] / gamma, -r[i][j - 1] / gamma]
                zmax = max(z)
                r[i][j] = c[i - 1, j - 1].item() - gamma * (zmax + math.log(sum(math.exp(v - zmax) for v in z)))
        return r[n][m]

    got = soft_dtw_from_cost(cost, gamma)
    assert got.tolist() == pytest.approx([direct(cost[0]), direct(cost[1])], rel=1e-9)


def test_divergence_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(2)
    pred = torch.randn(2, 3, 9, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 3, 9, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    assert torch.autograd.gradcheck(lambda p: soft_dtw_divergence(p, target, mask, gamma=0.3), (pred,))


def test_divergence_is_zero_on_the_target_and_positive_elsewhere():
    g = torch.Generator().manual_seed(3)
    target = torch.randn(4, 6, 40, generator=g)
    mask = torch.rand(4, 6, generator=g) > 0.3
    assert soft_dtw_divergence(target.clone(), target, mask).abs().max() < 1e-5
    assert (soft_dtw_divergence(target + 0.3 * torch.randn(4, 6, 40, generator=g), target, mask) > 1e-3).all()


def test_divergence_prefers_the_right_shape_at_the_wrong_time_to_a_blurred_average():
    # What MSE gets wrong for DTW: when the peak's timing is uncertain, MSE prefers the average of the
    # possible cycles (a blunted peak); the divergence, like DTW, prefers a sharp peak slightly off in time.
    t = torch.linspace(0, 1, 101)
    peak = lambda centre: torch.exp(-((t - centre) / 0.03) ** 2)  # noqa: E731
    target = peak(0.50)[None, None]
    shifted = peak(0.56)[None, None]
    blurred = ((peak(0.44) + peak(0.50) + peak(0.56)) / 3)[None, None]
    assert masked_mse(blurred, target) < masked_mse(shifted, target)
    assert soft_dtw_divergence(shifted, target, gamma=0.01) < soft_dtw_divergence(blurred, target, gamma=0.01)
    assert soft_dtw_divergence(shifted, target, gamma=0.01, points=51) < soft_dtw_divergence(
        blurred, target, gamma=0.01, points=51)


def test_pairwise_cost_is_the_mean_squared_distance_over_valid_channels():
    a = torch.tensor([[[0.0, 1.0]], [[2.0, 0.0]]]).expand(2, 2, 2).clone()
    b = torch.zeros(2, 2, 3)
    mask = torch.tensor([[True, False], [True, True]])
    c = pairwise_cost(a, b, mask)
    assert c.shape == (2, 2, 3)
    assert c[0, 1, 0].item() == pytest.approx(1.0)  # one valid channel: (1 - 0)^2
    assert c[1, 0, 2].item() == pytest.approx(4.0)  # two valid channels, mean of 4 and 4


def test_cycle_loss_is_mse_without_the_shape_term_and_adds_it_with():
    g = torch.Generator().manual_seed(4)
    pred, target = torch.randn(3, 4, 20, generator=g), torch.randn(3, 4, 20, generator=g)
    assert cycle_loss(CycleLossConfig()) is masked_mse
    with_shape = cycle_loss(CycleLossConfig(sdtw_weight=2.0, sdtw_gamma=0.1))(pred, target, None)
    expected = masked_mse(pred, target) + 2.0 * soft_dtw_divergence(pred, target, None, 0.1).mean()
    assert with_shape.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("bad", [dict(sdtw_weight=-1.0), dict(sdtw_gamma=0.0), dict(sdtw_points=1)])
def test_cycle_loss_config_rejects_meaningless_values(bad):
    with pytest.raises(ValueError, match="sdtw"):
        CycleLossConfig(**bad)


def test_soft_dtw_rejects_mismatched_shapes_and_masks():
    with pytest.raises(ValueError, match="differ in shape"):
        soft_dtw_divergence(torch.zeros(1, 2, 5), torch.zeros(1, 2, 6))
    with pytest.raises(ValueError, match="mask"):
        soft_dtw(torch.zeros(1, 2, 5), torch.zeros(1, 2, 5), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="gamma"):
        soft_dtw(torch.zeros(1, 2, 5), torch.zeros(1, 2, 5), gamma=0.0)


def test_maml_uses_the_meta_loss_on_queries_and_the_inner_loss_on_supports():
    calls = []

    def inner(pred, target, mask=None):
        calls.append(("inner", pred.shape[0]))
        return masked_mse(pred, target, mask)

    def outer(pred, target, mask=None):
        calls.append(("outer", pred.shape[0]))
        return masked_mse(pred, target, mask)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3))

    class Named(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return {"output": self.net(x)}

    maml = MAML(Named(), MAMLConfig(inner_steps=2, multi_step_loss=False), loss_fn=inner, meta_loss_fn=outer)
    task = Episode(support=Batch(torch.randn(2, 3), torch.randn(2, 3)),
                   query=Batch(torch.randn(7, 3), torch.randn(7, 3)))
    maml.train()
    maml.meta_loss([task]).backward()
    assert ("inner", 2) in calls and ("outer", 7) in calls
    assert ("inner", 7) not in calls and ("outer", 2) not in calls


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 8, 8), (2, 1, 4), (2, 6, 1)])
@pytest.mark.parametrize("gamma", [0.01, 0.1, 1.0])
def test_hand_written_backward_equals_autograd_through_the_recursion(shape, gamma):
    cost = torch.rand(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7), requires_grad=True)
    weights = torch.rand(shape[0], dtype=torch.float64)
    fast, slow = soft_dtw_from_cost(cost, gamma), soft_dtw_autograd(cost, gamma)
    assert torch.allclose(fast, slow)
    (grad_fast,) = torch.autograd.grad((fast * weights).sum(), cost)
    (grad_slow,) = torch.autograd.grad((slow * weights).sum(), cost)
    assert torch.allclose(grad_fast, grad_slow, atol=1e-12)
    assert torch.autograd.gradcheck(lambda c: soft_dtw_from_cost(c, gamma), (cost,))


def test_hand_written_backward_refuses_a_second_derivative():
    cost = torch.rand(1, 4, 4, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(soft_dtw_from_cost(cost, 0.1).sum(), cost, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(grad.sum(), cost)
    (grad,) = torch.autograd.grad(soft_dtw_autograd(cost, 0.1).sum(), cost, create_graph=True)
    assert torch.autograd.grad(grad.sum(), cost)[0].shape == cost.shape  # the autograd version goes on
