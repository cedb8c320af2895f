from __future__ import annotations

import numpy as np
import pytest
import torch

from metagait_edge.metrics import batch_dtw, dtw_distance, masked_mae, masked_mse


def _reference_dtw(a: np.ndarray, b: np.ndarray):
    """Direct O(n*m) DTW on [channels, time] arrays: squared-Euclidean local cost, sqrt of the sum."""
    n, m = a.shape[1], b.shape[1]
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(n):
        for j in range(m):
            cost = float(((a[:, i] - b[:, j]) ** 2).sum())
            acc[i + 1, j + 1] = cost + min(acc[i, j], acc[i, j + 1], acc[i + 1, j])
    # backtrack the optimal path to get its length
    i, j, length = n, m, 1
    while (i, j) != (1, 1):
        steps = [(i - 1, j - 1), (i - 1, j), (i, j - 1)]
        i, j = min((s for s in steps if s[0] >= 1 and s[1] >= 1), key=lambda s: acc[s])
        length += 1
    return np.sqrt(acc[n, m]), length


@pytest.mark.parametrize("seed", range(5))
def test_dtw_matches_direct_numpy(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(3, 9))
    b = rng.normal(size=(3, 12))
    ref, ref_len = _reference_dtw(a, b)
    res = dtw_distance(a, b, return_path=True)
    assert res.distance == pytest.approx(ref, rel=1e-10)
    assert res.path_length == ref_len == len(res.path)
    # the reported path realises the reported distance
    cost = sum(float(((a[:, i] - b[:, j]) ** 2).sum()) for i, j in res.path)
    assert np.sqrt(cost) == pytest.approx(res.distance, rel=1e-10)
    assert res.normalized == pytest.approx(res.distance / res.path_length)
    assert res.rms == pytest.approx(np.sqrt(ref**2 / (ref_len * 3)))


def test_dtw_is_zero_for_time_shift_free_identity_and_smaller_than_euclidean():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 30))
    assert dtw_distance(a, a).distance == 0.0
    b = np.roll(a, 2, axis=1)
    euclid = np.sqrt(((a - b) ** 2).sum())
    assert dtw_distance(a, b).distance < euclid


def test_masked_channels_are_excluded():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 10))
    b = a.copy()
    b[1] = np.nan  # a missing sensor, garbage in the target
    res = dtw_distance(a, b, mask=np.array([1, 0, 1]))
    assert res.distance == 0.0 and res.n_channels == 2
    ref, _ = _reference_dtw(a[[0, 2]], rng.normal(size=(2, 10)) * 0 + a[[0, 2]] + 1.0)
    res2 = dtw_distance(a, a + 1.0, mask=np.array([1, 0, 1]))
    assert res2.distance == pytest.approx(ref)
    with pytest.raises(ValueError, match="non-finite"):
        dtw_distance(a, b)
    with pytest.raises(ValueError, match="every channel"):
        dtw_distance(a, b, mask=np.zeros(3))


def test_batch_dtw_on_tensors_with_masks():
    torch.manual_seed(0)
    pred = torch.randn(3, 4, 20)
    target = torch.randn(3, 4, 20)
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 1], [0, 0, 1, 0]])
    out = batch_dtw(pred, target, mask)
    for i in range(3):
        keep = mask[i].bool().numpy()
        ref, ref_len = _reference_dtw(pred[i].numpy()[keep].astype(np.float64), target[i].numpy()[keep].astype(np.float64))
        assert out["distance"][i] == pytest.approx(ref, rel=1e-6)
        assert out["path_length"][i] == ref_len
    with pytest.raises(ValueError, match="sample 1"):
        bad = target.clone()
        bad[1, 0] = float("nan")
        batch_dtw(pred, bad, torch.ones(3, 4))


def test_masked_mse_ignores_invalid_entries_and_nans():
    pred = torch.zeros(2, 3, 5)
    target = torch.ones(2, 3, 5)
    target[0, 1] = float("nan")
    target[1, 2] = 5.0
    mask = torch.tensor([[1, 0, 1], [1, 1, 0]])
    loss = masked_mse(pred, target, mask)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(1.0)
    per_sample = masked_mse(pred, target, mask, reduction="per_sample")
    assert torch.allclose(per_sample, torch.tensor([1.0, 1.0]))
    full = masked_mse(pred, torch.nan_to_num(target), None, reduction="per_channel")
    assert torch.allclose(full, torch.tensor([1.0, 0.5, 13.0]))
    # per-sample [B, C, T] masks count only the valid samples
    m3 = torch.zeros(2, 3, 5)
    m3[1, 2, :2] = 1
    assert masked_mae(pred, target, m3).item() == pytest.approx(5.0)
    with pytest.raises(ValueError, match="mask must be"):
        masked_mse(pred, target, torch.ones(3, 2))


def test_masked_mse_gradient_is_finite_with_nan_targets():
    pred = torch.zeros(1, 2, 4, requires_grad=True)
    target = torch.ones(1, 2, 4)
    target[0, 1] = float("nan")
    masked_mse(pred, target, torch.tensor([[1, 0]])).backward()
    assert torch.isfinite(pred.grad).all()
    assert (pred.grad[0, 1] == 0).all() and (pred.grad[0, 0] != 0).all()
