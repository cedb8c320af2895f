"""Recognition losses (batch-all triplet, per-strip cross-entropy) and a name-based loss aggregator.

Models return a dict of named outputs; each loss term names the output it reads (OpenGait spirit), so a
config such as::

    terms:
      - {kind: triplet, output: embeddings, margin: 0.2}
      - {kind: cross_entropy, output: logits}

combines them without the training loop knowing the model. ``LossAggregator(outputs, labels)`` returns
``(total_loss, logs)`` with ``logs`` a flat dict of Python floats for logging.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

import torch
import torch.nn.functional as F

# Batch-all triplet mining is O(P * B^3); strips are processed in chunks of at most this many elements.
_TRIPLET_CHUNK_ELEMENTS = 1 << 24


def _check_labels(labels: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{what}: labels must be a torch.Tensor of integer ids, got {type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] != batch:
        raise ValueError(f"{what}: labels must have shape [{batch}], got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"{what}: labels must be integer ids, got dtype {labels.dtype}")
    return labels


def pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    """[P, B, D] -> [P, B, B] Euclidean distances (gradient-safe at zero distance)."""
    sq = (x * x).sum(-1)
    d2 = sq.unsqueeze(2) + sq.unsqueeze(1) - 2.0 * torch.matmul(x, x.transpose(1, 2))
    return torch.sqrt(d2.clamp(min=1e-12))


def batch_all_triplet_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2
) -> tuple[torch.Tensor, dict[str, float]]:
    """Batch-all triplet loss on strip embeddings [B, P, D] (a [B, D] input is one strip).

    For every strip, every valid triplet (anchor a, positive p != a with the same label, negative n with a
    different label) contributes ``relu(d(a, p) - d(a, n) + margin)`` with Euclidean ``d``. The strip's loss
    is the sum over triplets divided by the number of *non-zero* triplets (0 when there are none); the
    result is the mean over strips. Logs: mean fraction of non-zero triplets and mean pairwise distance.
    """
    if embeddings.dim() == 2:
        embeddings = embeddings.unsqueeze(1)
    if embeddings.dim() != 3:
        raise ValueError(f"triplet loss: embeddings must be [B, P, D], got shape {tuple(embeddings.shape)}")
    batch = embeddings.shape[0]
    labels = _check_labels(labels, batch, "triplet loss")
    x = embeddings.transpose(0, 1).float()  # [P, B, D]
    dist = pairwise_euclidean(x)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(batch, dtype=torch.bool, device=labels.device)
    pos_mask = same & ~eye
    neg_mask = ~same
    valid = (pos_mask.unsqueeze(2) & neg_mask.unsqueeze(1)).to(x.dtype)  # [B(a), B(p), B(n)]

    parts = x.shape[0]
    chunk = max(1, _TRIPLET_CHUNK_ELEMENTS // max(1, batch ** 3))
    losses, nonzero_frac = [], []
    n_valid = valid.sum()
    for start in range(0, parts, chunk):
        d = dist[start:start + chunk]
        tri = F.relu(d.unsqueeze(3) - d.unsqueeze(2) + margin) * valid  # [p, a, pos, neg]
        nonzero = (tri > 0).flatten(1).sum(1).to(x.dtype)
        total = tri.flatten(1).sum(1)
        losses.append(torch.where(nonzero > 0, total / nonzero.clamp(min=1.0), torch.zeros_like(total)))
        nonzero_frac.append(nonzero / n_valid.clamp(min=1.0))
    loss = torch.cat(losses).mean()
    logs = {
        "nonzero_frac": float(torch.cat(nonzero_frac).mean()),
        "mean_dist": float(dist.detach().mean()),
        "valid_triplets": float(n_valid),
    }
    return loss, logs


def strip_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy of per-strip logits [B, P, K] (or [B, K]) averaged over strips and samples.

    Logs the top-1 accuracy averaged over strips.
    """
    if logits.dim() == 2:
        logits = logits.unsqueeze(1)
    if logits.dim() != 3:
        raise ValueError(f"cross entropy: logits must be [B, P, K], got shape {tuple(logits.shape)}")
    batch, parts, classes = logits.shape
    labels = _check_labels(labels, batch, "cross entropy")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ValueError(f"cross entropy: labels must be in 0..{classes - 1} (the classifier's classes), "
                         f"got range {int(labels.min())}..{int(labels.max())}")
    flat_labels = labels.unsqueeze(1).expand(batch, parts).reshape(-1)
    loss = F.cross_entropy(logits.reshape(-1, classes).float(), flat_labels, label_smoothing=label_smoothing)
    acc = (logits.argmax(-1) == labels.unsqueeze(1)).float().mean()
    return loss, {"accuracy": float(acc)}


@dataclass
class LossTermConfig:
    """One loss term: ``kind`` applied to the model output named ``output``, scaled by ``weight``."""

    kind: Literal["triplet", "cross_entropy"]
    output: str
    weight: float = 1.0
    margin: float = 0.2
    label_smoothing: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("triplet", "cross_entropy"):
            raise ValueError(f"loss kind must be triplet or cross_entropy, got {self.kind!r}")
        if self.weight < 0:
            raise ValueError(f"loss weight must be >= 0, got {self.weight}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not self.name:
            self.name = self.kind


def _default_terms() -> list[LossTermConfig]:
    return [
        LossTermConfig(kind="triplet", output="embeddings", margin=0.2),
        # Plain cross-entropy, as the paper trains (label_smoothing 0); a config may still set it per term.
        LossTermConfig(kind="cross_entropy", output="logits"),
    ]


@dataclass
class LossConfig:
    terms: list[LossTermConfig] = field(default_factory=_default_terms)

    def __post_init__(self) -> None:
        names = [t.name for t in self.terms]
        if not self.terms:
            raise ValueError("loss config needs at least one term")
        if len(set(names)) != len(names):
            raise ValueError(f"loss term names must be unique, got {names}")


def gathered_triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2
                          ) -> tuple[torch.Tensor, dict[str, float]]:
    """Batch-all triplet loss over the *global* batch under DDP (single process: the local batch).

    Every rank gathers all ranks' embeddings and labels (``distributed.all_gather_with_grad``: gradient only
    through its own shard) and computes the same loss over all triplets of the global batch, as OpenGait
    does; mining per rank would miss every triplet whose samples sit on different ranks. DDP averages the
    ranks' gradients, i.e. divides the sum of the shards' gradients by the world size, so the gradient is
    scaled by the world size first: parameters then get exactly the single-process gradient of the loss.
    """
    from metagait_edge import distributed as D

    world = D.get_world_size() if D.is_distributed() else 1
    if world == 1:
        return batch_all_triplet_loss(embeddings, labels, margin=margin)
    loss, info = batch_all_triplet_loss(D.all_gather_with_grad(embeddings), D.all_gather_with_grad(labels),
                                        margin=margin)
    return D.scale_gradient(loss, float(world)), info


class LossAggregator:
    """Picks model outputs by name, applies each configured loss term and sums them with their weights.

    Triplet terms mine the global batch under DDP (:func:`gathered_triplet_loss`); cross-entropy is per
    sample, so each rank's local mean (averaged by DDP) is already the global one.
    """

    def __init__(self, config: LossConfig | None = None) -> None:
        self.config = config or LossConfig()

    def __call__(self, outputs: Mapping[str, torch.Tensor], labels: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        total = None
        logs: dict[str, float] = {}
        for term in self.config.terms:
            if term.output not in outputs:
                raise ValueError(f"loss term {term.name!r} needs model output {term.output!r}; the model "
                                 f"returned {sorted(outputs)}")
            value = outputs[term.output]
            if term.kind == "triplet":
                loss, info = gathered_triplet_loss(value, labels, margin=term.margin)
            else:
                loss, info = strip_cross_entropy(value, labels, label_smoothing=term.label_smoothing)
            weighted = term.weight * loss
            total = weighted if total is None else total + weighted
            logs[f"{term.name}/loss"] = float(loss.detach())
            logs.update({f"{term.name}/{k}": v for k, v in info.items()})
        logs["total_loss"] = float(total.detach())
        return total, logs
