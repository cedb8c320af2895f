"""Run the same training code on CPU, one GPU or many (``torchrun`` / DDP).

``init_from_env()`` reads the variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``). Without them (or with ``WORLD_SIZE=1``) it initialises nothing and
every helper below degrades to the single-process behaviour, so a script calls them unconditionally::

    info = init_from_env()
    model = wrap_model(MAML(TCN(cfg), maml_cfg), info)      # DDP only when world_size > 1
    for step in range(n):
        seeds = task_seeds(base_seed, tasks_per_rank, step, info.rank, info.world_size)
        loss = model(sample_tasks(seeds)); loss.backward(); opt.step()
        stats = all_reduce_mean({"loss": loss.item()})
        if is_main_process(): log(stats)
    cleanup()

Backend: ``gloo`` on CPU, ``nccl`` on CUDA. Each rank draws distinct task seeds, so ranks see different
tasks and DDP averages their meta-gradients.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
import torch.distributed as dist
from torch import nn

Number = Union[int, float]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: Optional[str]

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def env_ranks() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the torchrun environment, (0, 1, 0) without it."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return rank, world, local


def select_device(prefer: Optional[str] = None, local_rank: int = 0) -> torch.device:
    """``prefer`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``) or, by default, this rank's GPU when there is one."""
    if prefer is not None and prefer != "auto":
        device = torch.device(prefer)
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device {prefer!r} requested but CUDA is not available")
            if device.index is None:
                device = torch.device("cuda", local_rank % torch.cuda.device_count())
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_from_env(
    device: Optional[str] = None, backend: Optional[str] = None, timeout_s: float = 1800.0
) -> DistInfo:
    """Initialise the default process group when launched by torchrun with WORLD_SIZE > 1."""
    rank, world, local = env_ranks()
    dev = select_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world == 1:
        return DistInfo(0, 1, 0, dev, None)
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise ValueError(f"WORLD_SIZE={world} but {var} is not set; launch with torchrun")
        dist.init_process_group(
            backend=backend, init_method="env://", rank=rank, world_size=world,
            timeout=_dt.timedelta(seconds=timeout_s),
        )
    return DistInfo(rank, world, local, dev, backend)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def _comm_device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def convert_sync_batchnorm(model: nn.Module, device: Union[str, torch.device]) -> nn.Module:
    """``model`` with its BatchNorm layers made SyncBatchNorm (statistics over all ranks' batch), as OpenGait
    trains; in place for every layer below the root.

    Only on GPUs: PyTorch's SyncBatchNorm runs on CUDA (and XPU / HPU), not on CPU, so a CPU (gloo) run keeps
    per-rank statistics. Parameter and buffer names are unchanged, so checkpoints load into plain BatchNorm.
    """
    if torch.device(device).type != "cuda":
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def wrap_model(model: nn.Module, info: Optional[DistInfo] = None, sync_batchnorm: bool = False,
               **ddp_kwargs: Any) -> nn.Module:
    """Move ``model`` to the rank's device and wrap it in DDP when there is more than one process.

    DDP broadcasts rank 0's parameters at construction, so all ranks start identical. ``sync_batchnorm``
    converts BatchNorm layers first (:func:`convert_sync_batchnorm`, GPUs only); the layers are replaced
    inside ``model``, so keep using ``model`` (or ``unwrap_model``) for checkpoints.
    """
    info = info or DistInfo(get_rank(), get_world_size(), get_rank(), select_device(), None)
    model = model.to(info.device)
    if not is_distributed():
        return model
    if sync_batchnorm:
        model = convert_sync_batchnorm(model, info.device)
    from torch.nn.parallel import DistributedDataParallel as DDP

    if info.device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [info.device.index])
        ddp_kwargs.setdefault("output_device", info.device.index)
    return DDP(model, **ddp_kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (for checkpoints and evaluation), else ``model`` itself."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def all_reduce_mean(value: Any) -> Any:
    """Mean over ranks of a number, a tensor, or a flat dict of numbers/tensors (one collective call).

    Numbers come back as floats, tensors as tensors on their original device. Single-process: unchanged.
    """
    if not is_distributed():
        return value
    world = get_world_size()
    if isinstance(value, Mapping):
        keys = list(value)
        flat = torch.stack([torch.as_tensor(value[k], dtype=torch.float64).reshape(()).cpu() for k in keys])
        flat = flat.to(_comm_device())
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat = (flat / world).cpu()
        out: Dict[str, Any] = {}
        for k, v in zip(keys, flat):
            orig = value[k]
            out[k] = v.to(dtype=orig.dtype, device=orig.device) if isinstance(orig, torch.Tensor) else float(v)
        return out
    if isinstance(value, torch.Tensor):
        t = value.detach().clone().to(_comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return (t / world).to(value.device)
    t = torch.tensor(float(value), dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item() / world)


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order; gradients flow into this rank's shard.

    The other ranks' shards are constants here (they get their gradient on their own rank), as OpenGait's
    ``ddp_all_gather`` does for triplet mining over the whole batch. Shapes must match across ranks.
    Single-process: ``tensor`` itself.
    """
    if not is_distributed():
        return tensor
    shards = [torch.empty_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(shards, tensor.detach().contiguous())
    shards[get_rank()] = tensor
    return torch.cat(shards, dim=0)


def scale_gradient(loss: torch.Tensor, factor: float) -> torch.Tensor:
    """``loss`` with the same value and ``factor`` times its gradient."""
    return loss * factor - loss.detach() * (factor - 1.0)


def broadcast_parameters(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (what DDP does at construction)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=src)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def task_seeds(base_seed: int, tasks_per_rank: int, step: int, rank: int = 0, world_size: int = 1) -> List[int]:
    """Seeds of the tasks this rank samples at ``step``: distinct across ranks, steps and tasks.

    Seed ``base + (step * world_size + rank) * tasks_per_rank + i``: the global task stream is the same
    whatever the world size splits it into, so a 2-rank run sees the tasks a 1-rank run with twice the
    tasks per step would see.
    """
    if tasks_per_rank < 1:
        raise ValueError(f"tasks_per_rank must be >= 1, got {tasks_per_rank}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    start = base_seed + (step * world_size + rank) * tasks_per_rank
    return list(range(start, start + tasks_per_rank))


def shard_indices(n: int, rank: int = 0, world_size: int = 1, *, shuffle: bool = False, seed: int = 0,
                  epoch: int = 0, pad: bool = True) -> List[int]:
    """This rank's share of ``range(n)``, like ``DistributedSampler`` (padded to equal length by default)."""
    if shuffle:
        g = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    if pad and n % world_size:
        per = -(-n // world_size)
        order = order + order[: per * world_size - n]
    return order[rank::world_size]
