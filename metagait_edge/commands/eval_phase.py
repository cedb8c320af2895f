"""``metagait-edge eval-phase``: causal gait phase and locomotion mode on held-out HuGaDB walkers (issue 17)."""

from __future__ import annotations

import argparse

NAME = "eval-phase"
HELP = "score the gait-phase / locomotion-mode estimator and the time-since-heel-strike baseline on held-out walkers"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="every fourth held-out file, fewer latency samples (minutes)")
    p.add_argument("--json", metavar="PATH", help="write the machine-readable summary here")
    p.add_argument("--report", metavar="PATH", help="write the Markdown report here (e.g. docs/results/phase.md)")
    p.add_argument("--plot", metavar="PATH", help="write the transition plot here (e.g. docs/img/phase_transition.png)")
    p.add_argument("--weights", metavar="DIR", help="folder with fold<k>.safetensors (default: the shipped ones)")
    p.add_argument("--folds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--mode-alpha", type=float, default=None,
                   help="causal exponential smoothing of the mode probabilities (1 = none; default: per fold, "
                        "the most accurate on its validation walkers)")
    p.add_argument("--validation", action="store_true",
                   help="score each fold's validation walkers instead of its test walkers: how set-ups are chosen "
                        "(training/configs/phase.yaml), never how they are reported")
    p.add_argument("--machine", default="2-vCPU Debian 12 VM, no GPU", help="machine named in the report")


def run(args: argparse.Namespace) -> int:
    import datetime as dt
    import json
    import os
    import shlex
    import sys
    import time

    from metagait_edge.data.hugadb import HuGaDB
    from metagait_edge.phase.model import RESOURCE_DIR
    from metagait_edge.phase.report import machine_summary, render
    from metagait_edge.phase.run import evaluate_phase, plot_trace

    t0 = time.time()
    db = HuGaDB.open()
    summary, trace = evaluate_phase(db, args.weights or RESOURCE_DIR, quick=args.quick, folds=args.folds,
                                    mode_alpha=args.mode_alpha, walkers="val" if args.validation else "test")
    out = machine_summary(summary)
    out["seconds"] = round(time.time() - t0, 1)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    plot = None
    if args.plot and trace:
        plot = str(plot_trace(trace, args.plot))
    if args.report:
        rel = os.path.relpath(plot, os.path.dirname(os.path.abspath(args.report))) if plot else None
        cmd = "metagait-edge " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["eval-phase"] else \
            "metagait-edge eval-phase"
        text = render(summary, cmd, args.machine, dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"), rel)
        with open(args.report, "w", encoding="utf-8") as f:
            f.write(text)
    ph, bl = out["phase_rmse_pct"], out["baseline_phase_rmse_pct"]
    kind = "validation" if args.validation else "held-out test"
    print(f"eval-phase: {summary['files']} {kind} files of {len(summary['subjects'])} walkers in {out['seconds']:.0f} s")
    for m in ph:
        print(f"  phase RMSE {m:12s} learned {ph[m]:6.2f} %   baseline {bl[m]:6.2f} %")
    h = summary["hs_timing_ms"]
    print(f"  heel strike |error| median: learned {h['learned']['median_abs']:.1f} ms, baseline {h['baseline']['median_abs']:.1f} ms")
    d = summary["mode_switch_delay"]
    print(f"  mode accuracy {out['mode_accuracy']:.4f}; switch delay median {d['median_strides']:.2f} strides; "
          f"latency p99 {out['latency_ms_p99']:.3f} ms")
    return 0

