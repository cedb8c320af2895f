from __future__ import annotations

import numpy as np
import pytest
import torch

from metagait_edge.personalization.inputs import (
    MaskingConfig, channel_sensors, generation_input, leave_one_out_templates, random_observation_mask,
    reconstruction_input, template_from_support,
)
from metagait_edge.personalization.tasks import (
    ProtocolConfig, TaskSampler, TaskSamplerConfig, evaluation_tasks, group_recordings, main_protocol_task,
    subject_folds,
)


def _recordings():
    # Two recordings of walker 1 (30 and 12 strides, stride 7 rejected in the first), one of walker 2.
    subject = np.array([1] * 29 + [1] * 12 + [2] * 30)
    key = np.array(["a"] * 29 + ["b"] * 12 + ["c"] * 30)
    number = np.concatenate([np.delete(np.arange(30), 7), np.arange(12), np.arange(30)])
    order = np.random.default_rng(0).permutation(len(subject))  # grouping must not depend on row order
    return group_recordings(subject[order], ["walking"] * len(order), key[order], number[order]), order


def test_recordings_are_time_ordered_and_breaks_are_marked():
    recs, order = _recordings()
    a = next(r for r in recs if r.key == "a")
    assert len(a) == 29
    assert np.all(np.diff(order[a.indices]) > 0)  # back in original (time) order
    assert not a.contiguous_prev[0] and not a.contiguous_prev[7] and a.contiguous_prev[1:7].all()


def test_group_recordings_rejects_mixed_subjects():
    with pytest.raises(ValueError, match="mixes subjects"):
        group_recordings(np.array([1, 2]), ["walking"] * 2, ["x", "x"], np.array([0, 1]))


def test_folds_are_disjoint_and_cover_every_subject_once():
    folds = subject_folds(range(1, 19), n_folds=3, n_val=3)
    tested = []
    for f in folds:
        assert not set(f["train"]) & set(f["val"]) and not set(f["train"]) & set(f["test"])
        assert not set(f["val"]) & set(f["test"])
        assert len(f["train"]) + len(f["val"]) + len(f["test"]) == 18
        tested += f["test"]
    assert sorted(tested) == list(range(1, 19))


def test_main_protocol_support_at_start_and_queries_after_the_gap():
    recs, _ = _recordings()
    config = ProtocolConfig(gap=5, max_queries=100, min_queries=2)
    c = next(r for r in recs if r.key == "c")
    task = main_protocol_task(c, 3, config, generation=True)
    assert list(task.support) == list(c.indices[:3])
    pos = [list(c.indices).index(q) for q in task.query]
    assert min(pos) == 3 + 5 and len(pos) == 30 - 8
    assert [list(c.indices).index(q) for q in task.query_prev] == [p - 1 for p in pos]
    a = next(r for r in recs if r.key == "a")
    task = main_protocol_task(a, 1, ProtocolConfig(gap=2, max_queries=100, min_queries=2), generation=True)
    # stride 8 follows a rejected stride: it has no true previous cycle, so it is not a generation query
    assert a.indices[7] not in task.query


def test_a_settled_support_skips_the_first_strides_and_keeps_the_queries():
    recs, _ = _recordings()
    c = next(r for r in recs if r.key == "c")
    plain = main_protocol_task(c, 3, ProtocolConfig(gap=5, max_queries=100, min_queries=2), generation=True)
    settled = main_protocol_task(c, 3, ProtocolConfig(gap=5, max_queries=100, min_queries=2, settle=2), generation=True)
    assert list(settled.support) == list(c.indices[2:5])
    assert list(settled.query) == list(plain.query) and list(settled.query_prev) == list(plain.query_prev)
    redon = evaluation_tasks(recs, [1], 3, ProtocolConfig(gap=5, min_queries=2, settle=1), True, "redonning")
    a = next(r for r in recs if r.key == "a")
    assert any(list(t.support) == list(a.indices[1:4]) for t in redon)
    for bad, match in ((-1, ">= 0"), (5, "smaller than protocol.gap")):
        with pytest.raises(ValueError, match=match):
            ProtocolConfig(gap=5, settle=bad)


def test_short_recordings_make_no_task_and_redonning_uses_another_recording():
    recs, _ = _recordings()
    config = ProtocolConfig(gap=20, min_queries=5)
    main = evaluation_tasks(recs, [1, 2], 5, config, generation=True)
    assert {t.recording for t in main} == {"c"}  # "a" has 29 strides: 5 + 20 leaves < 5 queries
    redon = evaluation_tasks(recs, [1], 5, config, generation=True, protocol="redonning")
    assert redon and all(t.recording != t.query_recording for t in redon)
    assert all(t.subject == 1 for t in redon)


def test_sampler_keeps_queries_away_from_the_support():
    recs, _ = _recordings()
    sampler = TaskSampler(recs, TaskSamplerConfig(shots=(5,), queries=8, min_gap=3, conditions=("walking",)))
    rng = np.random.default_rng(0)
    for _ in range(50):
        t = sampler.sample(rng)
        rec = next(r for r in recs if r.key == t.recording)
        pos = list(rec.indices)
        s0 = pos.index(t.support[0])
        assert [pos.index(i) for i in t.support] == list(range(s0, s0 + 5))
        for q in t.query:
            qp = pos.index(q)
            assert qp >= s0 + 5 + 3 or qp < s0 - 3


def test_templates_ignore_invalid_channels():
    support = torch.tensor([[[1.0, 1.0]], [[3.0, 3.0]], [[100.0, 100.0]]])
    valid = torch.tensor([[True], [True], [False]])
    assert torch.equal(template_from_support(support, valid), torch.tensor([[2.0, 2.0]]))
    loo = leave_one_out_templates(support, valid)
    assert torch.equal(loo[0], torch.tensor([[3.0, 3.0]])) and torch.equal(loo[1], torch.tensor([[1.0, 1.0]]))
    assert torch.equal(leave_one_out_templates(support[:1], valid[:1]), torch.zeros(1, 1, 2))


def test_problem_inputs_hide_invalid_channels_and_missing_samples():
    prev = torch.ones(1, 2, 4)
    tmpl = 2 * torch.ones(1, 2, 4)
    valid = torch.tensor([[True, False]])
    x = generation_input(prev, tmpl, valid)
    assert x.shape == (1, 6, 4) and x[0, 1].abs().sum() == 0 and x[0, 3].abs().sum() == 0 and x[0, 4].sum() == 4
    obs_mask = torch.tensor([[[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]])
    x = reconstruction_input(prev * 5, obs_mask, tmpl, valid)
    assert x[0, 0].tolist() == [5.0, 0.0, 0.0, 5.0] and x[0, 3].sum() == 0  # invalid channel never "observed"


def test_sensor_dropout_removes_whole_imus_and_dependent_angles():
    from metagait_edge.data.cycles import cycle_channels

    channels = list(cycle_channels())
    dep = channel_sensors(channels)
    assert dep[channels.index("knee_r")].tolist() == [False, True, True, False, False, False]
    masks = random_observation_mask(200, dep, 101, MaskingConfig(keep_fraction=0.1, drop_sensors=3, p_sensors=0.5),
                                    torch.Generator().manual_seed(0))
    per_channel = masks.mean(-1)
    sensor_mode = (per_channel == 0).any(1)
    assert 60 < sensor_mode.sum() < 140
    for m in masks[sensor_mode]:
        lost = (m.sum(-1) == 0)
        dropped = dep[lost].any(0) & ~dep[~lost].any(0) if (~lost).any() else dep.any(0)
        assert dropped.sum() == 3  # exactly three IMUs vanish, with every channel that needs them
    sparse = masks[~sensor_mode]
    assert torch.all(sparse.sum(-1) == 10)  # 10 % of 101 samples, the same on every channel
    assert torch.all(sparse[:, 0] == sparse[:, 5])


def test_tuned_budgets_by_support_size_and_older_single_budget():
    from metagait_edge.personalization.methods import AdaptHParams, budget_for, budgets_from_dict, budgets_to_dict

    budgets = budgets_from_dict({"1": {"steps": 5, "lr": 3e-4, "optimizer": "adam"},
                                 "5": {"steps": 5, "lr": 3e-3, "optimizer": "adam"}})
    assert [budget_for(budgets, k).lr for k in (1, 2, 5, 8)] == [3e-4, 3e-4, 3e-3, 3e-3]
    assert budgets_from_dict(budgets_to_dict(budgets)) == budgets
    older = budgets_from_dict({"steps": 5, "lr": 1e-3, "optimizer": "adam"})
    assert budget_for(older, 1) == budget_for(older, 5) == AdaptHParams(5, 1e-3, "adam")
    with pytest.raises(ValueError, match="no tuned"):
        budget_for({}, 1)


def test_grid_choice_ignores_diverged_values():
    from metagait_edge.personalization.train import best_finite

    assert best_finite({30.0: float("nan"), 1.0: 0.6, 3.0: 0.5, 10.0: float("inf")}) == 3.0
    with pytest.raises(ValueError, match="diverged"):
        best_finite({1.0: float("nan")})


def test_a_non_finite_meta_loss_leaves_the_meta_parameters_untouched():
    from metagait_edge.meta.maml import MAML, MAMLConfig
    from metagait_edge.models import TCN, TCNConfig
    from metagait_edge.personalization.train import meta_step

    maml = MAML(TCN(TCNConfig(in_channels=2, out_channels=2, hidden_channels=4, levels=2, min_receptive_field=0)),
                MAMLConfig(inner_steps=1))
    opt = torch.optim.Adam(maml.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in maml.state_dict().items()}
    x = torch.randn(2, 2, 8)
    loss = (maml.model(x)["output"] * float("nan")).mean()
    value, stepped = meta_step(opt, maml, loss)
    assert not stepped and not np.isfinite(value)
    assert all(torch.equal(before[k], v) for k, v in maml.state_dict().items())
    value, stepped = meta_step(opt, maml, maml.model(x)["output"].pow(2).mean())
    assert stepped and any(not torch.equal(before[k], v) for k, v in maml.state_dict().items())


def test_per_walker_section_sorts_by_pooled_error_and_splits_the_least_typical():
    from metagait_edge.personalization.report import per_walker_section

    def scores(values):
        return {"mse": dict(zip(["a", "b", "c"], values))}

    per_walker = {"generation": {"5": {
        "pooled": scores([0.20, 0.40, 0.30]), "reference": scores([0.10, 0.20, 0.10]),
        "maml": scores([0.15, 0.30, 0.30]), "pooled_finetune": scores([0.20, 0.20, 0.20]),
    }}}
    lines = per_walker_section(per_walker, atypical_fraction=1 / 3)
    rows = [line for line in lines if line.startswith("| ") and line[2] in "abc"]
    assert [r.split("|")[1].strip() for r in rows] == ["b", "c", "a"]  # least typical (highest pooled error) first
    assert "0.300 (50 %)" in rows[0] and "0.200 (100 %)" in rows[0]  # (0.4-0.3)/(0.4-0.2), (0.4-0.2)/(0.4-0.2)
    summary = next(line for line in lines if line.startswith("Mean share"))
    assert "least typical (1: b): MAML-TCN 50 %, fine-tuning 100 %" in summary
    assert "the others (2: c, a): MAML-TCN 25 %, fine-tuning 25 %" in summary  # c: 0 / 50 %, a: 50 / 0 %
