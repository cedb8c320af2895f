from __future__ import annotations

import pytest
import torch
from torch import nn

from metagait_edge.meta import (
    MAML, Batch, Episode, MAMLConfig, adapt, batch_loss, finetune, model_params, multi_step_weights,
)
from metagait_edge.models import TCN, TCNConfig


class Scalar(nn.Module):
    """y = w * x: small enough to derive the MAML meta-gradient by hand."""

    def __init__(self, w: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, x, mask=None):
        return {"output": self.w * x}


def _scalar_task():
    xs = torch.tensor([[[1.0, 2.0, -1.0]]], dtype=torch.float64)
    ys = torch.tensor([[[0.5, 3.0, -2.0]]], dtype=torch.float64)
    xq = torch.tensor([[[0.5, -1.5, 2.5, 1.0]]], dtype=torch.float64)
    yq = torch.tensor([[[1.0, -2.0, 4.0, 0.0]]], dtype=torch.float64)
    return Episode(Batch(xs, ys), Batch(xq, yq)), (xs.flatten(), ys.flatten(), xq.flatten(), yq.flatten())


def _hand_gradients(w, a, xs, ys, xq, yq):
    g = 2 * torch.mean(xs * (w * xs - ys))  # dL_s/dw with L_s = mean((w xs - ys)^2)
    h = 2 * torch.mean(xs**2)  # d2L_s/dw2
    w1 = w - a * g
    dq = 2 * torch.mean(xq * (w1 * xq - yq))  # dL_q/dw' at w'
    second = dq * (1 - a * h)  # chain rule through w' = w - a g(w)
    first = dq  # first-order MAML treats g as a constant
    d_lr = dq * (-g)  # dL_q/da, the same for both orders
    return second.item(), first.item(), d_lr.item()


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_hand_derivation(first_order):
    w0, a = 0.7, 0.125  # a exactly representable: the lr is created in float32
    task, (xs, ys, xq, yq) = _scalar_task()
    model = Scalar(w0)
    cfg = MAMLConfig(inner_steps=1, inner_lr=a, first_order=first_order, learn_inner_lr=True, multi_step_loss=False)
    maml = MAML(model, cfg).double()
    maml.meta_loss([task]).backward()
    second, first, d_lr = _hand_gradients(torch.tensor(w0, dtype=torch.float64), a, xs, ys, xq, yq)
    expected = first if first_order else second
    assert model.w.grad.item() == pytest.approx(expected, rel=1e-10)
    assert maml.inner_lrs["w"].grad.item() == pytest.approx(d_lr, rel=1e-10)
    # the Hessian term is not negligible here, so the two orders are distinguishable
    assert abs(second - first) > 0.1 * abs(first)


def test_two_inner_steps_second_order_matches_finite_differences():
    task, _ = _scalar_task()
    model = Scalar(0.3)
    maml = MAML(model, MAMLConfig(inner_steps=2, inner_lr=0.0625, multi_step_loss=False)).double()
    maml.meta_loss([task]).backward()

    eps = 1e-6
    fd = (_meta_value(0.3 + eps, task) - _meta_value(0.3 - eps, task)) / (2 * eps)
    assert model.w.grad.item() == pytest.approx(fd, rel=1e-6)


def _meta_value(w, task):
    m = Scalar(w)
    params = adapt(m, model_params(m, detach=True), task.support, steps=2, lrs=0.0625, detach=True)
    return batch_loss(m, params, task.query).item()


def _tiny_tcn(**kw):
    cfg = dict(in_channels=2, out_channels=2, hidden_channels=8, levels=2, kernel_size=3, min_receptive_field=0)
    cfg.update(kw)
    return TCN(TCNConfig(**cfg))


def _sine_task(seed, shots=3, T=16):
    g = torch.Generator().manual_seed(seed)
    amp, phase = 0.5 + torch.rand(2, generator=g), 6.28 * torch.rand(2, generator=g)
    t = torch.linspace(0, 6.28, T)

    def sample(n):
        noise = 0.05 * torch.randn(n, 2, T, generator=g)
        x = torch.sin(t + phase[:, None])[None].repeat(n, 1, 1) + noise
        y = amp[None, :, None] * torch.sin(t + phase[:, None] + 0.5)[None].repeat(n, 1, 1)
        return Batch(x, y, torch.ones(n, 2))

    return Episode(sample(shots), sample(shots))


def test_adaptation_lowers_support_loss():
    model = _tiny_tcn()
    maml = MAML(model, MAMLConfig(inner_steps=5, inner_lr=0.05)).eval()
    task = _sine_task(0)
    before = batch_loss(model, model_params(model), task.support).item()
    fast = maml.adapt(task.support.x, task.support.y, task.support.mask)
    after = batch_loss(model, fast, task.support).item()
    assert after < 0.9 * before
    assert all(v.grad_fn is None for v in fast.values())  # deployment adaptation is detached
    # the model itself is untouched
    assert batch_loss(model, model_params(model), task.support).item() == pytest.approx(before)


def test_learned_inner_lrs_receive_gradients_and_model_too():
    model = _tiny_tcn()
    maml = MAML(model, MAMLConfig(inner_steps=3, inner_lr=0.05, multi_step_loss=True)).train()
    loss = maml.meta_loss([_sine_task(1), _sine_task(2)])
    loss.backward()
    assert maml.last_step_losses.shape == (3,)
    for name, lr in maml.learning_rates().items():
        assert lr.grad is not None and torch.isfinite(lr.grad).all(), name
        assert lr.grad.abs().sum() > 0, name
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_inner_lrs_fixed_when_not_learned():
    maml = MAML(_tiny_tcn(), MAMLConfig(learn_inner_lr=False))
    assert not any(p.requires_grad for p in maml.inner_lrs.parameters())


def test_anil_adapts_only_head():
    model = _tiny_tcn()
    maml = MAML(model, MAMLConfig(adapt="head", inner_steps=2, inner_lr=0.1)).eval()
    task = _sine_task(3)
    fast = maml.adapt(task.support.x, task.support.y, task.support.mask)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, fast[n])}
    assert changed == {"head.weight", "head.bias"}
    assert set(maml.learning_rates()) == {"head.weight", "head.bias"}


@pytest.mark.parametrize("kind", ["film", "bias"])
def test_small_adaptation_groups(kind):
    model = _tiny_tcn()
    names = model.adaptation_parameter_names(kind)
    assert names and len(names) < len(list(model.parameters()))
    maml = MAML(model, MAMLConfig(adapt=kind, inner_steps=2, inner_lr=0.1)).eval()
    task = _sine_task(4)
    fast = maml.adapt(task.support.x, task.support.y, task.support.mask)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, fast[n])}
    assert changed and changed <= set(names)


def test_film_kind_needs_film():
    with pytest.raises(ValueError, match="film=True"):
        MAML(_tiny_tcn(film=False), MAMLConfig(adapt="film"))


def test_maml_adapt_is_the_pure_adapt_function():
    model = _tiny_tcn()
    maml = MAML(model, MAMLConfig(inner_steps=3, inner_lr=0.02)).eval()
    with torch.no_grad():  # per-layer per-step rates, as after meta-training
        for i, lr in enumerate(maml.inner_lrs.values()):
            lr.copy_(torch.tensor([0.01, 0.03, 0.02]) * (1 + i % 3))
    task = _sine_task(5)
    a = maml.adapt(task.support.x, task.support.y, task.support.mask)
    with torch.no_grad():  # on-device calibration runs inside no_grad
        b = adapt(model, model_params(model, detach=True), task.support, steps=3, lrs=maml.learning_rates(), detach=True)
    assert all(torch.allclose(a[n], b[n]) for n in a)


def test_finetune_sgd_has_the_same_budget_as_adapt():
    model = _tiny_tcn()
    task = _sine_task(6)
    sgd = finetune(model, task.support, steps=4, lr=0.03, optimizer="sgd")
    ref = adapt(model, model_params(model), task.support, steps=4, lrs=0.03, detach=True)
    assert all(torch.allclose(sgd[n], ref[n], atol=1e-6) for n in ref)
    before = batch_loss(model, model_params(model), task.support).item()
    adam = finetune(model, task.support, steps=10, lr=1e-2, optimizer="adam")
    assert batch_loss(model, adam, task.support).item() < before
    with pytest.raises(ValueError, match="optimizer"):
        finetune(model, task.support, optimizer="rmsprop")
    head = finetune(model, task.support, steps=2, lr=1e-2, adapt_names=["head.bias"])
    assert {n for n, p in model.named_parameters() if not torch.equal(p, head[n])} == {"head.bias"}


@pytest.mark.slow  # the first torch.optim step imports torch._dynamo (seconds)
def test_finetune_adam_matches_torch_optim():
    model = _tiny_tcn()
    task = _sine_task(8)
    ours = finetune(model, task.support, steps=4, lr=1e-2, optimizer="adam", weight_decay=1e-3)
    ref = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    opt = torch.optim.Adam(list(ref.values()), lr=1e-2, weight_decay=1e-3)
    for _ in range(4):
        opt.zero_grad()
        batch_loss(model, ref, task.support).backward()
        opt.step()
    assert all(torch.allclose(ours[n], ref[n], atol=1e-6) for n in ref)


def test_multi_step_weights_anneal():
    w0 = multi_step_weights(5, 0.0, 0.3)
    assert w0 == pytest.approx([0.2] * 5)
    mid = multi_step_weights(5, 0.15, 0.3)
    assert mid[0] == pytest.approx(0.1) and sum(mid) == pytest.approx(1.0)
    end = multi_step_weights(5, 0.9, 0.3)
    assert end[:4] == pytest.approx([0.006] * 4) and sum(end) == pytest.approx(1.0)
    assert multi_step_weights(1, 0.0) == [1.0]


def test_meta_loss_uses_multi_step_weights():
    model = _tiny_tcn()
    task = _sine_task(7)
    maml = MAML(model, MAMLConfig(inner_steps=3, inner_lr=0.05, multi_step_loss=True))
    loss = maml.meta_loss([task], progress=0.0)
    assert loss.item() == pytest.approx(maml.last_step_losses.mean().item(), rel=1e-5)
    loss_end = maml.meta_loss([task], progress=1.0)
    w = multi_step_weights(3, 1.0, 0.3)
    assert loss_end.item() == pytest.approx(float((torch.tensor(w) * maml.last_step_losses).sum()), rel=1e-5)


def test_bad_config_and_inputs():
    with pytest.raises(ValueError, match="inner_steps"):
        MAMLConfig(inner_steps=0)
    with pytest.raises(KeyError, match="nope"):
        adapt(_tiny_tcn(), model_params(_tiny_tcn()), _sine_task(0).support, adapt_names=["nope"])
    with pytest.raises(ValueError, match="empty"):
        MAML(_tiny_tcn()).meta_loss([])


@pytest.mark.slow
def test_meta_training_improves_few_shot_adaptation_on_new_tasks():
    torch.manual_seed(0)
    model = _tiny_tcn()
    maml = MAML(model, MAMLConfig(inner_steps=3, inner_lr=0.05, first_order_until=0.3))
    held_out = [_sine_task(10_000 + i) for i in range(8)]

    def post_adaptation_query_loss():
        maml.eval()
        losses = []
        for task in held_out:
            fast = maml.adapt(task.support.x, task.support.y, task.support.mask)
            losses.append(batch_loss(model, fast, task.query).item())
        maml.train()
        return sum(losses) / len(losses)

    before = post_adaptation_query_loss()
    opt = torch.optim.Adam(maml.parameters(), lr=3e-3)
    n = 20
    for step in range(n):
        maml.set_progress(step / n)
        opt.zero_grad()
        maml.meta_loss([_sine_task(4 * step + k) for k in range(4)]).backward()
        opt.step()
    after = post_adaptation_query_loss()
    assert after < 0.5 * before


def test_shot_sizes_scale_the_inner_rates_per_support_size():
    model = _tiny_tcn()
    maml = MAML(model, MAMLConfig(inner_steps=2, inner_lr=0.02, shot_sizes=[1, 5])).eval()
    assert [maml.shot_index(k) for k in (1, 3, 5, 9)] == [0, 0, 1, 1]
    maml.set_shot_scale(5, 10.0)
    one, five = maml.learning_rates(1), maml.learning_rates(5)
    assert all(torch.allclose(five[n], 10 * one[n]) for n in one)
    # the adaptation of a 5-example support set takes the larger steps, a 1-example one the base steps
    task5 = _sine_task(3, shots=5)
    expected = adapt(model, model_params(model, detach=True), task5.support, steps=2, lrs=five, detach=True)
    got = maml.adapt(task5.support.x, task5.support.y, task5.support.mask)
    assert all(torch.allclose(got[n], expected[n]) for n in got)
    task1 = _sine_task(3, shots=1)
    base = adapt(model, model_params(model, detach=True), task1.support, steps=2, lrs=one, detach=True)
    got1 = maml.adapt(task1.support.x, task1.support.y, task1.support.mask)
    assert all(torch.allclose(got1[n], base[n]) for n in got1)


def test_shot_scales_are_meta_learned_and_round_trip():
    maml = MAML(_tiny_tcn(), MAMLConfig(inner_steps=2, inner_lr=0.05, shot_sizes=[1, 5])).train()
    maml.meta_loss([_sine_task(1, shots=5), _sine_task(2, shots=5)]).backward()
    grad = maml.log_shot_scale.grad
    assert grad[1] != 0 and grad[0] == 0  # only the size that was used learns
    maml.set_shot_scale(1, 3.0)
    clone = MAML(_tiny_tcn(), maml.config)
    clone.load_state_dict(maml.state_dict())
    assert clone.shot_scale(1).item() == pytest.approx(3.0)
    with pytest.raises(ValueError, match="shot_sizes"):
        MAMLConfig(shot_sizes=[5, 1])
    with pytest.raises(ValueError, match="no shot_sizes"):
        MAML(_tiny_tcn(), MAMLConfig()).set_shot_scale(5, 2.0)


def test_detached_adaptation_backs_off_a_diverging_step():
    model = _tiny_tcn()
    task = _sine_task(4, shots=5)
    s = task.support
    before = batch_loss(model, model_params(model), s).item()
    maml = MAML(model, MAMLConfig(inner_steps=3, inner_lr=50.0)).eval()  # far past the edge of stability
    raw = adapt(model, model_params(model, detach=True), s, steps=3, lrs=maml.learning_rates(), detach=True)
    raw_loss = batch_loss(model, raw, s).item()
    assert not (raw_loss <= before)  # the plain step diverges (or at least gets worse)
    fast = maml.adapt(s.x, s.y, s.mask, max_backtracks=12)
    after = batch_loss(model, fast, s).item()
    assert after <= before and any(not torch.equal(fast[n], p) for n, p in model.named_parameters())
    # no backtracking allowed: the unadapted weights rather than a diverged model
    kept = maml.adapt(s.x, s.y, s.mask, max_backtracks=0)
    assert all(torch.equal(kept[n], p.detach()) for n, p in model.named_parameters())
    # meta-training (differentiable) is never altered
    maml.train()
    diff = maml.adapt(s.x, s.y, s.mask)
    assert all(torch.allclose(diff[n], raw[n], equal_nan=True) for n in raw)
