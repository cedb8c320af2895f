#!/usr/bin/env python3
"""CPU inference benchmark: PyTorch eager vs ONNX Runtime for the deployed models.

For each model (MetaGait ``cpu`` preset, the edge MetaGait of ``deploy.export.edge_metagait_config``
and the personalization CycleModel), each backend, batch 1 and 8 and 1 and 2 threads: latency p50 / p99
of one ``run()`` call and throughput. Each model's MACs come from ``torch.utils.flop_counter`` (FLOPs / 2),
and achieved GFLOP/s is compared with a float32 matrix-multiply peak measured in the same run on the
same machine (best of torch and numpy ``matmul``, per thread count). Weights are random: speed does not
depend on their values.

    .venv/bin/python benchmarks/bench_inference.py --repeats 20 --out docs/benchmarks/inference.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

EDGE_TARGET_HZ = 4.0


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def matmul_peak_gflops(threads: int, n: int = 1024, repeats: int = 5) -> Dict[str, float]:
    """Best float32 GEMM rate (GFLOP/s) of torch and numpy with ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    out = {}
    best = float("inf")
    torch.matmul(a, b)
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    out["torch"] = 2 * n**3 / best / 1e9
    # numpy's BLAS thread count is fixed at import (OPENBLAS_NUM_THREADS); report it as measured.
    an, bn = a.numpy(), b.numpy()
    best = float("inf")
    an @ bn
    for _ in range(repeats):
        t0 = time.perf_counter()
        an @ bn
        best = min(best, time.perf_counter() - t0)
    out["numpy"] = 2 * n**3 / best / 1e9
    return out


def count_macs(module, x) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(torch.from_numpy(x))
    return int(counter.get_total_flops() // 2)


def time_backend(backend, x: np.ndarray, repeats: int, warmup: int, min_seconds: float) -> Dict[str, float]:
    for _ in range(warmup):
        backend.run(x)
    times: List[float] = []
    t_start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - t_start < min_seconds and len(times) < 10 * repeats):
        t0 = time.perf_counter()
        backend.run(x)
        times.append(time.perf_counter() - t0)
    arr = np.array(times)
    return {"p50": float(np.percentile(arr, 50)), "p99": float(np.percentile(arr, 99)),
            "mean": float(arr.mean()), "n": len(arr)}


def build_models():
    import torch

    from metagait_edge.deploy.export import edge_metagait_config
    from metagait_edge.deploy.parity import example_inputs
    from metagait_edge.models.metagait import MetaGait, MetaGaitConfig
    from metagait_edge.personalization.model import CycleModel, CycleModelConfig

    torch.manual_seed(0)
    tcn = CycleModel(CycleModelConfig(channels=42)).eval()
    with torch.no_grad():
        tcn.tcn.head.weight.normal_(0, 0.05)
    models = {
        "recognition-cpu (64x44, 16/32/64)": ("recognition", MetaGait(MetaGaitConfig.cpu()).eval()),
        "recognition-edge (32x22, 8/16/32)": ("recognition", MetaGait(edge_metagait_config()).eval()),
        "tcn (CycleModel, 42 ch, 48 hidden, 5 levels)": ("tcn", tcn),
    }
    return models, example_inputs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per case (at least)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=0.5, help="keep timing a case at least this long")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--out", help="write the markdown report here (else stdout only)")
    args = parser.parse_args(argv)

    import torch

    from metagait_edge.deploy.backends import OnnxRuntimeBackend, TorchBackend
    from metagait_edge.deploy.export import export_recognition, export_tcn

    threads_list = [int(t) for t in args.threads.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    started = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()
    peaks = {t: matmul_peak_gflops(t) for t in threads_list}
    models, example_inputs = build_models()
    tmp = Path(tempfile.mkdtemp(prefix="bench-inference-"))
    rows = []
    macs_rows = []
    edge_hz = None
    for label, (kind, model) in models.items():
        torch.set_num_threads(1)
        path = tmp / f"{kind}-{len(macs_rows)}.onnx"
        (export_tcn if kind == "tcn" else export_recognition)(model, path)
        x1 = example_inputs(kind, model, 1)
        ref_module = TorchBackend(model, kind).load()._module
        macs = count_macs(ref_module, x1)
        params = sum(p.numel() for p in model.parameters())
        macs_rows.append((label, macs, params, tuple(x1.shape[1:])))
        for threads in threads_list:
            backends = {"torch eager": TorchBackend(model, kind, threads=threads).load(),
                        "onnxruntime": OnnxRuntimeBackend(path, kind, threads=threads).load()}
            for batch in batches:
                x = example_inputs(kind, model, batch)
                for name, backend in backends.items():
                    torch.set_num_threads(threads)
                    r = time_backend(backend, x, args.repeats, args.warmup, args.min_seconds)
                    gflops = 2 * macs * batch / r["p50"] / 1e9
                    peak = max(peaks[threads].values())
                    rows.append((label, name, threads, batch, r, batch / r["mean"], gflops, gflops / peak))
                    print(f"{label:46s} {name:12s} threads {threads} batch {batch}: p50 {1e3 * r['p50']:8.2f} ms "
                          f"p99 {1e3 * r['p99']:8.2f} ms, {batch / r['mean']:8.1f} samples/s, {gflops:6.2f} GFLOP/s "
                          f"({100 * gflops / peak:4.1f} % of peak)", flush=True)
                    if label.startswith("recognition-edge") and threads == 1 and batch == 1:
                        hz = 1.0 / r["p50"]
                        edge_hz = max(edge_hz or 0.0, hz)
    load_after = os.getloadavg()
    lines = [
        "# Inference benchmark (CPU): PyTorch eager vs ONNX Runtime",
        "",
        "Generated by `benchmarks/bench_inference.py`; do not edit by hand.",
        "",
        f"- command: `.venv/bin/python benchmarks/bench_inference.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- date: {started.isoformat(timespec='seconds')}",
        f"- machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}, {platform.system()} {platform.machine()}",
        f"- load average (1/5/15 min) before: {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
        f"after: {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} (a shared, loaded machine: "
        "absolute numbers are pessimistic, comparisons within one run are fair)",
        f"- software: Python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {__import__('onnxruntime').__version__}, numpy {np.__version__}",
        f"- repeats: at least {args.repeats} timed calls per case (and {args.min_seconds} s), {args.warmup} warm-up calls; "
        "latency is one `backend.run()` call including numpy conversion",
        "- recognition inputs: a 30-frame silhouette window; tcn inputs: one gait cycle [3C=126, 101]",
        "",
        "## Matrix-multiply peak (float32 1024x1024 GEMM, best of 5)",
        "",
        "| threads | torch GFLOP/s | numpy GFLOP/s |",
        "|---:|---:|---:|",
    ]
    for t, p in peaks.items():
        lines.append(f"| {t} | {p['torch']:.1f} | {p['numpy']:.1f} |")
    lines += ["", "## Model cost (batch 1)", "", "| model | input | parameters | MACs | FLOPs |", "|---|---|---:|---:|---:|"]
    for label, macs, params, shape in macs_rows:
        lines.append(f"| {label} | {list(shape)} | {params:,} | {macs / 1e6:.1f} M | {2 * macs / 1e6:.1f} M |")
    lines += ["", "## Latency and throughput", "",
              "| model | backend | threads | batch | p50 ms | p99 ms | samples/s | GFLOP/s | % of GEMM peak |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, name, threads, batch, r, thr, gflops, frac in rows:
        lines.append(f"| {label} | {name} | {threads} | {batch} | {1e3 * r['p50']:.2f} | {1e3 * r['p99']:.2f} | "
                     f"{thr:.1f} | {gflops:.2f} | {100 * frac:.1f} |")
    if edge_hz is not None:
        verdict = "meets" if edge_hz >= EDGE_TARGET_HZ else "MISSES"
        lines += ["", "## Edge recognition target", "",
                  f"The edge MetaGait (32x22 silhouettes, channels 8/16/32, 16 strips; "
                  f"`metagait_edge.deploy.export.edge_metagait_config`) recognises one 30-frame window in "
                  f"{1e3 / edge_hz:.1f} ms (p50, best backend, batch 1, one thread): {edge_hz:.1f} Hz, which "
                  f"{verdict} the >= {EDGE_TARGET_HZ:.0f} Hz target on one CPU core."]
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if args.out:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from metagait_edge.atomic import atomic_write_text

        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
