"""One fold of the personalization experiment: prepare data, train every model, save and load checkpoints.

Layout of a trained fold folder::

    fold<k>/<problem>/pooled.safetensors + .json   conventional model (+ tuned baseline budgets)
    fold<k>/<problem>/maml.safetensors + .json     meta-trained model and learned inner learning rates
    fold<k>/<problem>/history_{pooled,maml}.csv     training curves
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from metagait_edge.atomic import atomic_write_text
from metagait_edge.checkpoint import load_checkpoint, save_checkpoint
from metagait_edge.config import from_dict
from metagait_edge.distributed import is_main_process
from metagait_edge.data.cycles import CycleSet
from metagait_edge.data.normalization import ChannelNormalizer, fit_normalizer
from metagait_edge.meta.maml import MAML
from metagait_edge.personalization import train as T
from metagait_edge.personalization.config import PersonalizationConfig
from metagait_edge.personalization.episodes import CycleTensors
from metagait_edge.personalization.inputs import channel_sensors
from metagait_edge.personalization.methods import Budgets, budgets_from_dict, budgets_to_dict
from metagait_edge.personalization.model import CycleModel
from metagait_edge.personalization.tasks import TaskSampler, WalkCycles, group_recordings, subject_folds

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    cycles: CycleSet
    tensors: CycleTensors
    recordings: List[WalkCycles]
    normalizer: ChannelNormalizer
    split: Dict[str, List[int]]
    fingerprint: str


def recording_keys(cs: CycleSet) -> np.ndarray:
    return np.char.add(np.char.add(cs.file_id.astype(str), "#"), cs.segment.astype(str))


def fold_split(cs: CycleSet, config: PersonalizationConfig, fold: int) -> Dict[str, List[int]]:
    folds = subject_folds(cs.subjects(), config.split.n_folds, config.split.n_val, config.split.seed)
    if not 0 <= fold < len(folds):
        raise ValueError(f"fold {fold} out of range: the split has {len(folds)} folds")
    return folds[fold]


def prepare(cs: CycleSet, split: Dict[str, List[int]], normalizer: ChannelNormalizer | None = None) -> Prepared:
    """Normalize with statistics of the training walkers only and group cycles into recordings."""
    normalizer = normalizer or fit_normalizer(cs, split["train"])
    leaked = set(normalizer.subjects) - set(split["train"])
    if leaked:
        raise ValueError(f"normalization statistics include non-training subjects {sorted(leaked)}")
    x = torch.from_numpy(normalizer.apply(cs.cycles, cs.valid))
    tensors = CycleTensors(x=x, valid=torch.from_numpy(cs.valid.copy()), channel_to_sensor=channel_sensors(cs.channels))
    recordings = group_recordings(cs.subject, cs.condition, recording_keys(cs), cs.index)
    meta = cs.meta or {}
    fingerprint = f"hugadb:{meta.get('archive_sha256', 'unknown')[:16]}:cycles:{meta.get('config_digest', 'unknown')}"
    return Prepared(cs, tensors, recordings, normalizer, split, fingerprint)


def _write_history(path: Path, history: T.History) -> None:
    if not history.rows:
        return
    keys = sorted({k for row in history.rows for k in row})
    lines = [",".join(keys)] + [",".join(f"{row.get(k, '')}" for k in keys) for row in history.rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def train_fold(config: PersonalizationConfig, prepared: Prepared, out_dir: Path, progress: bool = True) -> None:
    """Train the pooled model, tune the baselines' budgets and meta-train MAML for every problem."""
    split = prepared.split
    train_recs = [r for r in prepared.recordings if r.subject in split["train"]]
    sampler = TaskSampler(train_recs, config.sampler)
    for problem in config.problems:
        pdir = out_dir / problem
        val_tasks = T.validation_tasks(prepared.recordings, split["val"], config, problem)
        if not val_tasks:
            raise ValueError(f"validation subjects {split['val']} have no task long enough for the protocol")
        val_batches = T.fixed_batches(prepared.tensors, val_tasks, problem, config, seed=config.train.seed + 99)
        pooled, hist_pooled = T.train_pooled(prepared.tensors, sampler, config, problem, progress)
        pooled.eval()
        finetune_hp = T.tune_adaptation(pooled, val_batches, config, scratch=False)
        scratch_hp = T.tune_adaptation(pooled, val_batches, config, scratch=True)
        pooled_val = T.val_loss_pooled(pooled, val_batches)
        maml, hist_maml, best = T.train_maml(prepared.tensors, sampler, config, problem, pooled, val_batches, progress)
        common = dict(
            normalization=prepared.normalizer.to_dict(),
            data_fingerprint=prepared.fingerprint,
        )
        extra = {"problem": problem, "split": split, "finetune": budgets_to_dict(finetune_hp),
                 "scratch": budgets_to_dict(scratch_hp),
                 "channels": list(prepared.cycles.channels)}
        if not is_main_process():
            continue
        save_checkpoint(pdir / "pooled", pooled, config, extra=extra, metrics={"val_loss": pooled_val},
                        **common)
        save_checkpoint(pdir / "maml", maml, config, extra=extra, metrics=best, **common)
        _write_history(pdir / "history_pooled.csv", hist_pooled)
        _write_history(pdir / "history_maml.csv", hist_maml)
        log.info("%s: pooled val %.4f, maml best val %.4f at iteration %d", problem,
                 pooled_val, best["val_loss"], best["iteration"])


@dataclass
class ProblemModels:
    problem: str
    pooled: CycleModel
    maml: MAML
    finetune: Budgets
    scratch: Budgets
    normalizer: ChannelNormalizer
    split: Dict[str, List[int]]
    channels: List[str]


def stored_config(problem_dir: Path) -> PersonalizationConfig:
    """The experiment configuration a problem's checkpoints were trained with (checked like YAML)."""
    return from_dict(PersonalizationConfig, load_checkpoint(Path(problem_dir) / "maml").config)


def load_problem(config: PersonalizationConfig, fold_dir: Path, problem: str) -> ProblemModels:
    """Load a fold's models for one problem; refuses checkpoints trained with another configuration."""
    pdir = Path(fold_dir) / problem
    ck_pooled = load_checkpoint(pdir / "pooled", config, expected_model_class="CycleModel")
    ck_maml = load_checkpoint(pdir / "maml", config, expected_model_class="MAML")
    channels = ck_pooled.extra["channels"]
    mc = T.model_config(config, problem, len(channels))
    pooled = CycleModel(mc)
    pooled.load_state_dict(ck_pooled.state_dict)
    maml = MAML(CycleModel(mc), config.maml)
    maml.load_state_dict(ck_maml.state_dict)
    pooled.eval()
    maml.eval()
    return ProblemModels(
        problem=problem,
        pooled=pooled,
        maml=maml,
        finetune=budgets_from_dict(ck_pooled.extra["finetune"]),
        scratch=budgets_from_dict(ck_pooled.extra["scratch"]),
        normalizer=ChannelNormalizer.from_dict(ck_pooled.normalization),
        split={k: [int(s) for s in v] for k, v in ck_pooled.extra["split"].items()},
        channels=list(channels),
    )
