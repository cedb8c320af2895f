"""Whole runs of the personalization experiment: train folds x seeds, evaluate them, write the report.

Checkpoint root layout: ``<root>/seed<s>/fold<k>/<problem>/{pooled,maml}.safetensors``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from metagait_edge import distributed
from metagait_edge.checkpoint import git_commit, short_commit
from metagait_edge.resources import PERSONALIZATION_CHECKPOINTS
from metagait_edge.config import to_dict
from metagait_edge.data.cycles import CycleSet, build_cycle_set
from metagait_edge.personalization import evaluate as E
from metagait_edge.personalization import report as R
from metagait_edge.personalization.config import PersonalizationConfig
from metagait_edge.personalization.episodes import query_batch, support_batch
from metagait_edge.personalization.experiment import fold_split, load_problem, prepare, stored_config, train_fold
from metagait_edge.personalization.inputs import PROBLEMS, masking_for
from metagait_edge.personalization.methods import all_predictions
from metagait_edge.personalization.tasks import evaluation_tasks

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINTS = PERSONALIZATION_CHECKPOINTS



def shown_path(path) -> str:
    """``path`` as a report prints it: relative to the checkout when it lies inside it (the shipped checkpoint),
    so that a committed report does not depend on where the project was cloned."""
    checkout = Path(__file__).resolve().parents[2]
    try:
        return str(Path(os.path.abspath(path)).relative_to(checkout))
    except ValueError:
        return str(path)

def fold_dir(root: Path, seed: int, fold: int) -> Path:
    return Path(root) / f"seed{seed}" / f"fold{fold}"


def available_runs(root: Path) -> List[tuple]:
    """(seed, fold) pairs with trained checkpoints under ``root``."""
    runs = []
    for d in sorted(Path(root).glob("seed*/fold*")):
        if any(d.glob("*/maml.safetensors")):
            runs.append((int(d.parent.name[4:]), int(d.name[4:])))
    return runs


def load_cycles(config: PersonalizationConfig, progress: bool = True, path: Optional[Path] = None) -> CycleSet:
    """The HuGaDB cycle set (built once, then cached), or a saved cycle set from ``path``."""
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"cycle-set file not found: {path}")
        return CycleSet.load(path)
    return build_cycle_set(config.data, progress=progress)


def train(config: PersonalizationConfig, root: Path, folds: Sequence[int], seeds: Sequence[int],
          progress: bool = True, cycles_path: Optional[Path] = None) -> None:
    git_commit()  # pin the code revision the checkpoints will record before the long run starts
    cs = load_cycles(config, progress, cycles_path)
    for seed in seeds:
        cfg = replace(config, train=replace(config.train, seed=seed))
        for fold in folds:
            prepared = prepare(cs, fold_split(cs, cfg, fold))
            log.info("seed %d fold %d: train %s val %s test %s", seed, fold, *(prepared.split[k] for k in ("train", "val", "test")))
            train_fold(cfg, prepared, fold_dir(root, seed, fold), progress)
    distributed.barrier()


def provenance() -> Dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"date": _dt.date.today().isoformat(), "machine": f"{os.cpu_count()} cores, {cpu}", "commit": short_commit()}


SHARED_SECTIONS = ("data", "split", "protocol", "masking")


def problem_config(root: Path, seed: int, fold: int, problem: str, config: Optional[PersonalizationConfig],
                   reference: PersonalizationConfig) -> PersonalizationConfig:
    """The configuration to load one problem's checkpoints with.

    With an explicit ``config`` it must match the checkpoint exactly. Without one, each problem's model may
    have its own architecture and training settings (stored with it), but data, split, protocol and masking
    must equal the reference's, or the methods would not be scored on the same tasks.
    """
    if config is not None:
        return config
    own = stored_config(fold_dir(root, seed, fold) / problem)
    differing = [name for name in SHARED_SECTIONS if getattr(own, name) != getattr(reference, name)]
    if differing:
        raise ValueError(f"{fold_dir(root, seed, fold) / problem}: checkpoints were trained with other "
                         f"{', '.join(differing)} settings than the rest of the evaluation")
    return own


def evaluate(config: PersonalizationConfig, root: Path, quick: bool, seeds: Optional[Sequence[int]] = None,
             folds: Optional[Sequence[int]] = None, progress: bool = True, plots_dir: Optional[Path] = None,
             cycles_path: Optional[Path] = None, strict_config: bool = True,
             scores_out: Optional[Path] = None, merge: Sequence[Path] = (), masking: str = "mixed",
             problems: Optional[Sequence[str]] = None, settle: int = 0) -> dict:
    """Score every trained (seed, fold) under ``root``. ``strict_config``: every checkpoint must have been
    trained with ``config``; otherwise ``config`` fixes data, split, protocol and masking only. ``masking``:
    reconstruction inputs as trained (``mixed``) or all ``sparse`` / all ``sensors`` (the checkpoints load
    with their own config; only the evaluation's masks change). ``problems``: only these. ``settle``: strides
    skipped at the start of each walk before the support (queries unchanged, so the scores pair with settle 0)."""
    if problems is not None and set(problems) - set(PROBLEMS):
        raise ValueError(f"unknown problems {sorted(set(problems) - set(PROBLEMS))}; known: {PROBLEMS}")
    runs = [(s, f) for s, f in available_runs(root) if (seeds is None or s in seeds) and (folds is None or f in folds)]
    if merge and folds is not None and len(folds) == 0:
        runs = []  # only summarize scores saved by earlier runs
    elif not runs:
        raise FileNotFoundError(f"no trained personalization checkpoints under {root} (expected seed<s>/fold<k>/...); "
                                f"train them with `metagait-edge train-personalization`")
    variant = {"masking": masking, "settle": settle}  # what changes the scores of the same checkpoints

    def as_evaluated(cfg: PersonalizationConfig) -> PersonalizationConfig:
        return replace(cfg, masking=masking_for(cfg.masking, masking), protocol=replace(cfg.protocol, settle=settle))

    cs = load_cycles(config, progress, cycles_path)
    scores = E.Scores()
    timing_ms: Dict[str, float] = {}
    max_tasks = 4 if quick else None
    protocol = {
        "dataset": "HuGaDB v1", "n_folds": config.split.n_folds, "seeds": sorted({s for s, _ in runs}),
        "folds": sorted({f for _, f in runs}), "checkpoints": shown_path(root), "shots": list(config.protocol.shots),
        "gap": config.protocol.gap, "max_queries": config.protocol.max_queries, "conditions": list(config.protocol.conditions),
        "keep_fraction": config.masking.keep_fraction, "drop_sensors": config.masking.drop_sensors,
        "masking": masking, "p_sensors": masking_for(config.masking, masking).p_sensors, "settle": settle,
        "inner_steps": config.maml.eval_steps or config.maml.inner_steps, "quick": quick,
        "max_tasks_per_cell": max_tasks,
    }
    for seed, fold in runs:
        run_problems = config.problems if strict_config else [
            p for p in PROBLEMS if (fold_dir(root, seed, fold) / p / "maml.safetensors").is_file()]
        for problem in [p for p in run_problems if problems is None or p in problems]:
            pconfig = problem_config(root, seed, fold, problem, config if strict_config else None, config)
            models = load_problem(pconfig, fold_dir(root, seed, fold), problem)
            prepared = prepare(cs, models.split, models.normalizer)
            # the personal reference is trained on as the pooled model was (pconfig's training settings)
            E.evaluate_problem(models, prepared, as_evaluated(pconfig), scores, seed, max_tasks=max_tasks,
                               progress=progress)
            if problem == "generation" and not timing_ms:
                timing_ms = E.timing(models, prepared, config)
                if plots_dir is not None:
                    make_plots(models, prepared, as_evaluated(config), Path(plots_dir), quick)
    for path in merge:
        part = json.loads(Path(path).read_text())
        saved = {"masking": part.get("masking", "mixed"), "settle": part.get("settle", 0)}  # older files: defaults
        differing = [k for k in variant if saved[k] != variant[k]]
        if differing:
            key = differing[0]
            raise ValueError(f"{path} holds scores evaluated with --{key} {saved[key]}, this report with "
                             f"--{key} {variant[key]}: evaluate with the same --{key}")
        scores.merge_json({k: v for k, v in part["scores"].items() if problems is None or k in problems})
        timing_ms = timing_ms or part.get("timing_ms", {})
        runs = sorted(set(runs) | {tuple(r) for r in part.get("runs", [])})
    if scores_out is not None:  # after merging, so a merged selection can itself be merged later
        from metagait_edge.atomic import atomic_write_text

        atomic_write_text(scores_out, json.dumps({"scores": scores.to_json(), "timing_ms": timing_ms,
                                                  "runs": [list(r) for r in runs], **variant}))
    protocol["seeds"] = sorted({s for s, _ in runs})
    protocol["folds"] = sorted({f for _, f in runs})
    protocol["training_loss"] = training_losses(root, runs)
    summary = E.summarize(scores)
    payload = R.build_json(summary, protocol, timing_ms)
    payload["config"] = to_dict(config)
    return payload


def training_losses(root: Path, runs: Sequence[tuple]) -> Dict[str, dict]:
    """Per problem, the training loss of the checkpoints of ``runs`` under ``root`` (read from their sidecars,
    so a report merged from saved scores states it too). Runs that disagree do not belong in one report."""
    out: Dict[str, dict] = {}
    for seed, fold in runs:
        for problem in PROBLEMS:
            folder = fold_dir(root, seed, fold) / problem
            if not (folder / "maml.json").is_file():
                continue
            cfg = stored_config(folder)
            loss = {**to_dict(cfg.loss), "shape_steps": cfg.train.shape_steps}
            if out.setdefault(problem, loss) != loss:
                raise ValueError(f"{folder} was trained with the loss {loss}, other runs of this report with {out[problem]}")
    return out


def make_plots(models, prepared, config: PersonalizationConfig, out: Path, quick: bool) -> None:
    """True vs generated next cycles for one held-out walker; error versus number of shots."""
    names = ["knee_r", "hip_r", "ankle_r"]
    channels = list(prepared.cycles.channels)
    idx = [channels.index(n) for n in names]
    tasks = [t for t in evaluation_tasks(prepared.recordings, models.split["test"], 5, config.protocol, True)
             if prepared.tensors.valid[int(t.query[0]), idx].all()]
    if not tasks:
        log.warning("no test task with valid joint-angle estimates; cycle plot skipped")
    else:
        task = tasks[0]
        g = torch.Generator().manual_seed(0)
        support = support_batch(prepared.tensors, task, "generation", config.masking, g)
        query = query_batch(prepared.tensors, task, "generation", config.masking, g)
        preds = all_predictions("generation", support, query, models.maml, models.pooled, models.finetune,
                                models.scratch, seed=0, only=("maml", "pooled_finetune", "support_mean", "copy_previous"))
        inv = lambda z: models.normalizer.invert(z.numpy())  # noqa: E731
        t = np.linspace(0, 100, query.y.shape[-1])
        R.plot_cycles(out / "personalization_cycles.png", t, inv(query.y[0])[idx],
                      {m: inv(p[0])[idx] for m, p in preds.items()}, [f"{n} (deg, IMU estimate)" for n in names],
                      f"Held-out walker {task.subject}, 5-shot next-cycle generation, "
                      f"{task.recording.split('#')[0].replace('HuGaDB_v1_', '')}")
    shots = (1, 2, 5) if quick else (1, 2, 3, 5, 10)
    curves: Dict[str, Dict[int, float]] = {}
    for k in shots:
        ts = evaluation_tasks(prepared.recordings, models.split["test"], k, config.protocol, True)
        ts = ts[: (4 if quick else len(ts))]
        acc: Dict[str, List[float]] = {}
        for i, tk in enumerate(ts):
            g = torch.Generator().manual_seed(i)
            s = support_batch(prepared.tensors, tk, "generation", config.masking, g)
            q = query_batch(prepared.tensors, tk, "generation", config.masking, g)
            p = all_predictions("generation", s, q, models.maml, models.pooled, models.finetune, models.scratch, seed=i,
                                only=("maml", "pooled_finetune", "pooled", "support_mean"))
            for m, pred in p.items():
                acc.setdefault(m, []).append(float(E.masked_mse(pred, q.y, q.mask)))
        for m, v in acc.items():
            curves.setdefault(m, {})[k] = float(np.mean(v))
    R.plot_error_vs_shots(out / "personalization_shots.png", curves,
                          f"Next-cycle generation, test walkers of fold 0 ({'quick' if quick else 'all tasks'})")
