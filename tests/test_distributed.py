from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from metagait_edge import distributed as D
from metagait_edge.meta import MAML, Batch, MAMLConfig, Episode
from metagait_edge.models import TCN, TCNConfig
from metagait_edge.runtime.capture import free_tcp_port

CFG = TCNConfig(in_channels=2, out_channels=2, hidden_channels=8, levels=2, min_receptive_field=0)
MCFG = MAMLConfig(inner_steps=2, inner_lr=0.05)
STEPS, TASKS_PER_RANK, WORLD = 2, 2, 2


def _task(seed: int) -> Episode:
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 6.28, 16)
    phase, amp = 6.28 * torch.rand(2, generator=g), 0.5 + torch.rand(2, generator=g)

    def split():
        x = torch.sin(t + phase[:, None])[None].repeat(3, 1, 1) + 0.05 * torch.randn(3, 2, 16, generator=g)
        return Batch(x, amp[None, :, None] * x.roll(2, -1), torch.ones(3, 2))

    return Episode(split(), split())


def _meta_train(model, seeds_per_step):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for seeds in seeds_per_step:
        opt.zero_grad()
        model([_task(s) for s in seeds]).backward()
        opt.step()


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    info = D.init_from_env(device="cpu")
    assert info.backend == "gloo" and info.world_size == WORLD and D.is_main_process() == (rank == 0)
    torch.manual_seed(100 + rank)  # different initial weights: DDP must broadcast rank 0's
    model = D.wrap_model(MAML(TCN(CFG), MCFG), info)
    init = {f"init.{k}": v.detach().clone() for k, v in D.unwrap_model(model).state_dict().items()}
    seeds = [D.task_seeds(0, TASKS_PER_RANK, s, info.rank, info.world_size) for s in range(STEPS)]
    _meta_train(model, seeds)
    mean = D.all_reduce_mean({"rank": float(rank), "t": torch.tensor(2.0 * rank)})
    D.barrier()
    final = {f"final.{k}": v.detach().clone() for k, v in D.unwrap_model(model).state_dict().items()}
    extra = {"seeds": torch.tensor(seeds), "mean_rank": torch.tensor(mean["rank"]), "mean_t": mean["t"]}
    save_file({**init, **final, **extra}, os.path.join(out_dir, f"rank{rank}.safetensors"))
    D.cleanup()


@pytest.mark.slow
def test_two_process_gloo_meta_training_matches_single_process(tmp_path):
    mp.spawn(_worker, args=(free_tcp_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(WORLD))
    finals = [k for k in r0 if k.startswith("final.")]
    for k in finals:
        assert torch.equal(r0[k], r1[k]), f"{k} differs across ranks"
        assert torch.equal(r0[k.replace("final.", "init.", 1)], r1[k.replace("final.", "init.", 1)])
    assert any(not torch.equal(r0[k], r0[k.replace("final.", "init.", 1)]) for k in finals)
    # ranks saw different tasks
    assert not set(r0["seeds"].flatten().tolist()) & set(r1["seeds"].flatten().tolist())
    assert r0["mean_rank"].item() == pytest.approx(0.5) and r1["mean_t"].item() == pytest.approx(1.0)
    # DDP's averaged meta-gradient equals one process meta-training on both ranks' tasks
    torch.manual_seed(100)
    ref = MAML(TCN(CFG), MCFG)
    _meta_train(ref, [D.task_seeds(0, TASKS_PER_RANK * WORLD, s) for s in range(STEPS)])
    for k, v in ref.state_dict().items():
        assert torch.allclose(r0[f"final.{k}"], v, atol=1e-5), k


def test_single_process_helpers_are_no_ops(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = D.init_from_env(device="cpu")
    assert (info.rank, info.world_size, info.backend, info.distributed) == (0, 1, None, False)
    model = TCN(CFG)
    assert D.wrap_model(model, info) is model and D.unwrap_model(model) is model
    assert D.all_reduce_mean({"a": 1.5}) == {"a": 1.5} and D.is_main_process()
    D.barrier()
    D.cleanup()


def test_env_errors(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        D.env_ranks()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ValueError, match="RANK=3"):
        D.env_ranks()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        D.init_from_env(device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            D.select_device("cuda")


def test_task_seeds_are_distinct_and_world_size_invariant():
    per_rank = [D.task_seeds(7, 3, step, rank, 4) for step in range(5) for rank in range(4)]
    flat = [s for seeds in per_rank for s in seeds]
    assert len(set(flat)) == len(flat)
    # 4 ranks x 3 tasks at a step are the 12 tasks one process draws at that step
    step2 = [s for rank in range(4) for s in D.task_seeds(7, 3, 2, rank, 4)]
    assert step2 == D.task_seeds(7, 12, 2)
    with pytest.raises(ValueError, match="outside world size"):
        D.task_seeds(0, 1, 0, rank=2, world_size=2)


def test_shard_indices_cover_everything_once():
    shards = [D.shard_indices(10, r, 3, shuffle=True, seed=1, epoch=2) for r in range(3)]
    assert all(len(s) == 4 for s in shards)
    flat = [i for s in shards for i in s]
    assert set(flat) == set(range(10)) and len(flat) == 12
    assert shards != [D.shard_indices(10, r, 3, shuffle=True, seed=1, epoch=3) for r in range(3)]
