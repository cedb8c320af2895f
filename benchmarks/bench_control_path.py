"""The control path's pieces one by one: what each costs on this machine (docs/runtime.md, BENCHMARKS.md).

    python benchmarks/bench_control_path.py [--json PATH]

- scheduling jitter: overshoot of ``time.sleep(1 ms)`` in an idle process over 10 s;
- a full garbage collection once the runtime's models are loaded (what ``runtime.freeze_gc`` avoids);
- the safety envelope on a smooth and on a rough trajectory (the rate limiter's fast path and its loop);
- generating one cycle with the shipped personalization model on PyTorch eager and on ONNX Runtime.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path


def per_call_ms(fn, repeats: int = 300) -> float:
    for _ in range(10):
        fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--jitter-seconds", type=float, default=10.0)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from metagait_edge.runtime.camera import build_recognizer
    from metagait_edge.runtime.personalizer import ANGLE_CHANNELS, load_personalizer
    from metagait_edge.runtime.safety import SafetyConfig, SafetyEnvelope

    torch.set_num_threads(1)
    out: dict = {}

    overshoot = []
    end = time.monotonic() + args.jitter_seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        time.sleep(0.001)
        overshoot.append((time.perf_counter() - t - 0.001) * 1e3)
    d = np.asarray(overshoot)
    out["sleep_1ms_overshoot_ms"] = {"n": int(d.size), "p50": float(np.percentile(d, 50)),
                                     "p99": float(np.percentile(d, 99)), "max": float(d.max())}

    eager, fast = load_personalizer(), load_personalizer()
    fast.use_backend("onnxruntime")
    build_recognizer()  # the recognition model's objects count too
    gc.collect()
    t = time.perf_counter()
    gc.collect()
    out["full_gc_ms"] = {"objects": len(gc.get_objects()), "ms": (time.perf_counter() - t) * 1e3}

    env = SafetyEnvelope(SafetyConfig())
    phase = np.linspace(0, 2 * np.pi, 101)
    smooth = (20 * np.sin(phase))[None].repeat(6, 0).astype(np.float32)
    rough = (np.random.default_rng(0).standard_normal((6, 101)) * 30).astype(np.float32)
    now = time.monotonic()
    for name, traj in (("smooth", smooth), ("rough", rough)):
        out[f"safety_{name}_ms"] = per_call_ms(lambda: env.apply(traj, ANGLE_CHANNELS, now, now, 1.0, True, 1.1))

    prev = (np.random.default_rng(1).standard_normal((eager.n_channels, 101)) * 0.1).astype(np.float32)
    valid = np.ones(eager.n_channels, bool)
    out["generate_cycle_ms"] = {"torch": per_call_ms(lambda: eager.generate(prev, None, valid)),
                                "onnxruntime": per_call_ms(lambda: fast.generate(prev, None, valid))}
    out["generate_max_abs_diff"] = float(np.abs(eager.generate(prev, None, valid) - fast.generate(prev, None, valid)).max())

    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
