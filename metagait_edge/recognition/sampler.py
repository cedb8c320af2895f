"""Training and test access to silhouette sequences: P x K batches, 30-frame clips, collate to tensors.

``PKBatchSampler`` yields index lists of P identities x K sequences, deterministic per (seed, epoch)
and optionally sharded by rank / world size without needing torch.distributed (each rank takes its own
P / world_size identities of the same global batch). ``SilhouetteDataset`` returns a training clip
(``frames`` contiguous frames from a random start, or ``frames`` frames drawn in temporal order), or
the whole sequence at test time; ``collate_silhouettes`` stacks clips into [B, T, 64, 44] float tensors
in 0..1, padding test sequences of different lengths with empty frames and reporting the lengths.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from metagait_edge.data.pretreatment import to_model_input
from metagait_edge.data.silhouettes import SequenceIndex, SequenceRecord, load_sequence

CLIP_FRAMES = 30
SAMPLING = ("contiguous", "ordered")
SHORT = ("wrap", "pad")


def clip_indices(n: int, length: int, rng: np.random.Generator, sampling: str = "contiguous",
                 short: str = "wrap") -> np.ndarray:
    """Frame indices of one training clip of ``length`` from a sequence of ``n`` frames.

    ``contiguous``: a random start, consecutive frames. ``ordered``: ``length`` distinct frames drawn
    at random and kept in temporal order. Shorter sequences wrap around (``wrap``: the walk continues
    periodically, as gait does) or end with -1 entries meaning "empty frame" (``pad``).
    """
    if n < 1:
        raise ValueError("empty sequence")
    if sampling not in SAMPLING:
        raise ValueError(f"sampling {sampling!r} not in {SAMPLING}")
    if short not in SHORT:
        raise ValueError(f"short {short!r} not in {SHORT}")
    if n >= length:
        if sampling == "contiguous":
            start = int(rng.integers(0, n - length + 1))
            return np.arange(start, start + length)
        return np.sort(rng.choice(n, size=length, replace=False))
    if short == "wrap":
        start = int(rng.integers(0, n))
        return (start + np.arange(length)) % n
    return np.concatenate([np.arange(n), -np.ones(length - n, dtype=np.int64)])


class PKBatchSampler(torch.utils.data.Sampler):
    """Batches of P identities x K sequences each, as index lists into ``labels``.

    Identities are visited in a shuffled order (each once per pass); K sequences are drawn without
    replacement when an identity has at least K, else with replacement. With ``world_size`` > 1, P must
    be divisible by it and rank r gets identities r, r + world_size, ... of each global batch.
    """

    def __init__(self, labels: Sequence[int], p: int, k: int, seed: int = 0, batches_per_epoch: int | None = None,
                 rank: int = 0, world_size: int = 1):
        labels = np.asarray(labels)
        self.by_label = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
        if p < 1 or k < 1:
            raise ValueError(f"P and K must be >= 1, got P={p}, K={k}")
        if p > len(self.by_label):
            raise ValueError(f"P={p} identities per batch but only {len(self.by_label)} identities in the data")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} / world_size {world_size} invalid")
        if p % world_size:
            raise ValueError(f"P={p} is not divisible by world_size={world_size}")
        self.p, self.k, self.seed, self.rank, self.world_size = p, k, seed, rank, world_size
        self.batches = batches_per_epoch if batches_per_epoch is not None else max(1, len(self.by_label) // p)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[int]]:
        # Same stream on every rank (same seed/epoch), so the ranks' shares form one global P x K batch.
        rng = np.random.default_rng([self.seed, self.epoch])
        ids = np.array(sorted(self.by_label))
        order = rng.permutation(ids)
        pos = 0
        for _ in range(self.batches):
            if pos + self.p > len(order):
                # Start a new pass; the leftover identities go first and are not repeated in it.
                rest = order[pos:]
                fresh = rng.permutation(ids)
                order = np.concatenate([rest, fresh[~np.isin(fresh, rest)]])
                pos = 0
            chosen = order[pos: pos + self.p]
            pos += self.p
            batch = []
            for j, c in enumerate(chosen):
                pool = self.by_label[int(c)]
                picks = rng.choice(pool, size=self.k, replace=len(pool) < self.k)
                if j % self.world_size == self.rank:
                    batch.extend(int(i) for i in picks)
            yield batch


class SilhouetteDataset(torch.utils.data.Dataset):
    """Sequences of a ``SequenceIndex`` as model inputs.

    ``train=True``: each item is a ``frames``-long clip (see ``clip_indices``), drawn from a generator
    seeded by (seed, epoch, index), so a run is reproducible whatever the worker count.
    ``train=False``: the whole sequence. ``labels`` maps id strings to class numbers (sorted ids by
    default). ``cache`` keeps loaded sequences in memory (uint8, about 4 KB per frame).
    """

    def __init__(self, index: SequenceIndex | Sequence[SequenceRecord], train: bool = True,
                 frames: int = CLIP_FRAMES, sampling: str = "contiguous", short: str = "wrap", seed: int = 0,
                 labels: dict[str, int] | None = None, cache: bool = True):
        self.records = list(index)
        if not self.records:
            raise ValueError("no sequences to load (empty index)")
        if sampling not in SAMPLING or short not in SHORT:
            raise ValueError(f"sampling must be one of {SAMPLING} and short one of {SHORT}")
        self.train, self.frames, self.sampling, self.short, self.seed = train, frames, sampling, short, seed
        self.label_of = labels if labels is not None else {s: i for i, s in enumerate(sorted({r.id for r in self.records}))}
        missing = sorted({r.id for r in self.records} - set(self.label_of))
        if missing:
            raise ValueError(f"ids without a label: {', '.join(missing[:5])}")
        self.labels = [self.label_of[r.id] for r in self.records]
        self.cache = cache
        self._cache: dict[int, np.ndarray] = {}
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def frames_of(self, i: int) -> np.ndarray:
        if i in self._cache:
            return self._cache[i]
        arr = load_sequence(self.records[i])
        if self.cache:
            self._cache[i] = arr
        return arr

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        seq = self.frames_of(i)
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            idx = clip_indices(len(seq), self.frames, rng, self.sampling, self.short)
            valid = idx >= 0
            clip = np.zeros((len(idx),) + seq.shape[1:], dtype=np.uint8)
            clip[valid] = seq[idx[valid]]
            length = int(valid.sum())
        else:
            clip, length = seq, len(seq)
        return {
            "sil": torch.from_numpy(to_model_input(clip)),
            "label": self.labels[i],
            "length": length,
            "meta": {"id": rec.id, "type": rec.type, "view": rec.view, "path": str(rec.path)},
        }


def collate_silhouettes(items: list[dict]) -> dict:
    """-> {"sil": float [B, T, 64, 44], "label": long [B], "lengths": long [B], "meta": [dicts]}.

    Sequences of different lengths are padded at the end with empty frames up to the longest; a model
    that pools over time should use ``lengths``.
    """
    if not items:
        raise ValueError("empty batch")
    t_max = max(it["sil"].shape[0] for it in items)
    h, w = items[0]["sil"].shape[1:]
    sil = torch.zeros(len(items), t_max, h, w, dtype=torch.float32)
    for b, it in enumerate(items):
        sil[b, : it["sil"].shape[0]] = it["sil"]
    return {
        "sil": sil,
        "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "lengths": torch.tensor([it["length"] for it in items], dtype=torch.long),
        "meta": [it["meta"] for it in items],
    }


def train_loader(index: SequenceIndex, p: int = 8, k: int = 8, seed: int = 0, batches_per_epoch: int | None = None,
                 frames: int = CLIP_FRAMES, sampling: str = "contiguous", rank: int = 0, world_size: int = 1,
                 num_workers: int = 0) -> torch.utils.data.DataLoader:
    ds = SilhouetteDataset(index, train=True, frames=frames, sampling=sampling, seed=seed)
    sampler = PKBatchSampler(ds.labels, p, k, seed=seed, batches_per_epoch=batches_per_epoch, rank=rank,
                             world_size=world_size)
    return torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate_silhouettes,
                                       num_workers=num_workers)


def eval_loader(index: SequenceIndex, labels: dict[str, int] | None = None, batch_size: int = 1,
                num_workers: int = 0) -> torch.utils.data.DataLoader:
    ds = SilhouetteDataset(index, train=False, labels=labels)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate_silhouettes,
                                       num_workers=num_workers)


def set_epoch(loader: torch.utils.data.DataLoader, epoch: int) -> None:
    """Advance both the P x K sampler and the clip sampling of a ``train_loader`` to ``epoch``."""
    for obj in (loader.batch_sampler, loader.dataset):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)
