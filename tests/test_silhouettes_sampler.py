from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from metagait_edge.data import silhouettes as S
from metagait_edge.recognition.sampler import (
    PKBatchSampler, SilhouetteDataset, clip_indices, collate_silhouettes, eval_loader, train_loader,
)


def _labels():
    # 6 identities; identity 5 has only 2 sequences (fewer than K).
    return [0] * 5 + [1] * 4 + [2] * 6 + [3] * 5 + [4] * 3 + [5] * 2


def test_pk_batches_have_p_identities_k_each():
    labels = np.array(_labels())
    s = PKBatchSampler(labels, p=4, k=3, seed=1, batches_per_epoch=20)
    batches = list(s)
    assert len(batches) == 20
    for b in batches:
        assert len(b) == 12
        counts = Counter(labels[b].tolist())
        assert len(counts) == 4 and set(counts.values()) == {3}
        for c in counts:  # without replacement where an identity has >= K sequences
            if (labels == c).sum() >= 3:
                assert len({i for i in b if labels[i] == c}) == 3
    # Every identity is visited: each pass over the shuffled identities covers all of them.
    assert set(labels[np.concatenate(batches)].tolist()) == set(range(6))


def test_pk_deterministic_per_seed_and_epoch():
    labels = _labels()
    a = list(PKBatchSampler(labels, 3, 2, seed=7, batches_per_epoch=5))
    b = list(PKBatchSampler(labels, 3, 2, seed=7, batches_per_epoch=5))
    c = list(PKBatchSampler(labels, 3, 2, seed=8, batches_per_epoch=5))
    assert a == b and a != c
    s = PKBatchSampler(labels, 3, 2, seed=7, batches_per_epoch=5)
    s.set_epoch(1)
    assert list(s) != a


def test_pk_sharding_splits_the_global_batch():
    labels = np.array(_labels())
    full = list(PKBatchSampler(labels, 4, 2, seed=3, batches_per_epoch=6))
    r0 = list(PKBatchSampler(labels, 4, 2, seed=3, batches_per_epoch=6, rank=0, world_size=2))
    r1 = list(PKBatchSampler(labels, 4, 2, seed=3, batches_per_epoch=6, rank=1, world_size=2))
    for f, a, b in zip(full, r0, r1):
        assert sorted(a + b) == sorted(f)
        assert len(a) == len(b) == 4
        assert not set(labels[a]) & set(labels[b])  # each rank has whole identities (P/2 x K)


def test_pk_bad_arguments():
    with pytest.raises(ValueError, match="only 6 identities"):
        PKBatchSampler(_labels(), 7, 2)
    with pytest.raises(ValueError, match="divisible"):
        PKBatchSampler(_labels(), 3, 2, world_size=2)


def test_clip_indices_modes():
    rng = np.random.default_rng(0)
    idx = clip_indices(100, 30, rng, "contiguous")
    assert len(idx) == 30 and np.all(np.diff(idx) == 1) and 0 <= idx[0] <= 70
    idx = clip_indices(100, 30, rng, "ordered")
    assert len(idx) == 30 and np.all(np.diff(idx) > 0) and idx.max() < 100
    idx = clip_indices(12, 30, rng, "contiguous", "wrap")
    assert len(idx) == 30 and idx.max() < 12 and np.all((np.diff(idx) == 1) | (np.diff(idx) == -11))
    idx = clip_indices(12, 30, rng, "contiguous", "pad")
    assert list(idx[:12]) == list(range(12)) and np.all(idx[12:] == -1)
    with pytest.raises(ValueError, match="sampling"):
        clip_indices(10, 5, rng, "random")


def _dataset(root, ids=("001", "002", "003"), types=("nm-01", "nm-02", "bg-01"), views=("000", "090")):
    for i, sid in enumerate(ids):
        for j, t in enumerate(types):
            for k, v in enumerate(views):
                n = 20 + 5 * j + 7 * k
                arr = np.zeros((n, 64, 64), dtype=np.uint8)
                arr[:, 10:50, 20:44] = 255
                arr[np.arange(n) % 2 == 1, :, 30:32] = 0
                arr[:, 0, 20 + i] = 255  # a per-identity mark inside the 44-wide crop
                S.write_pkl(S.sequence_pkl_path(root, sid, t, v), arr)
    return S.scan(root)


def test_train_loader_yields_pk_clips(tmp_path):
    index = _dataset(tmp_path)
    loader = train_loader(index, p=2, k=3, seed=0, batches_per_epoch=3)
    batches = list(loader)
    assert len(batches) == 3
    for b in batches:
        assert b["sil"].shape == (6, 30, 64, 44) and b["sil"].dtype == torch.float32
        assert 0.0 <= b["sil"].min() and b["sil"].max() == 1.0
        assert sorted(Counter(b["label"].tolist()).values()) == [3, 3]
        for j, meta in enumerate(b["meta"]):
            assert index.ids.index(meta["id"]) == b["label"][j].item()
            mark_col = 20 + int(meta["id"]) - 1 - 10  # the identity mark after cutting 10 px
            assert b["sil"][j, :, 0, mark_col].min() == 1.0
    again = [b["sil"] for b in train_loader(index, p=2, k=3, seed=0, batches_per_epoch=3)]
    assert all(torch.equal(x, y["sil"]) for x, y in zip(again, batches))


def test_short_sequence_padding_marks_length(tmp_path):
    index = _dataset(tmp_path, ids=("001",), types=("nm-01",), views=("000",))  # 20 frames
    ds = SilhouetteDataset(index, train=True, frames=30, short="pad")
    item = ds[0]
    assert item["length"] == 20 and item["sil"].shape == (30, 64, 44)
    assert item["sil"][20:].max() == 0 and item["sil"][:20].max() == 1


def test_eval_loader_whole_sequences_padded(tmp_path):
    index = _dataset(tmp_path)
    batch = next(iter(eval_loader(index, batch_size=4)))
    lengths = [len(S.load_sequence(r)) for r in index.records[:4]]
    assert batch["lengths"].tolist() == lengths
    assert batch["sil"].shape == (4, max(lengths), 64, 44)
    shortest = int(np.argmin(lengths))
    assert batch["sil"][shortest, lengths[shortest]:].max() == 0
    assert [m["view"] for m in batch["meta"]] == [r.view for r in index.records[:4]]


def test_collate_rejects_empty():
    with pytest.raises(ValueError):
        collate_silhouettes([])
