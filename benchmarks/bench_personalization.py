"""Speed of the personalization model on one CPU thread: MAML adaptation (1- and 5-shot) and generation.

Usage: METAGAIT_DATA=... python benchmarks/bench_personalization.py [--checkpoints DIR] [--repeats N]
Prints a Markdown table (median and p90 over repeats, ms) for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from metagait_edge.personalization.episodes import query_batch, support_batch
    from metagait_edge.personalization.experiment import load_problem, prepare
    from metagait_edge.personalization.runner import DEFAULT_CHECKPOINTS, available_runs, fold_dir, load_cycles
    from metagait_edge.commands.eval_personalization import _config_from_checkpoints
    from metagait_edge.personalization.tasks import Task

    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoints", default=str(DEFAULT_CHECKPOINTS))
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(args.checkpoints)
    config = _config_from_checkpoints(root)
    seed, fold = available_runs(root)[0]
    models = load_problem(config, fold_dir(root, seed, fold), "generation")
    prepared = prepare(load_cycles(config, progress=False), models.split, models.normalizer)
    rec = max(prepared.recordings, key=len)
    rows = []
    for k in (1, 5):
        task = Task(rec.subject, rec.condition, rec.indices[:k], rec.indices[k + 1:k + 2], rec.indices[k:k + 1], rec.key, rec.key)
        s = support_batch(prepared.tensors, task, "generation", config.masking)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            models.maml.adapt(s.x, s.y, s.mask, differentiable=False)
            times.append((time.perf_counter() - t0) * 1e3)
        rows.append((f"MAML adaptation, {k}-shot, {config.maml.inner_steps} steps", times))
    q = query_batch(prepared.tensors, task, "generation", config.masking)
    times = []
    with torch.no_grad():
        for _ in range(args.repeats * 5):
            t0 = time.perf_counter()
            models.maml.model(q.x[:1])
            times.append((time.perf_counter() - t0) * 1e3)
    rows.append(("generate one cycle (batch 1)", times))
    n_params = sum(p.numel() for p in models.maml.model.parameters())
    print(f"model: CycleModel, {n_params} parameters, TCN hidden {config.tcn.hidden_channels}, levels {config.tcn.levels}")
    print("| what | median ms | p90 ms |")
    print("|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {np.median(t):.1f} | {np.percentile(t, 90):.1f} |")


if __name__ == "__main__":
    main()
