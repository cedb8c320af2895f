"""End to end on a small synthetic cycle set: train a fold, reload it, evaluate, check the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from metagait_edge.checkpoint import CheckpointError
from metagait_edge.config import dump_yaml, from_dict, load_config
from metagait_edge.personalization.config import PersonalizationConfig, PersonalizationTrainConfig, SplitConfig
from metagait_edge.personalization.experiment import fold_split, load_problem, prepare, train_fold
from metagait_edge.personalization.loss import CycleLossConfig
from metagait_edge.personalization.model import CycleModel, CycleModelConfig
from metagait_edge.personalization.inputs import masking_for
from metagait_edge.personalization.report import masking_sentence, support_sentence, write_markdown
from metagait_edge.personalization.runner import DEFAULT_CHECKPOINTS, evaluate, fold_dir
from metagait_edge.personalization.tasks import ProtocolConfig, TaskSamplerConfig
from metagait_edge.personalization.train import freeze_for_meta_learning, meta_step
from metagait_edge.meta.maml import MAML, MAMLConfig, Batch as MetaBatch, Episode
from committed_reports import report_body
from personalization_fixtures import synthetic_cycle_set

REPO = Path(__file__).resolve().parents[1]


def tiny_config() -> PersonalizationConfig:
    base = PersonalizationConfig()
    return replace(
        base,
        split=SplitConfig(n_folds=3, n_val=2, seed=0),
        protocol=ProtocolConfig(shots=(1, 5), gap=5, max_queries=6, min_queries=3),
        sampler=TaskSamplerConfig(shots=(1, 5), queries=4, min_gap=2, conditions=("walking",)),
        tcn=replace(base.tcn, hidden_channels=8, levels=5),
        maml=replace(base.maml, shot_sizes=[1, 5]),
        train=PersonalizationTrainConfig(pooled_steps=30, pooled_tasks_per_step=4, meta_iterations=6, meta_batch=2,
                          val_every=3, val_max_tasks=8, finetune_lrs=(1e-3, 1e-2), scratch_lrs=(1e-2,), reference_steps=5,
                          reference_batch=8, inner_lr_scales=(1.0, 3.0), shape_steps=4, seed=0),
        loss=CycleLossConfig(sdtw_weight=1.0, sdtw_gamma=0.1, sdtw_points=21),
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("pers")
    cs = synthetic_cycle_set()
    cs_path = root / "cycles.npz"
    cs.save(cs_path)
    config = tiny_config()
    prepared = prepare(cs, fold_split(cs, config, 0))
    train_fold(config, prepared, fold_dir(root / "ckpt", 0, 0), progress=False)
    return config, root, cs, cs_path


def test_config_yaml_of_the_experiment_loads_and_rejects_unknown_keys(tmp_path):
    cfg = load_config(PersonalizationConfig, REPO / "training" / "configs" / "personalization.yaml")
    assert cfg.problems == ("generation", "reconstruction") and cfg.maml.inner_steps >= 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(dump_yaml(cfg).replace("meta_iterations:", "meta_iteratons:"))
    with pytest.raises(ValueError, match="meta_iteratons"):
        load_config(PersonalizationConfig, bad)


def test_plain_mse_experiment_yaml_differs_from_the_default_only_in_its_loss_and_shape_phase():
    configs = REPO / "training" / "configs"
    default = load_config(PersonalizationConfig, configs / "personalization.yaml")
    mse = load_config(PersonalizationConfig, configs / "personalization_mse.yaml")
    assert default.loss.sdtw_weight > 0 and default.train.shape_steps > 0
    # the config the 150-line copy loaded before it became `extends: personalization.yaml` plus four values
    expected = replace(default, loss=CycleLossConfig(sdtw_weight=0.0, sdtw_gamma=0.1, sdtw_points=0),
                       train=replace(default.train, shape_steps=0, shape_lr=3e-4))
    assert mse == expected
    text = (configs / "personalization_mse.yaml").read_text()
    assert "extends: personalization.yaml" in text and len(text.splitlines()) < 20


@pytest.mark.parametrize("problem", ["generation", "reconstruction"])
def test_shipped_checkpoint_was_trained_with_the_default_experiment_yaml(problem):
    """The README says the shipped checkpoint comes from training/configs/personalization.yaml: keep it true."""
    sidecar = DEFAULT_CHECKPOINTS / "seed0" / "fold0" / problem / "maml.json"
    if not sidecar.exists():
        pytest.skip(f"no shipped checkpoint at {sidecar}")
    stored = from_dict(PersonalizationConfig, json.loads(sidecar.read_text())["config"])
    default = load_config(PersonalizationConfig, REPO / "training" / "configs" / "personalization.yaml")
    assert problem in stored.problems  # trained alone or with the other problem (each starts from its own seeds)
    assert replace(stored, problems=default.problems) == default


def test_a_problem_can_have_its_own_tcn_width():
    from metagait_edge.personalization.train import model_config

    config = from_dict(PersonalizationConfig, {"tcn": {"hidden_channels": 16}, "tcn_width_by_problem": {"reconstruction": 24}})
    assert model_config(config, "generation", 4).tcn.hidden_channels == 16
    assert model_config(config, "reconstruction", 4).tcn.hidden_channels == 24
    assert config.tcn_for("reconstruction").levels == config.tcn.levels  # only the width changes
    widths = {n: p.shape[0] for n, p in CycleModel(model_config(config, "reconstruction", 4)).named_parameters()
              if n.endswith("conv1.conv.bias")}
    assert widths and set(widths.values()) == {24}
    with pytest.raises(ValueError, match="unknown problems.*walking"):
        from_dict(PersonalizationConfig, {"tcn_width_by_problem": {"walking": 64}})
    with pytest.raises(ValueError, match="widths must be >= 1"):
        from_dict(PersonalizationConfig, {"tcn_width_by_problem": {"generation": 0}})


def test_untrained_model_is_the_support_mean():
    model = CycleModel(CycleModelConfig(problem="generation", channels=4))
    x = torch.randn(3, 12, 101)
    assert torch.equal(model(x)["output"], x[:, 4:8])
    model = CycleModel(CycleModelConfig(problem="reconstruction", channels=4))
    assert torch.equal(model(x)["output"], x[:, 8:12])


def test_mix_base_starts_halfway_between_previous_cycle_and_template_and_can_adapt():
    model = CycleModel(CycleModelConfig(problem="generation", channels=4, base="mix"))
    x = torch.randn(3, 12, 101)
    assert torch.allclose(model(x)["output"], 0.5 * (x[:, :4] + x[:, 4:8]), atol=1e-6)
    assert "blend_logit" in model.adaptation_parameter_names("film")
    with pytest.raises(ValueError, match="only generation"):
        CycleModelConfig(problem="reconstruction", channels=4, base="mix")


@pytest.mark.parametrize("meta_learn", ["all", "rates", "adapted"])
def test_meta_learn_setting_limits_what_one_meta_update_changes(meta_learn):
    torch.manual_seed(0)
    model = CycleModel(CycleModelConfig(problem="generation", channels=4, base="mix"))
    torch.nn.init.normal_(model.tcn.head.weight, std=0.1)  # a zero head would leave most gradients zero
    maml = MAML(model, MAMLConfig(inner_steps=2, inner_lr=0.05, first_order=True, adapt="film"))
    frozen = freeze_for_meta_learning(maml, meta_learn)
    before = {n: p.detach().clone() for n, p in maml.named_parameters()}
    batch = lambda: MetaBatch(torch.randn(3, 12, 101), torch.randn(3, 4, 101))  # noqa: E731
    opt = torch.optim.SGD([p for p in maml.parameters() if p.requires_grad], lr=0.1)
    meta_step(opt, maml, maml([Episode(batch(), batch())]))
    changed = {n for n, p in maml.named_parameters() if not torch.equal(p, before[n])}
    film = {"model." + n for n in maml.adapt_names}
    rates = {n for n in before if n.startswith("inner_lrs.")}
    network = {n for n in before if n.startswith("model.")}
    assert rates <= changed
    expected_network = {"all": network, "rates": set(), "adapted": film}[meta_learn]
    assert changed & network == expected_network
    assert set(frozen) == {n[len("model."):] for n in network - expected_network}
    with pytest.raises(ValueError, match="meta_learn"):
        freeze_for_meta_learning(maml, "trunk")


def test_pooled_training_adds_a_shape_phase_after_mse_and_refuses_one_without_a_shape_term(trained):
    config, root, _, _ = trained
    steps = [float(line.split(",")[1]) for line in
             (fold_dir(root / "ckpt", 0, 0) / "generation" / "history_pooled.csv").read_text().splitlines()[1:]]
    # logged every 20 steps and at the end of each phase: the last row is the last shape step
    assert steps[-1] == config.train.pooled_steps + config.train.shape_steps - 1
    cs = synthetic_cycle_set()
    prepared = prepare(cs, fold_split(cs, config, 0))
    no_shape = replace(config, loss=CycleLossConfig())
    with pytest.raises(ValueError, match="shape_steps"):
        train_fold(no_shape, prepared, root / "refused", progress=False)


def test_normalization_uses_training_walkers_only(trained):
    config, _, cs, _ = trained
    split = fold_split(cs, config, 0)
    prepared = prepare(cs, split)
    assert set(prepared.normalizer.subjects) == set(split["train"])
    from metagait_edge.data.normalization import fit_normalizer

    with pytest.raises(ValueError, match="non-training"):
        prepare(cs, split, fit_normalizer(cs, split["train"] + split["test"][:1]))


def test_trained_fold_round_trips_and_refuses_another_config(trained):
    config, root, cs, _ = trained
    models = load_problem(config, fold_dir(root / "ckpt", 0, 0), "generation")
    assert models.split == fold_split(cs, config, 0)
    assert all(hp.steps == config.maml.inner_steps and hp.lr in config.train.finetune_lrs
               for hp in models.finetune.values())
    assert set(models.finetune) == set(models.scratch) == {1, 5}  # tuned per support size
    assert models.maml.log_shot_scale.shape == (2,)  # MAML's per-support-size rate multipliers came back
    other = replace(config, tcn=replace(config.tcn, hidden_channels=16))
    with pytest.raises(CheckpointError, match="hidden_channels"):
        load_problem(other, fold_dir(root / "ckpt", 0, 0), "generation")


def test_evaluation_report_has_the_documented_shape(trained):
    config, root, _, cs_path = trained
    scores = root / "scores.json"
    payload = evaluate(config, root / "ckpt", quick=True, progress=False, cycles_path=cs_path, scores_out=scores)
    merged = evaluate(config, root / "ckpt", quick=True, progress=False, cycles_path=cs_path, folds=[], merge=[scores])
    assert merged["results"] == payload["results"] and merged["protocol"]["seeds"] == [0]
    only = evaluate(config, root / "ckpt", quick=True, progress=False, cycles_path=cs_path, folds=[], merge=[scores],
                    problems=["reconstruction"], scores_out=root / "recon.json")
    assert set(only["results"]) == {"reconstruction"}  # --problems also picks from merged scores
    assert only["results"]["reconstruction"] == payload["results"]["reconstruction"]
    again = evaluate(config, root / "ckpt", quick=True, progress=False, cycles_path=cs_path, folds=[],
                     merge=[root / "recon.json"])  # a merged selection saved with --scores-out merges again
    assert again["results"] == only["results"] and again["protocol"]["seeds"] == [0]
    assert merged["protocol"]["training_loss"] == payload["protocol"]["training_loss"]  # read from the checkpoints
    methods = {"maml", "support_mean", "pooled", "pooled_finetune", "scratch"}
    for problem in ("generation", "reconstruction"):
        for shots in ("1", "5"):
            cell = payload["results"][problem][shots]
            expected = methods | ({"copy_previous"} if problem == "generation" else set())
            assert expected <= set(cell)
            for m in expected:
                for key in ("mse", "mse_sd", "dtw", "dtw_sd"):
                    assert isinstance(cell[m][key], float) and cell[m][key] >= 0
            assert set(cell["gap_closed"]) == {"maml", "pooled_finetune"}
    assert set(payload["timing_ms"]) == {"adapt_1shot", "adapt_5shot", "generate_cycle"}
    assert payload["protocol"]["training_loss"]["generation"]["sdtw_weight"] == 1.0
    assert payload["protocol"]["training_loss"]["generation"]["shape_steps"] == config.train.shape_steps
    json.dumps(payload)  # machine-readable as is
    # the synthetic walkers differ: the support mean must beat copying nothing (zeros = population mean)
    sm = payload["results"]["generation"]["5"]["support_mean"]["mse"]
    assert sm < 1.0


@pytest.mark.slow
def test_a_settled_support_changes_only_the_support_and_is_not_merged_with_an_unsettled_one(trained, tmp_path):
    config, root, _, cs_path = trained
    kw = dict(quick=True, progress=False, cycles_path=cs_path, problems=["generation"])
    plain = evaluate(config, root / "ckpt", **kw)
    settled = evaluate(config, root / "ckpt", settle=2, scores_out=tmp_path / "settled.json", **kw)
    assert settled["protocol"]["settle"] == 2 and plain["protocol"]["settle"] == 0
    p5, s5 = (r["results"]["generation"]["5"] for r in (plain, settled))
    # same queries: what ignores the support scores the same, what uses it does not
    assert s5["copy_previous"]["mse"] == pytest.approx(p5["copy_previous"]["mse"])
    assert s5["support_mean"]["mse"] != pytest.approx(p5["support_mean"]["mse"])
    assert "the K strides after the first 2 of a walking recording" in support_sentence(settled["protocol"])
    assert "the first K strides" in support_sentence(plain["protocol"])
    with pytest.raises(ValueError, match="--settle 2, this report with --settle 0"):
        evaluate(config, root / "ckpt", quick=True, progress=False, cycles_path=cs_path, folds=[],
                 merge=[tmp_path / "settled.json"])


@pytest.mark.slow
def test_reconstruction_is_evaluated_per_kind_of_missing_data(trained, tmp_path):
    config, root, _, cs_path = trained
    runs = {}
    for mode in ("sparse", "sensors"):
        runs[mode] = evaluate(config, root / "ckpt", quick=True, progress=False, cycles_path=cs_path, masking=mode,
                              problems=["reconstruction"], scores_out=tmp_path / f"{mode}.json")
        assert set(runs[mode]["results"]) == {"reconstruction"}
        assert runs[mode]["protocol"]["masking"] == mode
    assert runs["sparse"]["protocol"]["p_sensors"] == 0.0 and runs["sensors"]["protocol"]["p_sensors"] == 1.0
    sparse, sensors = (runs[m]["results"]["reconstruction"]["5"]["pooled"]["mse"] for m in ("sparse", "sensors"))
    assert sparse != pytest.approx(sensors)  # other inputs, other errors
    assert "only 10 % of the samples are observed (every cycle" in masking_sentence(runs["sparse"]["protocol"])
    assert "all but 3 of the 6 IMUs are observed (every cycle" in masking_sentence(runs["sensors"]["protocol"])
    assert "one of the two at random" in masking_sentence({"keep_fraction": 0.1, "drop_sensors": 3})
    report = tmp_path / "sensors.md"
    write_markdown(report, runs["sensors"], "metagait-edge eval-personalization --masking sensors", {})
    assert "Not measured: timing runs with the generation model" in report.read_text()
    with pytest.raises(ValueError, match="--masking sensors, this report with --masking mixed"):
        evaluate(config, root / "ckpt", quick=True, progress=False, cycles_path=cs_path, folds=[],
                 merge=[tmp_path / "sensors.json"])
    with pytest.raises(ValueError, match="masking mode"):
        masking_for(config.masking, "half")
    with pytest.raises(ValueError, match="unknown problems"):
        evaluate(config, root / "ckpt", quick=True, progress=False, cycles_path=cs_path, problems=["walking"])


def test_maml_adaptation_lowers_the_support_loss_of_a_trained_model(trained):
    config, root, cs, _ = trained
    from metagait_edge.metrics.masked import masked_mse
    from metagait_edge.personalization.episodes import support_batch
    from metagait_edge.personalization.tasks import evaluation_tasks

    models = load_problem(config, fold_dir(root / "ckpt", 0, 0), "generation")
    prepared = prepare(cs, models.split, models.normalizer)
    task = evaluation_tasks(prepared.recordings, models.split["test"], 5, config.protocol, True)[0]
    s = support_batch(prepared.tensors, task, "generation", config.masking)
    before = masked_mse(models.maml.model(s.x)["output"], s.y, s.mask).item()
    fast = models.maml.adapt(s.x, s.y, s.mask, differentiable=False, steps=20)
    after = masked_mse(models.maml.forward_with(fast, s.x)["output"], s.y, s.mask).item()
    assert after < before


@pytest.mark.slow
def test_two_process_ddp_training_run(trained, tmp_path):
    """torchrun with 2 CPU processes (gloo) trains the same code; rank 0 writes the checkpoints."""
    config, _, cs, cs_path = trained
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(dump_yaml(replace(config, problems=("generation",))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29631",
           "-m", "metagait_edge", "train-personalization", "--config", str(cfg_path), "--out", str(tmp_path / "ddp"),
           "--cycles", str(cs_path), "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "world size 2" in out.stdout
    models = load_problem(from_dict(PersonalizationConfig, json.loads(
        (tmp_path / "ddp" / "seed0" / "fold0" / "generation" / "maml.json").read_text())["config"]),
        tmp_path / "ddp" / "seed0" / "fold0", "generation")
    # What the two ranks trained works: finite weights that adapt to a held-out walker's support.
    assert all(torch.isfinite(p).all() for p in models.maml.parameters())
    from metagait_edge.metrics.masked import masked_mse
    from metagait_edge.personalization.episodes import support_batch
    from metagait_edge.personalization.tasks import evaluation_tasks

    prepared = prepare(cs, models.split, models.normalizer)
    task = evaluation_tasks(prepared.recordings, models.split["test"], 5, config.protocol, True)[0]
    s = support_batch(prepared.tensors, task, "generation", config.masking)
    before = masked_mse(models.maml.model(s.x)["output"], s.y, s.mask).item()
    fast = models.maml.adapt(s.x, s.y, s.mask, differentiable=False, steps=20)
    assert masked_mse(models.maml.forward_with(fast, s.x)["output"], s.y, s.mask).item() < before


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("METAGAIT_DATA"), reason="needs the HuGaDB archive under $METAGAIT_DATA")
def test_quick_evaluation_with_the_shipped_checkpoint_reproduces_the_committed_quick_report(tmp_path):
    """docs/results/personalization_quick.md is what its command makes today (bar provenance and timings)."""
    from metagait_edge.personalization.runner import DEFAULT_CHECKPOINTS, available_runs

    if not available_runs(DEFAULT_CHECKPOINTS):
        pytest.skip(f"no shipped checkpoint under {DEFAULT_CHECKPOINTS}")
    out = subprocess.run([sys.executable, "-m", "metagait_edge", "eval-personalization", "--quick", "--json", "r.json",
                          "--out", "r.md", "--no-progress", "--threads", "1"],
                         capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md"]  # nothing written where not asked
    payload = json.loads((tmp_path / "r.json").read_text())
    gen5 = payload["results"]["generation"]["5"]
    # real walkers: a model that sees the support cycles must beat copying the previous cycle
    assert gen5["maml"]["mse"] < gen5["copy_previous"]["mse"]
    committed = (REPO / "docs" / "results" / "personalization_quick.md").read_text()
    made = (tmp_path / "r.md").read_text()
    assert report_body(made, ("## Timing (one CPU thread, median)",)) == \
        report_body(committed, ("## Timing (one CPU thread, median)",)), \
        "docs/results/personalization_quick.md is stale: regenerate it with the command in its first lines"


def test_eval_personalization_writes_a_report_only_where_asked(tmp_path, monkeypatch):
    """--quick --json X writes X and nothing else (no tracked docs/results/ report); --out MD writes MD."""
    import metagait_edge.personalization.runner as runner
    from metagait_edge import cli

    if not runner.available_runs(DEFAULT_CHECKPOINTS):
        pytest.skip(f"no shipped checkpoint under {DEFAULT_CHECKPOINTS}")
    payload = json.loads((REPO / "docs" / "results" / "personalization.json").read_text())
    monkeypatch.setattr(runner, "evaluate", lambda *a, **k: payload)  # the evaluation itself is tested above
    monkeypatch.chdir(tmp_path)
    assert cli.main(["eval-personalization", "--quick", "--json", "x.json", "--no-progress"]) == 0
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["x.json"]
    assert cli.main(["eval-personalization", "--quick", "--out", "r/q.md", "--no-progress"]) == 0
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["r", "r/q.md", "x.json"]
    assert "MAML-TCN" in (tmp_path / "r" / "q.md").read_text()


def test_template_gap_reproduces_the_pooled_baseline_and_measures_the_gap(trained):
    from metagait_edge.metrics.masked import masked_mse
    from metagait_edge.personalization.analysis import ALL, summarize_gap, template_gap
    from metagait_edge.personalization.episodes import query_batch
    from metagait_edge.personalization.tasks import evaluation_tasks

    config, root, cs, _ = trained
    models = load_problem(config, fold_dir(root / "ckpt", 0, 0), "generation")
    prepared = prepare(cs, models.split, models.normalizer)
    per_walker = template_gap(models, prepared, config, shots=5, template_sizes=(1, 5, ALL), progress=False)
    assert {"pooled@1", "pooled@5", "pooled@all", "reference@5", "reference@all", "maml"} <= set(per_walker)
    # pooled @ 5 is the evaluation's pooled baseline: its template is the mean of the 5 support cycles.
    want = {}
    for task in evaluation_tasks(prepared.recordings, models.split["test"], 5, config.protocol, True, "main"):
        q = query_batch(prepared.tensors, task, "generation", config.masking)
        with torch.no_grad():
            pred = models.pooled(q.x)["output"]
        want.setdefault(task.subject, []).extend(masked_mse(pred, q.y, q.mask, reduction="per_sample").tolist())
    assert want and set(want) == set(per_walker["pooled@5"])
    for walker, values in want.items():
        assert per_walker["pooled@5"][walker] == pytest.approx(values, rel=1e-5)
    summary = summarize_gap(per_walker, shots=5)
    assert summary["pooled@5"]["gap_closed"] == pytest.approx(0.0)
    assert summary["reference@all"]["gap_closed"] == pytest.approx(1.0)


def test_gap_summary_by_hand():
    import numpy as np

    from metagait_edge.personalization.analysis import first_cycles, summarize_gap

    per_walker = {"pooled@5": {1: [1.0, 1.0], 2: [2.0]}, "reference@all": {1: [0.5], 2: [1.0]},
                  "pooled@all": {1: [0.75], 2: [1.5]}}
    s = summarize_gap(per_walker, shots=5)
    assert s["pooled@5"]["mse"] == pytest.approx(1.5) and s["reference@all"]["mse"] == pytest.approx(0.75)
    assert s["pooled@all"]["gap_closed"] == pytest.approx(0.5)
    assert list(first_cycles(np.arange(10, 20), {11, 13}, 3)) == [10, 12, 14]
    assert len(first_cycles(np.arange(10, 20), {11, 13}, "all")) == 8


def test_eval_personalization_continual_quick_json_has_the_documented_keys(trained, tmp_path):
    """``--continual --quick --json``: key ``continual`` with ``strides``, ``gap_closed`` (same order) and
    ``walkers_worse_than_pooled``; the synthetic walks (72 strides, 40 of them future) reach 20 strides."""
    from metagait_edge import cli

    _, root, _, cs_path = trained
    out = tmp_path / "c.json"
    assert cli.main(["eval-personalization", "--continual", "--quick", "--json", str(out), "--checkpoints",
                     str(root / "ckpt"), "--cycles", str(cs_path), "--no-progress"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]  # nothing written where not asked
    cont = json.loads(out.read_text())["continual"]
    assert cont["strides"] == [5, 10, 20, 50, 100, 200]
    assert len(cont["gap_closed"]) == len(cont["strides"])
    assert isinstance(cont["walkers_worse_than_pooled"], int) and cont["walkers_worse_than_pooled"] >= 0
    assert [r["strides"] for r in cont["points"] if r["walkers"]] == [5, 10, 20]
    for r in cont["points"][:3]:
        assert r["mse_reference"] < r["mse_pooled"]  # hundreds of own strides beat the generic model
        assert len(r["deg_learner"]) == 6 and all(v > 0 for v in r["deg_learner"])
    # Walk up to the future: the pooled model's template comes from the calibration n strides before the
    # future ones, so its score changes with n; along the name-order walk it is the first 5 strides' template.
    payload = json.loads(out.read_text())
    assert payload["protocol"]["protocol"] == "up-to-future"
    for w in cont["per_walker"]:
        assert len({round(s["mse"], 9) for s in w["pooled_points"].values()}) > 1
    old = payload["continual_name_order"]
    assert old["strides"] == cont["strides"] and isinstance(old["walkers_worse_than_pooled"], int)
    for w in old["per_walker"]:
        assert len({round(s["mse"], 9) for s in w["pooled_points"].values()}) == 1
        assert w["reference"] == next(v for v in cont["per_walker"] if v["subject"] == w["subject"])["reference"]

