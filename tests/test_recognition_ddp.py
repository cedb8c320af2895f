"""Recognition under DDP: the triplet loss over all-gathered embeddings equals the single-process loss on
the same global batch (a real 2-process gloo group), and BatchNorm becomes SyncBatchNorm on GPUs."""

from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import nn

from metagait_edge import distributed as D
from metagait_edge.models.metagait import MetaGait, MetaGaitConfig
from metagait_edge.recognition.losses import batch_all_triplet_loss, gathered_triplet_loss
from metagait_edge.runtime.capture import free_tcp_port

WORLD = 2
# 4 identities x 2 samples; rank 0 holds identities 0 and 1, rank 1 identities 2 and 3 (as the P x K
# sampler splits P), so per-rank mining would never see a negative from the other rank.
LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


def _global_batch() -> torch.Tensor:
    return torch.randn(8, 3, 4, generator=torch.Generator().manual_seed(0))  # [B, strips, D]


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    D.init_from_env(device="cpu")
    rows = slice(4 * rank, 4 * rank + 4)
    local = _global_batch()[rows].clone().requires_grad_(True)
    loss, logs = gathered_triplet_loss(local, LABELS[rows], margin=0.2)
    loss.backward()
    per_rank, _ = batch_all_triplet_loss(local.detach(), LABELS[rows], margin=0.2)
    save_file({"loss": loss.detach().reshape(1), "grad": local.grad, "per_rank": per_rank.reshape(1),
               "valid": torch.tensor([logs["valid_triplets"]])}, os.path.join(out_dir, f"rank{rank}.safetensors"))
    D.cleanup()


@pytest.mark.slow
def test_gathered_triplet_loss_equals_the_single_process_loss(tmp_path):
    mp.spawn(_worker, args=(free_tcp_port(), str(tmp_path)), nprocs=WORLD, join=True)
    full = _global_batch().requires_grad_(True)
    ref, ref_logs = batch_all_triplet_loss(full, LABELS, margin=0.2)
    ref.backward()
    for rank in range(WORLD):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        torch.testing.assert_close(got["loss"][0], ref.detach())
        assert float(got["valid"][0]) == ref_logs["valid_triplets"]  # every triplet of the global batch
        # Per-rank mining would be another loss: the gather is what makes them equal.
        assert abs(float(got["per_rank"][0]) - float(ref.detach())) > 1e-3
        # DDP averages over ranks, so each rank's shard carries world_size x its single-process gradient:
        # the average over ranks of the parameters' gradients is then the single-process gradient.
        torch.testing.assert_close(got["grad"], WORLD * full.grad[4 * rank:4 * rank + 4])


def test_single_process_gather_is_the_plain_loss():
    x = _global_batch()
    a, _ = gathered_triplet_loss(x, LABELS)
    b, _ = batch_all_triplet_loss(x, LABELS)
    assert torch.equal(a, b)
    assert D.all_gather_with_grad(x) is x


def test_scale_gradient_keeps_the_value():
    w = torch.tensor(2.0, requires_grad=True)
    loss = D.scale_gradient(w * w, 3.0)
    assert float(loss.detach()) == 4.0
    loss.backward()
    assert float(w.grad) == 12.0


def test_batchnorm_becomes_syncbatchnorm_on_gpus_only():
    cfg = MetaGaitConfig(channels=(4, 8, 8), input_height=16, input_width=12, local_parts=4, strip_bins=(2,),
                         num_classes=3, mta_descriptor_channels=4, mta_gate_hidden=4, mhn_hidden=4)
    model = MetaGait(cfg)
    keys = set(model.state_dict())
    assert D.convert_sync_batchnorm(model, "cpu") is model
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    synced = D.convert_sync_batchnorm(model, "cuda")  # conversion itself needs no GPU
    assert isinstance(synced.bnneck.bn, nn.SyncBatchNorm)
    assert set(synced.state_dict()) == keys  # checkpoints load into plain BatchNorm
