"""MetaGait recognition training: Adam, P x K batches of 30-frame clips, triplet + cross-entropy.

One code path for CPU, one GPU and ``torchrun`` (DDP through ``metagait_edge.distributed``)::

    metagait-edge train-recognition --config training/configs/recognition_synthetic_cpu.yaml
    torchrun --nproc_per_node 2 training/train_recognition.py --config training/configs/recognition_casia_b.yaml

Under DDP each rank takes P / world_size identities of the same global P x K batch (``PKBatchSampler``),
the triplet loss mines the global batch (embeddings all-gathered, ``losses.gathered_triplet_loss``), the
BNNeck uses SyncBatchNorm on GPUs (``distributed.convert_sync_batchnorm``; PyTorch has none on CPU),
gradients are averaged by DDP and the logged metrics by ``all_reduce_mean``; rank 0 writes the CSV log
and the checkpoints. Mixed precision (``torch.autocast``, bfloat16 where supported else float16 with a
gradient scaler) is used on CUDA only; CPU training is float32.

Outputs in ``output_dir``: ``metrics.csv`` (one row per ``log_every`` iterations), ``model.safetensors`` +
``model.json`` (final), ``model-<iteration>.*`` (every ``checkpoint_every``), ``config.yaml``.
"""

from __future__ import annotations

import contextlib
import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from metagait_edge.atomic import atomic_write_text
from metagait_edge.config import dump_yaml, to_dict
from metagait_edge.recognition.config import RecognitionConfig, downsample_factor
from metagait_edge.recognition.data import fingerprint, training_index

INPUT_NORMALIZATION = {"input": "silhouette uint8 / 255, 64x44 (10 px cut per side), average-pooled by factor "
                                "(bilinear 2x upsampling for 128x88)"}


def prepare_input(sil: torch.Tensor, factor: float) -> torch.Tensor:
    """[B, T, 64, 44] silhouettes in 0..1 -> the model's input size.

    ``factor`` (``config.downsample_factor``): an integer k average-pools k x k; 0.5 upsamples 2x
    (bilinear) to 128 x 88, because the silhouette files hold 64 x 64 frames.
    """
    if factor == 1:
        return sil
    b, t, h, w = sil.shape
    flat = sil.reshape(b * t, 1, h, w)
    if factor == 0.5:
        up = F.interpolate(flat, scale_factor=2, mode="bilinear", align_corners=False)
        return up.reshape(b, t, 2 * h, 2 * w)
    if factor < 1 or factor != int(factor):
        raise ValueError(f"input factor must be an integer >= 1 or 0.5, got {factor}")
    k = int(factor)
    return F.avg_pool2d(flat, k).reshape(b, t, h // k, w // k)


def build_model(cfg: RecognitionConfig):
    from metagait_edge.models.metagait import MetaGait

    return MetaGait(cfg.model)


@dataclass
class TrainResult:
    checkpoint: Optional[Path]
    iterations: int
    seconds: float
    history: list[dict] = field(default_factory=list)  # the logged rows (rank 0)
    model: Optional[torch.nn.Module] = field(default=None, repr=False)  # the trained (unwrapped) model

    @property
    def first_loss(self) -> float:
        return self.history[0]["total_loss"] if self.history else math.nan

    @property
    def last_loss(self) -> float:
        return self.history[-1]["total_loss"] if self.history else math.nan


def _autocast(device: torch.device, enabled: bool):
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext(), None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return torch.autocast(device_type="cuda", dtype=dtype), scaler


class _CsvLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fields: list[str] | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()

    def write(self, row: dict) -> None:
        if self.fields is None:
            self.fields = list(row)
            with self.path.open("w", newline="") as fh:
                csv.DictWriter(fh, self.fields).writeheader()
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, self.fields, extrasaction="ignore").writerow(row)


def output_dir(cfg: RecognitionConfig, override: str | None = None) -> Path:
    return Path(override or cfg.output_dir or f"runs/recognition/{cfg.name}")


def train(cfg: RecognitionConfig, out_dir: str | Path | None = None, *, progress: bool = True,
          iterations: int | None = None, log=print) -> TrainResult:
    """Train ``cfg`` (DDP when launched by torchrun) and write the checkpoint; returns the logged history."""
    from tqdm import tqdm

    from metagait_edge import distributed as D
    from metagait_edge.checkpoint import git_commit, save_checkpoint
    from metagait_edge.recognition.sampler import set_epoch, train_loader
    from metagait_edge.recognition.losses import LossAggregator

    git_commit()  # pin the code revision the checkpoint will record before the long run starts
    tc = cfg.train
    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    total_iters = int(iterations or tc.iterations)
    out = output_dir(cfg, None if out_dir is None else str(out_dir))
    info = D.init_from_env(device=tc.device)
    main = info.is_main
    quiet_log = log if main else None
    # Rank 0 generates (or finds) the synthetic data first so that ranks never write the same files.
    if main:
        index = training_index(cfg.data, log=quiet_log)
    D.barrier()
    if not main:
        index = training_index(cfg.data, log=None)
    labels = {s: i for i, s in enumerate(index.ids)}
    if cfg.model.num_classes and cfg.model.num_classes != len(labels):
        raise ValueError(f"model.num_classes = {cfg.model.num_classes} but the training data has {len(labels)} "
                         f"identities under {index.root}")
    if tc.p > len(labels):
        raise ValueError(f"train.p = {tc.p} but the training data has only {len(labels)} identities")
    factor = downsample_factor(cfg.model)

    torch.manual_seed(tc.seed)  # same initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_model(cfg)
    model.train()
    net = D.wrap_model(model, info, sync_batchnorm=True)  # BNNeck statistics over the global batch (GPUs)
    device = info.device
    batches_per_epoch = max(1, len(labels) // tc.p)
    loader = train_loader(index, p=tc.p, k=tc.k, seed=tc.seed, batches_per_epoch=batches_per_epoch,
                          frames=tc.frames, sampling=tc.sampling, rank=info.rank, world_size=info.world_size,
                          num_workers=tc.num_workers)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(tc.milestones), gamma=tc.gamma)
    criterion = LossAggregator(cfg.loss)
    autocast, scaler = _autocast(device, tc.amp)

    csv_log = _CsvLog(out / "metrics.csv") if main else None
    if main:
        atomic_write_text(out / "config.yaml", dump_yaml(cfg))
    fp = fingerprint(index)
    history: list[dict] = []
    bar = tqdm(total=total_iters, desc=f"train {cfg.name}", unit="it", disable=not (progress and main))
    t0 = time.perf_counter()
    it = epoch = 0
    window: dict[str, float] = {}
    n_window = 0
    while it < total_iters:
        set_epoch(loader, epoch)
        for batch in loader:
            sil = prepare_input(batch["sil"].to(device, non_blocking=True), factor)
            target = batch["label"].to(device)
            with autocast:
                outputs = net(sil)
            loss, logs = criterion(outputs, target)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{cfg.name}: loss became {float(loss)} at iteration {it + 1}")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            it += 1
            for k, v in logs.items():
                window[k] = window.get(k, 0.0) + v
            n_window += 1
            if it % tc.log_every == 0 or it == total_iters:
                mean = D.all_reduce_mean({k: v / n_window for k, v in window.items()})
                window, n_window = {}, 0
                if main:
                    row = {"iteration": it, "epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
                           "seconds": round(time.perf_counter() - t0, 2), **mean}
                    history.append(row)
                    csv_log.write(row)
                    bar.set_postfix(loss=f"{row['total_loss']:.3f}")
            bar.update(1)
            if main and tc.checkpoint_every and it % tc.checkpoint_every == 0 and it < total_iters:
                _save(save_checkpoint, out / f"model-{it:06d}", model, cfg, fp, history, it)
            if it >= total_iters:
                break
        epoch += 1
    bar.close()
    seconds = time.perf_counter() - t0
    # DDP keeps parameters in sync, but BatchNorm running statistics are each rank's own after the last
    # forward; give every rank rank 0's (the checkpointed) state so they all evaluate identically.
    D.broadcast_parameters(model)
    ckpt = None
    if main:
        ckpt = _save(save_checkpoint, out / "model", model, cfg, fp, history, it, seconds=seconds)
        if log:
            log(f"{cfg.name}: {it} iterations in {seconds:.1f} s, loss {history[0]['total_loss']:.3f} -> "
                f"{history[-1]['total_loss']:.3f}; checkpoint {ckpt}")
    D.barrier()
    return TrainResult(ckpt, it, seconds, history, model)


def _save(save_checkpoint, path: Path, model, cfg: RecognitionConfig, fp: str, history: list[dict], it: int,
          seconds: float | None = None) -> Path:
    metrics = {"iteration": it}
    if history:
        metrics.update({"first_loss": history[0]["total_loss"], "last_loss": history[-1]["total_loss"]})
    if seconds is not None:
        metrics["train_seconds"] = round(seconds, 1)
    return save_checkpoint(path, model, to_dict(cfg), normalization=INPUT_NORMALIZATION, data_fingerprint=fp,
                           metrics=metrics, extra={"variant": cfg.variant, "name": cfg.name})


def load_model(path: str | Path, map_location: str = "cpu"):
    """(model in eval mode, RecognitionConfig) from a checkpoint written by :func:`train`."""
    from metagait_edge.checkpoint import CheckpointError
    from metagait_edge.config import ConfigError
    from metagait_edge.recognition.checkpoint import load_recognition_checkpoint
    from metagait_edge.recognition.config import config_from_dict

    model = load_recognition_checkpoint(path, map_location)  # the one strict loader
    try:
        cfg = config_from_dict(model.checkpoint_config)
    except ConfigError as exc:
        raise CheckpointError(f"{model.source}: stored config is not a recognition config: {exc}") from exc
    return model, cfg


def main(argv=None) -> int:
    """Entry point for ``training/train_recognition.py`` (works under torchrun)."""
    import argparse

    from metagait_edge.recognition.config import load_recognition_config

    parser = argparse.ArgumentParser(description="train MetaGait recognition")
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", default=None)
    parser.add_argument("--iterations", type=int, default=None)
    args = parser.parse_args(argv)
    from metagait_edge import distributed as D

    try:
        train(load_recognition_config(args.config), args.out, iterations=args.iterations)
    finally:
        D.cleanup()
    return 0
