"""Model inputs for the two personalization problems, on normalized cycles.

Both problems give the network three stacks of C channels over the 101 samples of a cycle:

* generation: ``[previous cycle, personal template, channel validity]`` -> the next cycle;
* reconstruction: ``[observed cycle (zeros where missing), observation mask, personal template]`` -> the
  full cycle.

The *personal template* is the mean of the walker's support cycles. The model predicts a correction to it
(``output = template + network(x)``), so an untrained network already equals the support-mean baseline and
learning only has to add what the previous cycle (or the observed samples) reveal. With no support cycle at
all (a single-shot support cycle used as its own training target) the template is zeros: the population
mean in normalized units.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import Tensor

from metagait_edge.sensors import SENSORS

PROBLEMS = ("generation", "reconstruction")


def template_from_support(support: Tensor, valid: Tensor) -> Tensor:
    """Masked mean of support cycles ``[K, C, L]`` -> ``[C, L]`` (zeros for channels never valid)."""
    w = valid.to(support.dtype)[:, :, None]
    total = (support * w).sum(0)
    count = w.sum(0)
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))


def leave_one_out_templates(support: Tensor, valid: Tensor) -> Tensor:
    """For each support cycle, the template of the *other* support cycles (zeros when K == 1)."""
    w = valid.to(support.dtype)[:, :, None]
    total = (support * w).sum(0, keepdim=True)
    count = w.sum(0, keepdim=True)
    loo_count = count - w
    loo = (total - support * w) / loo_count.clamp_min(1)
    return torch.where(loo_count > 0, loo, torch.zeros_like(loo))


def generation_input(prev: Tensor, template: Tensor, valid: Tensor) -> Tensor:
    """``[B, 3C, L]`` from previous cycles ``[B, C, L]``, templates ``[B, C, L]``, validity ``[B, C]``."""
    m = valid.to(prev.dtype)[:, :, None].expand_as(prev)
    return torch.cat([prev * m, template * m, m], dim=1)


def reconstruction_input(observed: Tensor, observed_mask: Tensor, template: Tensor, valid: Tensor) -> Tensor:
    """``[B, 3C, L]`` from a partly observed cycle, its per-sample mask, templates and channel validity."""
    v = valid.to(observed.dtype)[:, :, None].expand_as(observed)
    om = observed_mask.to(observed.dtype) * v
    return torch.cat([torch.where(om > 0, observed, torch.zeros_like(observed)), om, template * v], dim=1)


@dataclass
class MaskingConfig:
    """How reconstruction inputs lose data.

    ``sparse``: only ``keep_fraction`` of the time samples are observed (the same samples on every channel,
    as when a wireless link drops packets). ``sensors``: ``drop_sensors`` whole IMUs are missing (all their
    channels, and every joint-angle estimate that needs them). Each cycle gets one of the two, at random.
    """

    keep_fraction: float = 0.1
    drop_sensors: int = 3
    p_sensors: float = 0.5


MASKING_MODES = ("mixed", "sparse", "sensors")


def masking_for(config: MaskingConfig, mode: str) -> MaskingConfig:
    """``config`` with every cycle masked one way: ``sparse`` or ``sensors`` (``mixed``: as configured). The
    evaluation reports the two kinds of missing data apart with it; training keeps the mix."""
    if mode not in MASKING_MODES:
        raise ValueError(f"masking mode must be one of {MASKING_MODES}, got {mode!r}")
    if mode == "mixed":
        return config
    return replace(config, p_sensors=1.0 if mode == "sensors" else 0.0)


def channel_sensors(channels: Sequence[str], sensors: Sequence[str] = SENSORS) -> Tensor:
    """``[C, S]`` bool: which IMUs each channel depends on.

    IMU channels name their sensor (``acc_rs_x``); a joint-angle estimate needs the sensors listed in
    ``data.joint_angles.ANGLE_SENSORS`` (knee: thigh and shank, ...).
    """
    from metagait_edge.data.joint_angles import ANGLE_SENSORS

    out = torch.zeros(len(channels), len(sensors), dtype=torch.bool)
    for c, name in enumerate(channels):
        needs = ANGLE_SENSORS.get(name) or tuple(p for p in name.split("_") if p in sensors)
        if not needs:
            raise ValueError(f"cannot tell which sensors channel {name!r} depends on")
        for sensor in needs:
            out[c, list(sensors).index(sensor)] = True
    return out


def random_observation_mask(batch: int, channel_to_sensor: Tensor, length: int, config: MaskingConfig,
                            generator: torch.Generator | None = None) -> Tensor:
    """``[B, C, L]`` observation masks drawn per cycle (see :class:`MaskingConfig`)."""
    n_channels, n_sensors = channel_to_sensor.shape
    masks = torch.zeros(batch, n_channels, length)
    mode = torch.rand(batch, generator=generator) < config.p_sensors
    n_keep = max(1, round(config.keep_fraction * length))
    for b in range(batch):
        if mode[b]:
            dropped = torch.randperm(n_sensors, generator=generator)[: config.drop_sensors]
            lost = channel_to_sensor[:, dropped].any(dim=1)
            masks[b, ~lost, :] = 1.0
        else:
            keep = torch.randperm(length, generator=generator)[:n_keep]
            masks[b, :, keep] = 1.0
    return masks
