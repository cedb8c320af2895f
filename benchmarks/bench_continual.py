"""Compute per continual-personalization update on one core (docs/BENCHMARKS.md, docs/runtime.md).

    python benchmarks/bench_continual.py [--repeats N] [--json PATH]

One update (``personalization.continual.propose_update``) of the shipped personalization model on a full
buffer (``buffer_strides`` strides, the newest ``holdout_strides`` held out), for the default settings (the output
head refitted in closed form on the buffer, ``ridge > 0``; ``grad_steps`` Adam steps on every weight; a per-phase
residual), without the gradient steps and the residual (the previous default), and without any of them (ridge 0:
templates and the choice of weights only). The strides are random
normalized cycles: the compute does not depend on their values. CPU time of the calling thread is the compute
(it does not grow when other processes share the core); wall time is what the learner thread waits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from tqdm import tqdm

    from metagait_edge.personalization.continual import ContinualConfig, ModelState, RunningTemplate, propose_update
    from metagait_edge.runtime.personalizer import load_personalizer

    torch.set_num_threads(1)
    p = load_personalizer()
    g = torch.Generator().manual_seed(0)
    results = {}
    from dataclasses import replace

    default = ContinualConfig()
    plain = replace(default, grad_steps=0, residual_prior=0.0)
    for label, config in ((f"default (ridge {default.ridge:g}, grad_steps {default.grad_steps}, residual_prior "
                           f"{default.residual_prior:g})", default),
                          ("head refit only (grad_steps 0, residual_prior 0)", plain),
                          ("ridge 0 (templates only)", replace(plain, ridge=0.0))):
        n = config.buffer_strides
        x = torch.randn(n, p.n_channels, 101, generator=g)
        valid = torch.ones(n, p.n_channels, dtype=torch.bool)
        contiguous = torch.ones(n, dtype=torch.bool)
        contiguous[0] = False
        current = ModelState(p.base, torch.zeros(p.n_channels, 101))
        running = RunningTemplate.from_strides(x, valid)
        wall, cpu = [], []
        for _ in tqdm(range(args.repeats + 2), desc=label):
            t0, c0 = time.perf_counter(), time.thread_time()
            propose_update(p.maml.model, current, current, running, x, valid, contiguous, config)
            wall.append(1e3 * (time.perf_counter() - t0))
            cpu.append(1e3 * (time.thread_time() - c0))
        wall, cpu = np.array(wall[2:]), np.array(cpu[2:])  # the first calls warm up the allocator
        results[label] = {"cpu_median_ms": float(np.median(cpu)), "cpu_p95_ms": float(np.percentile(cpu, 95)),
                          "wall_median_ms": float(np.median(wall)), "wall_p95_ms": float(np.percentile(wall, 95)),
                          "buffer_strides": n, "holdout_strides": config.holdout_strides}
    for label, r in results.items():
        print(f"{label}: CPU time {r['cpu_median_ms']:.0f} ms median, {r['cpu_p95_ms']:.0f} ms p95 per update; wall "
              f"{r['wall_median_ms']:.0f} / {r['wall_p95_ms']:.0f} ms ({r['buffer_strides']} buffered strides, 1 thread)")
    if args.json:
        from metagait_edge.atomic import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
