"""Turn a task (cycle indices) into MAML support and query batches for one problem.

Support examples use only the K support cycles, exactly as on the device: for generation, support cycle j
is predicted from support cycle j-1 (zeros before the first) with the template of the other support cycles;
for reconstruction, each support cycle is hidden by a random mask and recovered with the same
leave-one-out template. Query examples use the template of all K support cycles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metagait_edge.meta.maml import Batch, Episode
from metagait_edge.personalization.inputs import (
    MaskingConfig,
    generation_input,
    leave_one_out_templates,
    random_observation_mask,
    reconstruction_input,
    template_from_support,
)
from metagait_edge.personalization.tasks import Task


@dataclass
class CycleTensors:
    """Normalized cycles ``x [N, C, L]`` (zeros where invalid) and channel validity ``valid [N, C]``."""

    x: Tensor
    valid: Tensor
    channel_to_sensor: Tensor  # [C, S] bool, for sensor-dropout masks

    def __post_init__(self) -> None:
        if self.x.dim() != 3 or self.valid.shape != self.x.shape[:2]:
            raise ValueError(f"cycles {tuple(self.x.shape)} and validity {tuple(self.valid.shape)} do not match")
        self.x = torch.where(self.valid[:, :, None], self.x, torch.zeros_like(self.x))


def _idx(a) -> Tensor:
    return torch.as_tensor(a, dtype=torch.long)


def support_batch(data: CycleTensors, task: Task, problem: str, masking: MaskingConfig,
                  generator: torch.Generator | None = None) -> Batch:
    s = _idx(task.support)
    y = data.x[s]
    valid = data.valid[s]
    loo = leave_one_out_templates(y, valid)
    if problem == "generation":
        prev = torch.cat([torch.zeros_like(y[:1]), y[:-1]], dim=0)
        x = generation_input(prev, loo, valid)
    else:
        obs = random_observation_mask(len(s), data.channel_to_sensor, y.shape[-1], masking, generator)
        x = reconstruction_input(y, obs, loo, valid)
    return Batch(x=x, y=y, mask=valid)


def query_batch(data: CycleTensors, task: Task, problem: str, masking: MaskingConfig,
                generator: torch.Generator | None = None, template: Tensor | None = None) -> Batch:
    """Query inputs and targets; ``template`` overrides the support mean (used by the personal reference)."""
    s = _idx(task.support)
    q = _idx(task.query)
    if template is None:
        template = template_from_support(data.x[s], data.valid[s])
    y = data.x[q]
    valid = data.valid[q]
    tmpl = template[None].expand_as(y)
    if problem == "generation":
        x = generation_input(data.x[_idx(task.query_prev)], tmpl, valid)
    else:
        obs = random_observation_mask(len(q), data.channel_to_sensor, y.shape[-1], masking, generator)
        x = reconstruction_input(y, obs, tmpl, valid)
    return Batch(x=x, y=y, mask=valid)


def meta_task(data: CycleTensors, task: Task, problem: str, masking: MaskingConfig,
              generator: torch.Generator | None = None) -> Episode:
    return Episode(
        support=support_batch(data, task, problem, masking, generator),
        query=query_batch(data, task, problem, masking, generator),
    )
