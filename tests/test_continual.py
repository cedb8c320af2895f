"""Continual personalization: the update rule (acceptance, rollback), the runtime learner (background thread,
bounded buffer, atomic commit, counters), the evaluation's JSON, and joint-angle errors in degrees."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from metagait_edge.config import from_dict  # noqa: E402
from metagait_edge.meta.maml import model_params  # noqa: E402
from metagait_edge.models.tcn import TCNConfig  # noqa: E402
from metagait_edge.personalization.continual import (  # noqa: E402
    ContinualConfig, ModelState, RunningTemplate, propose_update, refit_head,
)
from metagait_edge.personalization.evaluate import angle_sq_errors_deg  # noqa: E402
from metagait_edge.personalization.model import CycleModel, CycleModelConfig  # noqa: E402
from metagait_edge.runtime.calibration import CycleRecord, load_personalizer  # noqa: E402
from metagait_edge.runtime.config import CalibrationConfig, EdgeConfig  # noqa: E402
from metagait_edge.runtime.continual import THREAD_NAME, ContinualLearner  # noqa: E402
from metagait_edge.runtime.profiles import Profile, ProfileStore  # noqa: E402

C, L = 4, 21


def tiny_model() -> CycleModel:
    torch.manual_seed(0)
    return CycleModel(CycleModelConfig(channels=C, tcn=TCNConfig(hidden_channels=8, levels=2, film=True, min_receptive_field=1)))


def walk(n: int, shape: torch.Tensor, noise: float = 0.05, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = shape[None] + noise * torch.randn(n, C, L, generator=g)
    return x, torch.ones(n, C, dtype=torch.bool), torch.ones(n, dtype=torch.bool)


def test_config_rejects_holdout_strides_the_last_update_may_have_seen():
    with pytest.raises(ValueError, match="holdout_strides"):
        ContinualConfig(every_strides=5, holdout_strides=6)
    with pytest.raises(ValueError, match="buffer_strides"):
        ContinualConfig(buffer_strides=10, every_strides=10, holdout_strides=10)
    with pytest.raises(ValueError, match="continual.enabld"):
        from_dict(EdgeConfig, {"sources": [], "continual": {"enabld": True}})
    assert from_dict(EdgeConfig, {"sources": [], "continual": {"enabled": True, "ridge": 0.5}}).continual.ridge == 0.5


def test_running_template_is_the_mean_of_every_stride_and_can_leave_the_held_out_ones_out():
    x = torch.arange(3 * C * L, dtype=torch.float32).reshape(3, C, L)
    valid = torch.ones(3, C, dtype=torch.bool)
    valid[2, 0] = False  # channel 0 of stride 2 never counts
    running = RunningTemplate.from_strides(x[:2], valid[:2])
    running.add(x[2], valid[2])
    mean = running.mean()
    assert torch.allclose(mean[0], (x[0, 0] + x[1, 0]) / 2)
    assert torch.allclose(mean[1], x[:, 1].mean(0))
    assert torch.allclose(running.mean(x[2:], valid[2:]), x[:2].mean(0))
    assert running.strides == 3


def test_an_update_is_accepted_when_the_walkers_own_template_beats_the_current_one():
    model = tiny_model()
    shape = torch.sin(torch.linspace(0, 6.28, L))[None].repeat(C, 1)
    x, valid, contiguous = walk(30, shape)
    params = model_params(model, detach=True)
    current = ModelState(params, torch.zeros(C, L))  # a template far from this walker
    decision = propose_update(model, current, ModelState(params, torch.zeros(C, L)), RunningTemplate.from_strides(x, valid),
                              x, valid, contiguous, ContinualConfig(every_strides=10, holdout_strides=10, buffer_strides=30))
    assert decision.accepted and decision.loss_candidate < decision.loss_current
    assert torch.allclose(decision.state.template, x[:20].mean(0), atol=1e-5)  # without the held-out strides


def test_an_update_that_worsens_held_out_strides_is_rejected_and_the_old_state_stays():
    model = tiny_model()
    shape = torch.sin(torch.linspace(0, 6.28, L))[None].repeat(C, 1)
    fit, valid, contiguous = walk(20, shape)
    held, _, _ = walk(10, -shape, seed=1)  # the walker changed: older strides mislead
    x = torch.cat([fit, held])
    valid = torch.ones(30, C, dtype=torch.bool)
    contiguous = torch.ones(30, dtype=torch.bool)
    params = model_params(model, detach=True)
    current = ModelState(params, -shape)  # already right for the newest strides
    decision = propose_update(model, current, ModelState(params, -shape), RunningTemplate.from_strides(x, valid), x,
                              valid, contiguous, ContinualConfig(every_strides=10, holdout_strides=10, buffer_strides=30))
    assert not decision.accepted and decision.kind == "rejected"
    assert decision.state is current and decision.loss_candidate >= decision.loss_current
    assert "does not beat" in decision.reason


def test_refit_head_solves_the_ridge_regression_of_the_head():
    model = tiny_model()
    shape = torch.cos(torch.linspace(0, 6.28, L))[None].repeat(C, 1)
    x, valid, contiguous = walk(12, shape, noise=0.3)
    from metagait_edge.personalization.continual import generation_pairs, held_out_loss

    batch = generation_pairs(x, valid, contiguous, range(1, 12), shape)
    params = model_params(model, detach=True)
    before = held_out_loss(model, ModelState(params, shape), batch)
    fitted = refit_head(model, params, batch, ridge=1e-6)
    assert held_out_loss(model, ModelState(fitted, shape), batch) < before  # in-sample least squares
    assert torch.equal(fitted["tcn.input_proj.bias"], params["tcn.input_proj.bias"])  # only the head changes
    stiff = refit_head(model, params, batch, ridge=1e6)
    assert torch.allclose(stiff["tcn.head.weight"], params["tcn.head.weight"], atol=1e-4)  # pulled to the current


def test_joint_angle_error_in_degrees_by_hand():
    pred = torch.zeros(2, 3, 5)
    target = torch.zeros(2, 3, 5)
    target[:, 0] = 1.0  # 1 normalized unit on channel 0 ...
    target[:, 2, :2] = 2.0  # ... and 2 units on 2 of 5 samples of channel 2
    valid = torch.ones(2, 3, dtype=torch.bool)
    valid[1, 2] = False
    std = np.array([4.0, 10.0, 3.0])  # degrees per normalized unit
    sq = angle_sq_errors_deg(pred, target, valid, std, [0, 2])
    assert sq.shape == (2, 2)
    assert sq[0, 0] == pytest.approx(16.0)  # (1 * 4 deg)^2
    assert sq[0, 1] == pytest.approx(2 / 5 * 36.0)  # (2 * 3 deg)^2 on 2 of 5 samples
    assert math.isnan(sq[1, 1])  # invalid: no error at all, not zero


# ------------------------------------------------------------------------------------------- runtime learner
@pytest.fixture(scope="module")
def pers():
    torch.set_num_threads(1)
    return load_personalizer()


def _cycle(p, rng, index, scale=0.8, noise=0.5):
    x = np.linspace(0, 2 * np.pi, 101)
    c = np.zeros((p.n_channels, 101), np.float32)
    for j in range(p.n_channels):
        c[j] = p.normalizer.mean[j] + np.sin(x + 0.1 * j) * p.normalizer.std[j] * scale
    c[p.channels.index("knee_r")] = 30 * (0.5 + 0.5 * np.sin(x))
    c[p.channels.index("gyro_rs_y")] = -200 * np.sin(x)
    c += rng.normal(0, noise, c.shape).astype(np.float32) * p.normalizer.std[:, None]
    return CycleRecord(c, np.ones(p.n_channels, bool), 1.1, 0.02, 0.0, index)


def _learner(pers, tmp_path, template, **config):
    store = ProfileStore(tmp_path)
    store.save(Profile("ann", {}, template, np.ones(pers.n_channels, bool), meta={"shots": 5}))
    profiles = {"ann": store.load("ann")}
    commits = []

    def commit(profile):
        commits.append(threading.current_thread().name)
        profiles["ann"] = profile

    cfg = ContinualConfig(enabled=True, **{"every_strides": 10, "holdout_strides": 10, "buffer_strides": 20, **config})
    learner = ContinualLearner(pers, store, cfg, CalibrationConfig(), profiles.get, commit, queue_size=256)
    return learner, store, profiles, commits


def test_the_learner_updates_on_its_own_thread_and_commits_the_profile_atomically(pers, tmp_path):
    rng = np.random.default_rng(0)
    # The calibration's template is off by 0.3 units: the mean of many noisy strides beats it, and beats the
    # fallback's mean of 5 of them.
    offset = pers.normalize(_cycle(pers, rng, 0, noise=0.0).cycle) + 0.3
    # template candidates only (ridge 0): a refitted head could absorb the offset instead of the template
    learner, store, profiles, commits = _learner(pers, tmp_path, offset.astype(np.float32), ridge=0.0)
    for i in range(25):
        learner.offer(_cycle(pers, rng, i), "ann")  # the caller is the control thread
    assert learner.drain(60)
    learner.stop()
    assert learner.stats["accepted"] >= 1 and learner.stats["failed"] == 0
    assert set(learner.update_threads) == {THREAD_NAME} and THREAD_NAME != threading.current_thread().name
    assert commits and set(commits) == {THREAD_NAME}
    saved = store.load("ann")
    assert saved.meta["continual_updates"] == learner.stats["accepted"]
    assert np.abs(saved.template - offset).mean() > 0.1  # the template moved towards the walker's strides
    assert len(list((tmp_path / "ann").glob("weights-*.safetensors"))) == 1
    assert learner.counters()["continual_accepted"] == learner.stats["accepted"]
    assert len(learner._strides) == 20  # the buffer stays bounded


def test_a_rejected_update_leaves_the_profile_untouched(pers, tmp_path):
    rng = np.random.default_rng(1)
    learner, store, profiles, commits = _learner(pers, tmp_path, np.zeros((pers.n_channels, 101), np.float32),
                                                 min_improvement=0.999)
    before = (tmp_path / "ann" / "profile.json").read_text()
    for i in range(23):  # updates after 13 strides (buffer >= holdout + 3) and 10 strides later
        learner.offer(_cycle(pers, rng, i), "ann")
    assert learner.drain(60)
    learner.stop()
    assert learner.stats["rejected"] == 2 and learner.stats["accepted"] == 0 and not commits
    assert (tmp_path / "ann" / "profile.json").read_text() == before


def test_a_failed_write_keeps_the_old_profile_and_is_counted(pers, tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    offset = pers.normalize(_cycle(pers, rng, 0, noise=0.0).cycle) + 0.3  # an update will be accepted
    learner, store, profiles, commits = _learner(pers, tmp_path, offset.astype(np.float32))
    before = (tmp_path / "ann" / "profile.json").read_text()

    def full_disk(profile):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "save", full_disk)
    for i in range(12):
        learner.learn(_cycle(pers, rng, i), "ann")
    with pytest.raises(OSError, match="No space"):  # learn() directly: the update's error reaches the caller ...
        learner.learn(_cycle(pers, rng, 12), "ann")
    assert learner.stats["accepted"] == 0 and not commits
    assert (tmp_path / "ann" / "profile.json").read_text() == before
    for i in range(10, 20):
        learner.offer(_cycle(pers, rng, i), "ann")  # ... while the thread counts it and carries on
    assert learner.drain(60)
    learner.stop()
    assert learner.stats["failed"] == 1 and not commits


def test_offer_never_blocks_and_drops_when_the_queue_is_full(pers, tmp_path):
    store = ProfileStore(tmp_path)
    learner = ContinualLearner(pers, store, ContinualConfig(enabled=True), CalibrationConfig(), lambda w: None,
                               lambda p: None, queue_size=2)
    learner._start = lambda: None  # no thread: nothing drains the queue
    learner._thread = object()
    rng = np.random.default_rng(3)
    for i in range(5):
        learner.offer(_cycle(pers, rng, i), "ann")
    assert learner.stats["dropped"] == 3
    learner._thread = None


def test_uncalibrated_walkers_are_not_learnt(pers, tmp_path):
    learner = ContinualLearner(pers, ProfileStore(tmp_path), ContinualConfig(enabled=True), CalibrationConfig(),
                               lambda w: None, lambda p: None)
    learner.learn(_cycle(pers, np.random.default_rng(4), 0), "bob")
    assert learner.stats["skipped"] == 1 and len(learner._strides) == 0


@pytest.mark.slow
def test_the_runtime_offers_cycles_from_its_worker_and_learns_on_the_continual_thread(tmp_path):
    """The orchestrator hook: a declared, calibrated walker's cycles reach the learner; updates run on the
    ``continual`` thread, never on the gait worker; the status counters carry the learner's counts."""
    from test_orchestrator import Collect, _feed

    from metagait_edge.runtime.orchestrator import Runtime
    from metagait_edge.runtime.config import RuntimeConfig
    from metagait_edge.runtime.virtual_walker import synthetic_walker

    torch.set_num_threads(1)
    sim = [0.0]
    store = ProfileStore(tmp_path)
    cfg = EdgeConfig(sources=[], calibration=CalibrationConfig(directory=tmp_path, max_gap_s=0.1),
                     runtime=RuntimeConfig(walker="ann"),
                     continual=ContinualConfig(enabled=True, every_strides=5, holdout_strides=5, buffer_strides=10))
    probe = Runtime(EdgeConfig(sources=[]), store=store)
    assert probe.continual is None and "continual_accepted" not in probe.counters()  # off by default
    store.save(Profile("ann", {}, np.zeros((probe.personalizer.n_channels, 101), np.float32),
                       np.ones(probe.personalizer.n_channels, bool), meta={"shots": 5, "mode": "walking"}))
    rt = Runtime(cfg, publisher=Collect(), store=store, clock=lambda: sim[0])
    assert rt.continual is not None and rt.counters()["continual_accepted"] == 0
    samples = synthetic_walker(seconds=30).samples
    rt.start()
    try:
        _feed(rt, sim, samples, 0, len(samples))  # the simulated clock waits for the worker
        assert rt.continual.drain(60)
    finally:
        rt.stop()
    counts = rt.counters()
    offered = sum(counts[f"continual_{k}"] for k in ("strides", "skipped", "dropped"))
    assert rt.stats.cycles >= 15 and offered >= rt.stats.cycles - 2  # every cycle of the calibrated walker
    assert counts["continual_accepted"] + counts["continual_rejected"] >= 1
    assert set(rt.continual.update_threads) == {THREAD_NAME}


# ------------------------------------------------------------------------ candidates, acceptance, one learner
def test_the_recent_template_follows_a_walker_whose_cycle_changed_within_the_buffer():
    """After a change (new session), the mean of the last strides beats the mean of every stride: only the
    ``recent_strides`` candidate proposes it."""
    model = tiny_model()
    shape = torch.sin(torch.linspace(0, 6.28, L))[None].repeat(C, 1)
    old, valid, contiguous = walk(40, shape)
    new, _, _ = walk(20, shape + 1.0, seed=1)
    x = torch.cat([old, new])
    valid = torch.ones(60, C, dtype=torch.bool)
    contiguous = torch.ones(60, dtype=torch.bool)
    params = model_params(model, detach=True)
    current = ModelState(params, shape)
    running = RunningTemplate.from_strides(x, valid)
    cfg = dict(every_strides=5, holdout_strides=5, buffer_strides=60, ridge=0.0)
    grown = propose_update(model, current, current, running, x, valid, contiguous,
                           ContinualConfig(recent_strides=0, **cfg))
    recent = propose_update(model, current, current, running, x, valid, contiguous,
                            ContinualConfig(recent_strides=10, **cfg))
    assert recent.accepted and recent.kind == "recent template"
    assert torch.allclose(recent.state.template, x[45:55].mean(0), atol=1e-5)  # the 10 before the held-out 5
    assert recent.loss_candidate < 0.5 * grown.loss_candidate


def test_majority_rejects_a_candidate_better_on_average_thanks_to_one_held_out_stride():
    model = tiny_model()
    shape = torch.sin(torch.linspace(0, 6.28, L))[None].repeat(C, 1)
    x, valid, contiguous = walk(30, shape, noise=0.0)
    x[-1] = x[-1] + 3.0  # one held-out stride far off; the candidate template (the old strides' mean) is ...
    params = model_params(model, detach=True)
    current = ModelState(params, shape + 0.2)  # ... worse on 4 of 5 held-out strides than the current one
    running = RunningTemplate.from_strides(torch.cat([x[:25] + 0.4, x[25:]]), valid)  # its mean sits at +0.4
    cfg = dict(every_strides=5, holdout_strides=5, buffer_strides=30, ridge=0.0, recent_strides=0)
    plain = propose_update(model, current, current, running, x, valid, contiguous, ContinualConfig(**cfg))
    strict = propose_update(model, current, current, running, x, valid, contiguous, ContinualConfig(majority=True, **cfg))
    assert plain.accepted
    assert not strict.accepted and strict.state is current and "only" in strict.reason


def test_a_personalization_worse_than_the_fallback_on_held_out_strides_is_replaced_by_the_fallback():
    model = tiny_model()
    shape = torch.sin(torch.linspace(0, 6.28, L))[None].repeat(C, 1)
    x, valid, contiguous = walk(30, shape)
    params = model_params(model, detach=True)
    bad = {k: v + 0.3 * torch.randn_like(v) for k, v in params.items()}  # a calibration gone wrong
    current = ModelState(bad, shape)
    fallback = ModelState(params, shape)
    decision = propose_update(model, current, fallback, RunningTemplate.from_strides(x, valid), x, valid, contiguous,
                              ContinualConfig(every_strides=5, holdout_strides=5, buffer_strides=30))
    assert decision.accepted and decision.loss_candidate < decision.loss_current
    assert "fallback" in decision.kind  # the fallback, or its weights with a template or a residual
    assert all(torch.equal(decision.state.params[k], params[k]) for k in params)


def test_the_runtime_learner_and_the_evaluation_run_the_same_library_learner(pers, tmp_path):
    """The runtime's ContinualLearner makes, stride for stride, the decisions of the ``Learner`` the
    evaluation drives (``continual_eval.learn_walk``): one home for the algorithm."""
    from metagait_edge.personalization.continual import Learner

    rng = np.random.default_rng(5)
    offset = (pers.normalize(_cycle(pers, rng, 0, noise=0.0).cycle) + 0.3).astype(np.float32)
    learner, store, profiles, commits = _learner(pers, tmp_path, offset, every_strides=5, holdout_strides=5,
                                                 recent_strides=10, ridge=0.1)
    cycles = [_cycle(pers, rng, i) for i in range(30)]
    for rec in cycles:
        learner.learn(rec, "ann")
    lib = Learner(pers.maml.model, ModelState(pers.base, torch.from_numpy(offset)),
                  ModelState(pers.base, torch.from_numpy(offset)), learner.config, 5)
    accepted = 0
    for i, rec in enumerate(cycles):
        norm = torch.from_numpy(pers.normalize(rec.cycle).astype(np.float32))
        d = lib.add(norm, torch.ones(pers.n_channels, dtype=torch.bool), i > 0)
        accepted += bool(d is not None and d.accepted)
    assert accepted == learner.stats["accepted"] >= 1
    saved = store.load("ann")
    assert np.allclose(saved.template, lib.state.template.numpy(), atol=1e-6)
    assert np.allclose(saved.weights["tcn.head.weight"], lib.state.params["tcn.head.weight"].numpy(), atol=1e-6)


def test_a_per_phase_residual_corrects_an_error_the_output_head_cannot_learn():
    """The walker's strides are what the model generates plus a fixed shape along the cycle: only a per-phase
    residual (not a template, not a 1x1 head) removes it; the residual is that shape, shrunk by its prior."""
    from metagait_edge.personalization.continual import phase_residual, predict

    model = tiny_model()
    params = model_params(model, detach=True)
    shape = torch.sin(torch.linspace(0, 6.28, L))[None].repeat(C, 1)
    bump = 0.5 * torch.cos(torch.linspace(0, 12.56, L))[None].repeat(C, 1)
    x = torch.zeros(30, C, L)
    x[0] = shape
    from metagait_edge.personalization.inputs import generation_input

    g = torch.Generator().manual_seed(0)
    for i in range(1, 30):  # each stride: the model's output from the previous one, the bump, a little noise
        inp = generation_input(x[i - 1:i], shape[None], torch.ones(1, C, dtype=torch.bool))
        x[i] = predict(model, ModelState(params, shape), inp)[0] + bump + 0.01 * torch.randn(C, L, generator=g)
    valid, contiguous = torch.ones(30, C, dtype=torch.bool), torch.ones(30, dtype=torch.bool)
    config = ContinualConfig(every_strides=5, holdout_strides=5, buffer_strides=30, recent_strides=0, ridge=0.0,
                             grad_steps=0, residual_prior=1.0)
    state = ModelState(params, shape)
    decision = propose_update(model, state, state, RunningTemplate.from_strides(x, valid), x, valid, contiguous,
                              config)
    assert decision.accepted and decision.kind.startswith("residual+")
    assert decision.loss_candidate < 0.1 * decision.loss_current
    from metagait_edge.personalization.continual import generation_pairs

    batch = generation_pairs(x, valid, contiguous, range(1, 30), shape)
    assert torch.allclose(phase_residual(model, state, batch, prior=29.0), bump / 2, atol=0.03)  # shrunk
    off = propose_update(model, state, state, RunningTemplate.from_strides(x, valid), x, valid, contiguous,
                         ContinualConfig(every_strides=5, holdout_strides=5, buffer_strides=30, recent_strides=0,
                                         ridge=0.0, grad_steps=0, residual_prior=0.0))
    assert off.state.residual is None  # residual_prior 0: no residual candidate ...
    assert off.loss_candidate > 2 * decision.loss_candidate  # ... and the other candidates do worse without it


def test_gradient_steps_learn_what_the_walker_does_and_carry_on_across_updates():
    from metagait_edge.personalization.continual import Learner, generation_pairs, held_out_loss, train_steps

    model = tiny_model()
    params = model_params(model, detach=True)
    shape = torch.sin(torch.linspace(0, 6.28, L))[None].repeat(C, 1)
    g = torch.Generator().manual_seed(3)
    x = torch.zeros(60, C, L)
    x[0] = shape
    for i in range(1, 60):  # the walker's stride is a damped echo of the previous one plus its shape
        x[i] = 0.5 * x[i - 1].roll(3, dims=1) + shape + 0.02 * torch.randn(C, L, generator=g)
    valid, contiguous = torch.ones(60, C, dtype=torch.bool), torch.ones(60, dtype=torch.bool)
    batch = generation_pairs(x, valid, contiguous, range(1, 60), shape)
    state = ModelState(params, shape)
    trained = train_steps(model, state, batch, steps=20, lr=3e-3, batch_size=16)
    assert held_out_loss(model, ModelState(trained, shape), batch) < held_out_loss(model, state, batch)
    assert all(torch.equal(params[k], model_params(model, detach=True)[k]) for k in params)  # a copy is trained
    config = ContinualConfig(every_strides=5, holdout_strides=5, buffer_strides=30, recent_strides=0, ridge=0.0,
                             grad_steps=10, grad_lr=3e-3, grad_batch=16, residual_prior=0.0)
    learner = Learner(model, state, state, config, 5)
    kinds = [d.kind for i in range(60) for d in [learner.add(x[i], valid[i], i > 0)] if d is not None and d.accepted]
    assert sum(k.startswith("trained+") for k in kinds) >= 2  # training goes on from the accepted weights
    hold = generation_pairs(x, valid, contiguous, range(55, 60), shape)
    assert held_out_loss(model, ModelState(learner.state.params, shape), hold) < held_out_loss(model, state, hold)
    with pytest.raises(ValueError, match="grad_steps"):
        ContinualConfig(grad_steps=-1)
    with pytest.raises(ValueError, match="residual_prior"):
        ContinualConfig(residual_prior=-1.0)


def test_a_profile_keeps_its_residual_and_the_runtime_adds_it_to_the_generated_cycle(pers, tmp_path):
    store = ProfileStore(tmp_path)
    template = np.zeros((pers.n_channels, 101), np.float32)
    residual = np.random.default_rng(0).normal(size=(pers.n_channels, 101)).astype(np.float32)
    store.save(Profile("bo", {}, template, np.ones(pers.n_channels, bool), meta={}, residual=residual))
    saved = store.load("bo")
    assert np.array_equal(saved.residual, residual) and "__residual__" not in saved.weights
    store.save(Profile("cy", {}, template, np.ones(pers.n_channels, bool)))
    assert store.load("cy").residual is None  # profiles without one (every calibration) load as before
    prev = _cycle(pers, np.random.default_rng(1), 0).cycle
    valid = np.ones(pers.n_channels, bool)
    plain = pers.generate(prev, template, valid)
    shifted = pers.generate(prev, template, valid, residual=residual)
    assert np.allclose(pers.normalize(shifted) - pers.normalize(plain), residual, atol=1e-3)


def test_after_a_gap_a_walker_whose_strides_changed_is_re_anchored_on_the_new_strides():
    """Sensors put on again (a gap, then strides unlike the earlier ones): once the held-out strides after the gap
    show the personalization doing worse than the fallback, the learner starts over from the fallback weights
    with the new strides' template, and forgets the strides before the gap. Without the check it does not."""
    from metagait_edge.personalization.continual import Learner

    model = tiny_model()
    params = model_params(model, detach=True)
    shape = 2.0 * torch.sin(torch.linspace(0, 6.28, L))[None].repeat(C, 1)
    before, valid, _ = walk(12, shape)
    after, _, _ = walk(13, torch.zeros(C, L), seed=1)  # the new session looks nothing like the old one
    x = torch.cat([before, after])
    valid = torch.ones(25, C, dtype=torch.bool)
    contiguous = [i not in (0, 12) for i in range(25)]
    base = dict(every_strides=5, holdout_strides=5, buffer_strides=30, recent_strides=0, ridge=0.0, grad_steps=0,
                residual_prior=0.0)

    def run(**config):
        learner = Learner(model, ModelState(params, shape), ModelState(params, torch.zeros(C, L)),
                          ContinualConfig(**base, **config), 5)
        decisions = [d for i in range(25) for d in [learner.add(x[i], valid[i], contiguous[i])] if d is not None]
        return learner, decisions

    learner, decisions = run(session_jump=0.1)
    anchored = [d for d in decisions if d.kind == "re-anchored"]
    assert len(anchored) == 1 and anchored[0].loss_current > 1.1 * anchored[0].loss_fallback
    assert all(torch.equal(learner.fallback.params[k], params[k]) for k in params)
    assert len(learner.strides) <= 13  # the strides before the gap are forgotten
    assert learner.state.template.abs().mean() < 0.2  # the new session's template, not the old shape
    _, plain = run()
    assert not any(d.kind == "re-anchored" for d in plain)
    with pytest.raises(ValueError, match="session_jump"):
        ContinualConfig(session_jump=-0.5)
