"""``metagait-edge eval-recognition``: evaluate the shipped recognition checkpoints (ablation variants).

Prints the results; with ``--markdown`` writes the results document (the tracked one is
``docs/results/recognition.md``, made by ``--quick --markdown docs/results/recognition.md``) and, with
``--json``, ``{"dataset": str, "results": {variant: {"NM", "BG", "CL", "mAP"}}}`` (rank-1 and mAP in
percent; ``mAP`` is the mean of the three conditions').
"""

from __future__ import annotations

import argparse

NAME = "eval-recognition"
HELP = "evaluate the shipped MetaGait checkpoints (baseline, +MTA, +MTP, MetaGait): rank-1, mAP, open-set FAR/FRR"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="small test set (data.synthetic.test_ids identities) instead of the full one")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--markdown", "--out", default=None, metavar="PATH",
                        help="write the results document here (none without it; the tracked one is "
                             "docs/results/recognition.md)")
    parser.add_argument("--checkpoints", default=None, metavar="DIR",
                        help="folder with <variant>.safetensors + .json (default: the shipped checkpoints)")
    parser.add_argument("--variants", default="baseline,mta,mtp,metagait", help="variants to evaluate")
    parser.add_argument("--data-config", default=None, metavar="YAML",
                        help="SyntheticDataConfig keys replacing the checkpoints' data.synthetic (e.g. a smaller "
                             "test set); identity ranges stay disjoint from the training ids of that config")
    parser.add_argument("--no-profile", action="store_true", help="skip the model size / latency table")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import time
    from pathlib import Path

    import torch

    from metagait_edge.atomic import atomic_write_text
    from metagait_edge.config import load_config
    from metagait_edge.recognition.metrics import format_result
    from metagait_edge.recognition import shipped_checkpoint_dir
    from metagait_edge.recognition import evaluate as E
    from metagait_edge.recognition.data import SyntheticDataConfig
    from metagait_edge.recognition.report import write_report
    from metagait_edge.recognition.train import load_model

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ckpt_dir = Path(args.checkpoints) if args.checkpoints else shipped_checkpoint_dir()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in E.VARIANTS]
    if unknown or not variants:
        raise ValueError(f"--variants: unknown variant(s) {unknown}; allowed: {', '.join(E.VARIANTS)}")
    models, configs = {}, {}
    for v in variants:
        path = ckpt_dir / f"{v}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint for variant {v!r} not found: {path} (train them with "
                                    f"`metagait-edge train-recognition --config ... --ablation --ship {ckpt_dir}`)")
        models[v], configs[v] = load_model(path)
    data_cfgs = {v: c.data for v, c in configs.items()}
    first = variants[0]
    differing = [v for v in variants if data_cfgs[v] != data_cfgs[first]]
    if differing:
        raise ValueError(f"checkpoints in {ckpt_dir} were trained on different data: {first} vs {', '.join(differing)}")
    data = data_cfgs[first]
    if args.data_config:
        if data.dataset != "synthetic":
            raise ValueError(f"--data-config replaces synthetic data settings, but the checkpoints were trained on "
                             f"{data.dataset}")
        data = dataclasses.replace(data, synthetic=load_config(SyntheticDataConfig, args.data_config))
    quick = bool(args.quick)
    val_index, test_index = E.test_indices(data, quick=quick)
    frames = {"test": E.load_frames(test_index), "val": E.load_frames(val_index) if val_index is not None else None}
    evals = {}
    for v in variants:
        evals[v] = E.evaluate_model(models[v], configs[v], val_index, test_index, progress=True, name=v,
                                    frames=frames)
    dataset = E.describe_test_set(data, quick)
    shown = "metagait" if "metagait" in evals else variants[-1]
    print(format_result(evals[shown]["result"], full_tables=True))
    print()
    for v in variants:
        s = evals[v]["summary"]
        line = f"{v:9s} NM {s['NM']:5.1f}  BG {s['BG']:5.1f}  CL {s['CL']:5.1f}  mAP {s['mAP']:5.1f}"
        if "open_set" in evals[v]:
            o = evals[v]["open_set"]
            line += f"   open set: FAR {o.far:4.1f}%  FRR {o.frr:4.1f}%  EER {o.eer:4.1f}%"
        print(line)
    payload = {"dataset": dataset, "results": {v: evals[v]["summary"] for v in variants}}
    if args.json:
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.markdown:
        profiles = None if args.no_profile else {v: E.profile_model(models[v]) for v in variants}
        write_report(args.markdown, evals, configs, ckpt_dir, dataset=dataset, quick=quick, profiles=profiles,
                     seconds=time.perf_counter() - t0)
        print(f"wrote {args.markdown}")
    print(f"eval-recognition ({'quick' if quick else 'full'}) took {time.perf_counter() - t0:.0f} s")
    return 0
