"""What K strides reveal about a walker: the template estimators and the analysis script."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from metagait_edge.config import dump_yaml
from metagait_edge.personalization.config import PersonalizationConfig, SplitConfig
from metagait_edge.personalization.experiment import fold_split, prepare
from metagait_edge.personalization.stride_information import (
    PopulationPrior,
    WalkerStrides,
    oracle_shrinkage,
    population_prior,
    posterior_mean,
    walker_strides,
)
from metagait_edge.personalization.tasks import ProtocolConfig
from personalization_fixtures import synthetic_cycle_set

REPO = Path(__file__).resolve().parents[1]


def two_walker_prior(stride_var: float) -> tuple[PopulationPrior, torch.Tensor]:
    torch.manual_seed(0)
    direction = torch.randn(3, 20)
    prior = PopulationPrior(mean=torch.zeros(3, 20), deviations=torch.stack([direction, -direction]),
                            stride_var=torch.full((3, 20), stride_var))
    return prior, 0.8 * direction  # a walker whose deviation lies in the prior's span


def test_posterior_follows_the_strides_when_they_are_precise_and_the_prior_when_they_are_not():
    prior, walker = two_walker_prior(1e-6)
    valid = torch.ones(3, dtype=torch.bool)
    assert torch.allclose(posterior_mean(prior, walker, valid, shots=5), walker, atol=1e-3)
    noisy, _ = two_walker_prior(1e6)
    assert posterior_mean(noisy, walker, valid, shots=5).abs().max() < 1e-3
    # a deviation outside the span of the training walkers' deviations is not recovered at all
    orthogonal = torch.randn(3, 20)
    orthogonal -= (orthogonal * walker).sum() / (walker * walker).sum() * walker
    assert posterior_mean(prior, orthogonal, valid, shots=5).abs().max() < 1e-3


def test_posterior_ignores_channels_the_strides_do_not_observe():
    prior, walker = two_walker_prior(1e-6)
    corrupted = walker.clone()
    corrupted[1] = 100.0  # an invalid channel (corrupted gyroscope): its values must not count
    valid = torch.tensor([True, False, True])
    assert torch.allclose(posterior_mean(prior, corrupted, valid, shots=5), walker, atol=1e-3)


def strides(support: torch.Tensor, queries: torch.Tensor) -> WalkerStrides:
    valid = torch.ones(queries.shape[:2], dtype=torch.bool)
    return WalkerStrides(subject=1, queries=queries, query_valid=valid, support=support,
                         support_valid=valid[0], later={}, own=queries.mean(0))


def test_oracle_shrinkage_trusts_informative_strides_and_ignores_uninformative_ones():
    torch.manual_seed(1)
    population = torch.zeros(2, 10)
    truth = [torch.randn(2, 10) for _ in range(6)]
    informative = [strides(t, t[None].repeat(4, 1, 1)) for t in truth]
    assert torch.allclose(oracle_shrinkage(informative, population), torch.ones(2, 10))
    shuffled = [strides(truth[(i + 1) % 6], t[None].repeat(4, 1, 1)) for i, t in enumerate(truth)]
    alpha = oracle_shrinkage(shuffled, population)
    assert alpha.min() >= 0 and alpha.mean() < 0.5  # the other walker's strides say little about this one


def small_config() -> PersonalizationConfig:
    base = PersonalizationConfig()
    return replace(base, split=SplitConfig(n_folds=3, n_val=2, seed=0),
                   protocol=ProtocolConfig(shots=(1, 5), gap=5, max_queries=6, min_queries=3))


def test_walker_strides_refuse_a_later_window_that_reaches_the_queries():
    cs = synthetic_cycle_set()
    config = small_config()
    split = fold_split(cs, config, 0)
    prepared = prepare(cs, split)
    walkers = walker_strides(prepared, split["test"], 5, config.protocol, skips=[1, 2])
    assert walkers and {w.subject for w in walkers} <= set(split["test"])
    assert all(w.queries.shape[0] >= config.protocol.min_queries for w in walkers)
    assert all(set(w.later) == {1, 2} and not torch.equal(w.later[1], w.later[2]) for w in walkers)
    with pytest.raises(ValueError, match="reach its queries"):
        walker_strides(prepared, split["test"], 5, config.protocol, skips=[2, 8])
    prior = population_prior(prepared.tensors.x, prepared.tensors.valid, prepared.recordings, split["train"])
    assert prior.deviations.shape[0] == len(split["train"]) and bool((prior.stride_var > 0).all())
    with pytest.raises(ValueError, match="at least 2 walkers"):
        population_prior(prepared.tensors.x, prepared.tensors.valid, prepared.recordings, split["train"][:1])


def test_script_writes_both_support_sizes_and_the_own_mean_beats_the_population(tmp_path):
    cs_path = tmp_path / "cycles.npz"
    synthetic_cycle_set().save(cs_path)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(dump_yaml(small_config()))
    out = tmp_path / "strides.md"
    subprocess.run([sys.executable, str(REPO / "training" / "stride_information.py"), "--config", str(config_path),
                    "--cycles", str(cs_path), "--folds", "0", "1", "--skip", "1", "2", "--out", str(out),
                    "--no-progress"],
                   check=True, cwd=REPO, capture_output=True)
    result = json.loads(out.with_suffix(".json").read_text())
    one, five = result["results"]["1"], result["results"]["5"]
    # synthetic walkers have their own shapes: knowing the walker beats the population, 5 strides beat 1
    assert five["own"]["mse"] < five["support"]["mse"] < five["population"]["mse"]
    assert five["support"]["mse"] < one["support"]["mse"]
    assert {"later1", "later2"} <= set(five) and five["later2"]["mse"] != five["later1"]["mse"]
    assert five["own"]["recovered"] == pytest.approx(1.0) and five["population"]["recovered"] == pytest.approx(0.0)
    text = out.read_text()
    assert "## 1-shot" in text and "## 5-shot" in text and "python training/stride_information.py" in text
