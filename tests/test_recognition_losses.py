from __future__ import annotations

import math

import pytest
import torch

from metagait_edge.config import ConfigError, from_dict
from metagait_edge.recognition.losses import (
    LossAggregator,
    LossConfig,
    LossTermConfig,
    batch_all_triplet_loss,
    strip_cross_entropy,
)


def _points(values):
    return torch.tensor(values, dtype=torch.float32).reshape(-1, 1, 1)


def test_triplet_hand_computed_averages_over_nonzero_triplets():
    # 1-D points; triplets (a, p, n) worked out by hand, margin 0.2:
    # a=0: (p=1, d=1) vs n=2 (0.5) -> 0.7, n=3 (5) -> 0 | a=1: vs n=2 (0.5) -> 0.7, n=3 (4) -> 0
    # a=2: (p=3, d=4.5) vs n=0 (0.5) -> 4.2, n=1 (0.5) -> 4.2 | a=3: (p=2, d=4.5) vs n=0 (5) -> 0, n=1 (4) -> 0.7
    emb = _points([0.0, 1.0, 0.5, 5.0])
    labels = torch.tensor([0, 0, 1, 1])
    loss, logs = batch_all_triplet_loss(emb, labels, margin=0.2)
    assert loss.item() == pytest.approx(10.5 / 5, abs=1e-5)
    assert logs["nonzero_frac"] == pytest.approx(5 / 8)
    assert logs["valid_triplets"] == 8


def test_triplet_is_mean_over_strips_and_zero_when_separated():
    strip_a = torch.tensor([0.0, 1.0, 0.5, 5.0])
    strip_b = torch.tensor([0.0, 0.1, 10.0, 10.1])  # well separated: no violating triplet
    emb = torch.stack([strip_a, strip_b], dim=1).unsqueeze(-1)  # [B=4, P=2, D=1]
    labels = torch.tensor([0, 0, 1, 1])
    loss, _ = batch_all_triplet_loss(emb, labels)
    assert loss.item() == pytest.approx((2.1 + 0.0) / 2, abs=1e-5)
    sep, logs = batch_all_triplet_loss(emb[:, 1:], labels)
    assert sep.item() == 0.0 and logs["nonzero_frac"] == 0.0


def test_triplet_uses_euclidean_distance_in_d_dimensions():
    # 3-4-5 triangle: anchor (0,0), positive (3,4) at distance 5, negative (0,4.9) at distance 4.9.
    emb = torch.tensor([[[0.0, 0.0]], [[3.0, 4.0]], [[0.0, 4.9]]])
    labels = torch.tensor([7, 7, 3])
    loss, _ = batch_all_triplet_loss(emb, labels, margin=0.2)
    # a=0: 5 - 4.9 + 0.2 = 0.3 ; a=1: d(1,0) = 5, d(1,2) = sqrt(3^2 + 0.9^2)
    assert loss.item() == pytest.approx((0.3 + 5.0 - math.sqrt(9.81) + 0.2) / 2, abs=1e-4)


def test_triplet_gradient_pulls_positive_closer():
    emb = _points([0.0, 1.0, 0.5]).requires_grad_(True)
    loss, _ = batch_all_triplet_loss(emb, torch.tensor([0, 0, 1]))
    loss.backward()
    # Gradient descent (-grad) moves the two positives (at 0 and 1) towards each other; by hand:
    # d loss / d x0 = (0 + -1) / 2 and d loss / d x1 = (0 + 1) / 2 over the two non-zero triplets.
    assert emb.grad[0, 0, 0].item() == pytest.approx(-0.5, abs=1e-5)
    assert emb.grad[1, 0, 0].item() == pytest.approx(0.5, abs=1e-5)


def test_triplet_bad_labels_are_named():
    with pytest.raises(ValueError, match="labels must have shape"):
        batch_all_triplet_loss(torch.zeros(3, 2, 4), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer ids"):
        batch_all_triplet_loss(torch.zeros(3, 2, 4), torch.tensor([0.0, 1.0, 1.0]))


def test_cross_entropy_hand_computed_with_and_without_smoothing():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # p = (0.25, 0.75)
    labels = torch.tensor([1])
    loss, logs = strip_cross_entropy(logits, labels)
    assert loss.item() == pytest.approx(-math.log(0.75), abs=1e-6)
    assert logs["accuracy"] == 1.0
    smooth, _ = strip_cross_entropy(logits, labels, label_smoothing=0.1)
    expected = 0.9 * -math.log(0.75) + 0.1 * 0.5 * (-math.log(0.75) - math.log(0.25))
    assert smooth.item() == pytest.approx(expected, abs=1e-6)


def test_cross_entropy_averages_strips_and_reports_accuracy():
    # strip 0 right (p=0.75), strip 1 wrong (p=0.25) for label 1
    logits = torch.tensor([[[0.0, math.log(3.0)], [math.log(3.0), 0.0]]])
    loss, logs = strip_cross_entropy(logits, torch.tensor([1]))
    assert loss.item() == pytest.approx((-math.log(0.75) - math.log(0.25)) / 2, abs=1e-6)
    assert logs["accuracy"] == 0.5
    with pytest.raises(ValueError, match="labels must be in 0..1"):
        strip_cross_entropy(logits, torch.tensor([2]))


def test_aggregator_picks_outputs_by_name_and_weights_terms():
    emb = _points([0.0, 1.0, 0.5, 5.0])
    logits = torch.tensor([[[0.0, math.log(3.0)]]] * 4)
    labels = torch.tensor([0, 0, 1, 1])
    config = LossConfig(terms=[
        LossTermConfig(kind="triplet", output="feat", weight=2.0),
        LossTermConfig(kind="cross_entropy", output="cls", weight=0.5),
    ])
    total, logs = LossAggregator(config)({"feat": emb, "cls": logits, "unused": torch.zeros(1)}, labels)
    ce = (2 * -math.log(0.25) + 2 * -math.log(0.75)) / 4
    assert total.item() == pytest.approx(2.0 * 2.1 + 0.5 * ce, abs=1e-5)
    assert logs["triplet/loss"] == pytest.approx(2.1, abs=1e-5)
    assert logs["cross_entropy/accuracy"] == 0.5
    assert logs["total_loss"] == pytest.approx(total.item())


def test_aggregator_missing_output_is_named():
    with pytest.raises(ValueError, match="needs model output 'logits'"):
        LossAggregator()({"embeddings": _points([0.0, 1.0])}, torch.tensor([0, 1]))


def test_loss_config_from_dict_rejects_unknown_keys():
    cfg = from_dict(LossConfig, {"terms": [{"kind": "triplet", "output": "embeddings", "margin": 0.3}]})
    assert cfg.terms[0].margin == 0.3 and cfg.terms[0].name == "triplet"
    with pytest.raises(ConfigError, match="terms\\[0\\].margn"):
        from_dict(LossConfig, {"terms": [{"kind": "triplet", "output": "embeddings", "margn": 0.3}]})
    with pytest.raises(ConfigError, match="kind"):
        from_dict(LossConfig, {"terms": [{"kind": "arcface", "output": "embeddings"}]})
