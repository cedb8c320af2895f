"""Training of ``PhaseNet`` on HuGaDB walkers: phase (cos, sin) per leg + locomotion mode, with gyro masks.

Samples are causal windows ending at every row that has a mode label or a ground-truth phase. Loss: mean
squared error of the (cos, sin) outputs against the true phase's, per leg where it is defined, plus the
mode cross-entropy. Augmentation: on ``mask_prob`` of the windows each gyroscope is also masked with
probability ``mask_sensor_prob`` (zeroed, flag 0), so the network learns to live with the masks that
HuGaDB's corrupted gyroscopes (and failing sensors) impose; optionally each IMU's signals scaled by a random
gain per window (``gain_sd``), and windows drawn with weight count(mode)^-``balance`` so that the rarer modes
(running, stairs, transitions) are seen more often. The epoch with the lowest validation phase loss is kept.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from metagait_edge.phase.dataset import PhaseRecording, mirror_map
from metagait_edge.phase.model import PhaseNet, PhaseNetConfig, phase_targets
from metagait_edge.sensors import IMU_CHANNELS, SENSORS

log = logging.getLogger(__name__)


@dataclass
class PhaseTrainConfig:
    epochs: int = 15
    windows_per_epoch: int = 200_000
    batch: int = 256
    lr: float = 2e-3
    mode_weight: float = 0.5
    mask_prob: float = 0.5
    mask_sensor_prob: float = 0.35
    val_windows: int = 20_000
    seed: int = 0
    threads: int = 1
    balance: float = 0.0  # windows drawn with weight count(mode)^-balance: 0 uniform over rows, 1 equal per mode
    gain_sd: float = 0.0  # per window and IMU, accelerometer and gyroscope scaled by exp(N(0, gain_sd))
    leg_swap_prob: float = 0.0  # windows mirrored left <-> right (``mirror_legs``), the legs' phase targets swapped


@dataclass
class PhaseExperiment:
    """A ``training/configs/phase*.yaml`` file: the network and its training (typed, unknown keys fail)."""

    net: PhaseNetConfig = field(default_factory=PhaseNetConfig)
    train: PhaseTrainConfig = field(default_factory=PhaseTrainConfig)


@dataclass
class Stacked:
    """Recordings concatenated: features, start row of each row's recording, targets, candidate ends."""

    x: np.ndarray  # float32 [N, C]
    rec_start: np.ndarray  # int64 [N]
    phase: np.ndarray  # float32 [N, 2, 2] (cos, sin) per leg, NaN where undefined
    mode: np.ndarray  # int64 [N]
    ends: np.ndarray  # int64 [K] rows with some label


def stack(recs: Sequence[PhaseRecording]) -> Stacked:
    xs, starts, ph, md = [], [], [], []
    off = 0
    for r in recs:
        n = len(r)
        xs.append(r.x)
        starts.append(np.full(n, off, dtype=np.int64))
        ph.append(phase_targets(r.truth.phase.T).astype(np.float32))
        md.append(r.mode)
        off += n
    x = np.concatenate(xs)
    phase = np.concatenate(ph)
    mode = np.concatenate(md)
    ends = np.flatnonzero((mode >= 0) | np.isfinite(phase[:, :, 0]).any(1))
    return Stacked(x, np.concatenate(starts), phase, mode, ends)


def gather(s: Stacked, ends: np.ndarray, window: int) -> np.ndarray:
    idx = ends[:, None] + np.arange(-window + 1, 1)[None, :]
    idx = np.maximum(idx, s.rec_start[ends][:, None])
    return s.x[idx]


def augment_masks(xb: np.ndarray, rng: np.random.Generator, config: PhaseTrainConfig) -> np.ndarray:
    n = len(xb)
    pick = rng.random(n) < config.mask_prob
    drop = (rng.random((n, len(SENSORS))) < config.mask_sensor_prob) & pick[:, None]
    keep = (~drop).astype(np.float32)
    xb = xb.copy()
    for i, s in enumerate(SENSORS):
        cols = [IMU_CHANNELS.index(f"gyro_{s}_{a}") for a in "xyz"] + [len(IMU_CHANNELS) + i]
        xb[:, :, cols] *= keep[:, i, None, None]
    return xb


def augment_gain(xb: np.ndarray, rng: np.random.Generator, gain_sd: float) -> np.ndarray:
    """Each window's IMUs scaled by their own random gain (accelerometer and gyroscope alike; flags kept)."""
    if gain_sd <= 0:
        return xb
    g = np.exp(rng.normal(0.0, gain_sd, size=(len(xb), len(SENSORS)))).astype(np.float32)
    scale = np.ones((len(xb), xb.shape[2]), dtype=np.float32)
    for i, s in enumerate(SENSORS):
        cols = [IMU_CHANNELS.index(f"{k}_{s}_{a}") for k in ("acc", "gyro") for a in "xyz"]
        scale[:, cols] = g[:, i, None]
    return xb * scale[:, None, :]


def augment_leg_swap(xb: np.ndarray, ph: np.ndarray, rng: np.random.Generator,
                     prob: float) -> tuple[np.ndarray, np.ndarray]:
    """On ``prob`` of the windows: the mirrored window and the two legs' phase targets [B, 2 legs, 2] swapped."""
    if prob <= 0:
        return xb, ph
    pick = rng.random(len(xb)) < prob
    if not pick.any():
        return xb, ph
    src, sign = mirror_map()
    xb, ph = xb.copy(), ph.copy()
    xb[pick] = xb[pick][:, :, src] * sign
    ph[pick] = ph[pick][:, ::-1]
    return xb, ph


def sampling_weights(s: Stacked, balance: float) -> np.ndarray | None:
    """Probability of each candidate end row: count(mode)^-balance (rows without a mode form one group)."""
    if balance <= 0:
        return None
    m = s.mode[s.ends]
    group = np.where(m >= 0, m, m.max(initial=0) + 1)
    counts = np.bincount(group)
    w = counts[group].astype(np.float64) ** -balance
    return w / w.sum()


def batch_loss(model: PhaseNet, xb: np.ndarray, ph: np.ndarray, md: np.ndarray, mode_weight: float,
               ce: nn.Module) -> tuple[torch.Tensor, float, float]:
    out = model(torch.from_numpy(xb))
    target = torch.from_numpy(ph.reshape(len(ph), 4))
    defined = torch.isfinite(target)
    err = torch.where(defined, out[:, :4] - torch.nan_to_num(target), torch.zeros_like(target))
    phase_loss = err.pow(2).sum() / defined.sum().clamp(min=1)
    md_t = torch.from_numpy(md)
    mode_loss = ce(out[:, 4:], md_t) if (md_t >= 0).any() else out.sum() * 0.0
    return phase_loss + mode_weight * mode_loss, float(phase_loss.detach()), float(mode_loss.detach())


def train_phase_net(train: Sequence[PhaseRecording], val: Sequence[PhaseRecording],
                    config: PhaseTrainConfig = PhaseTrainConfig(), net: PhaseNetConfig = PhaseNetConfig(),
                    progress: bool = True, desc: str = "train phase") -> tuple[PhaseNet, list[dict]]:
    """Train on ``train`` recordings, keep the epoch with the best phase loss on ``val`` (the last if none)."""
    from tqdm import tqdm

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        tr = stack(train)
        va = stack(val) if val else None
        model = PhaseNet(net)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
        steps = config.epochs * (config.windows_per_epoch // config.batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(steps, 1))
        ce = nn.CrossEntropyLoss(ignore_index=-1)
        val_ends = None
        if va is not None:
            val_ends = rng.choice(va.ends, size=min(config.val_windows, len(va.ends)), replace=False)
        p_ends = sampling_weights(tr, config.balance)
        best, best_state, history = np.inf, None, []
        bar = tqdm(total=steps, desc=desc, unit="step", disable=not progress)
        for epoch in range(config.epochs):
            model.train()
            ends = rng.choice(tr.ends, size=config.windows_per_epoch, replace=True, p=p_ends)
            tot = [0.0, 0.0, 0]
            for a in range(0, len(ends) - config.batch + 1, config.batch):
                e = ends[a:a + config.batch]
                xb, ph = augment_leg_swap(gather(tr, e, net.window), tr.phase[e], rng, config.leg_swap_prob)
                xb = augment_masks(augment_gain(xb, rng, config.gain_sd), rng, config)
                loss, pl, ml = batch_loss(model, xb, ph, tr.mode[e], config.mode_weight, ce)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                tot[0] += pl
                tot[1] += ml
                tot[2] += 1
                bar.update(1)
            row = {"epoch": epoch, "train_phase_loss": tot[0] / max(tot[2], 1), "train_mode_loss": tot[1] / max(tot[2], 1)}
            if val_ends is not None:
                model.eval()
                vl = [0.0, 0.0, 0]
                with torch.no_grad():
                    for a in range(0, len(val_ends), 2048):
                        e = val_ends[a:a + 2048]
                        _, pl, ml = batch_loss(model, gather(va, e, net.window), va.phase[e], va.mode[e],
                                               config.mode_weight, ce)
                        vl[0] += pl * len(e)
                        vl[1] += ml * len(e)
                        vl[2] += len(e)
                row["val_phase_loss"] = vl[0] / vl[2]
                row["val_mode_loss"] = vl[1] / vl[2]
                # Phase is the primary output; the mode cross-entropy on new walkers rises after a few epochs
                # (over-confidence) while the phase keeps improving, so it does not choose the epoch.
                score = row["val_phase_loss"]
            else:
                score = -epoch  # no validation walkers: keep the last epoch
            if score < best:
                best, best_state = score, copy.deepcopy(model.state_dict())
            history.append(row)
            bar.set_postfix({k: round(v, 4) for k, v in row.items() if k != "epoch"})
        bar.close()
        if best_state is not None:
            model.load_state_dict(best_state)
        return model.eval(), history
    finally:
        torch.set_num_threads(prev_threads)
