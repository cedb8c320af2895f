"""``metagait-edge build-engine``: build (or fetch from the cache) a TensorRT engine for an exported model.

Runs on the device that will use the engine (a Jetson): engines are specific to the GPU and the
TensorRT version, and the cache key says so. ``--golden`` checks the engine against the PyTorch outputs
saved by ``metagait-edge export --golden``. ``--list`` shows the cache and needs no TensorRT.
"""

from __future__ import annotations

import argparse

NAME = "build-engine"
HELP = "build or reuse a cached TensorRT engine (fp32/fp16/int8, refittable for the TCN) from an ONNX export"

# Engine vs PyTorch tolerances, relative to the largest reference magnitude (per precision).
GOLDEN_REL_TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2, "int8": 0.15}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", metavar="PATH", help="model exported by `metagait-edge export`")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16")
    parser.add_argument("--max-batch", type=int, default=8, help="largest batch of the optimization profile")
    parser.add_argument("--cache", metavar="DIR", help="engine cache (default: $METAGAIT_CACHE/engines)")
    parser.add_argument("--timing-cache", metavar="PATH", help="TensorRT timing cache (default: <cache>/timing.cache)")
    parser.add_argument("--calibration", nargs="+", default=[], metavar="NPZ",
                        help="int8: npz files with real inputs under the model's input name "
                             "(silhouettes [N,T,H,W] or cycles [N,3C,101])")
    refit = parser.add_mutually_exclusive_group()
    refit.add_argument("--refit", dest="refit", action="store_true", default=None,
                       help="build refittable (default for the tcn model)")
    refit.add_argument("--no-refit", dest="refit", action="store_false")
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache has the engine")
    parser.add_argument("--golden", metavar="NPZ", help="compare the engine's outputs with this golden file")
    parser.add_argument("--list", action="store_true", help="list the engine cache and exit")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from metagait_edge.deploy import engine as E
    from metagait_edge.paths import cache_dir

    cache = Path(args.cache) if args.cache else cache_dir() / "engines"
    if args.list:
        entries = E.EngineCache(cache).entries()
        for e in entries:
            m = e.meta
            print(f"{e.path.name}: {m.get('precision')} refit={m.get('refit')} TensorRT {m.get('tensorrt')} on "
                  f"{m.get('gpu')} from {m.get('onnx')} ({m.get('size', 0) / 1e6:.1f} MB, built {m.get('built')} "
                  f"in {m.get('build_seconds')} s)")
        print(f"{len(entries)} engine(s) in {cache}")
        return 0
    if not args.onnx:
        raise ValueError("--onnx PATH is required (or --list)")
    from metagait_edge.deploy.backends import tensorrt_available
    from metagait_edge.deploy.onnx_graph import model_kind

    import sys

    ok, reason = tensorrt_available()
    if not ok:
        print(f"metagait-edge build-engine: error: needs TensorRT and a CUDA GPU: {reason}", file=sys.stderr)
        return 1
    kind = model_kind(args.onnx)
    if kind is None:
        raise ValueError(f"{args.onnx}: not exported by metagait-edge (no model metadata); use `metagait-edge export`")
    from metagait_edge.deploy.tensorrt_backend import TensorRTBackend

    backend = TensorRTBackend(args.onnx, kind, precision=args.precision, max_batch=args.max_batch, cache_dir=cache,
                              timing_cache=args.timing_cache, calibration_files=args.calibration, refit=args.refit,
                              force_build=args.force)
    backend.load()
    d = backend.describe()
    state = "built now" if d["engine_built_now"] else "reused from the cache"
    print(f"engine   : {d['engine']} ({state})")
    print(f"key      : {d['engine_key']}")
    print(f"device   : {d['device']} (sm {d['compute_capability']}), TensorRT {d['tensorrt']}, {d['precision']}, "
          f"refit={d['refit']}, max batch {d['max_batch']}")
    if args.golden:
        import numpy as np

        from metagait_edge.deploy.golden import load_golden

        golden = load_golden(args.golden)
        got = backend.run(golden.inputs)
        worst = 0.0
        for name, ref in golden.outputs.items():
            err = float(np.abs(got[name] - ref).max())
            scale = float(np.abs(ref).max()) or 1.0
            limit = GOLDEN_REL_TOLERANCE[args.precision] * scale
            print(f"golden   : {name}: max abs error {err:.3g} vs PyTorch (limit {limit:.3g} for {args.precision})")
            worst = max(worst, err / limit)
        if worst > 1.0:
            print("golden   : FAILED")
            return 1
        print("golden   : passed")
    return 0
