"""``metagait-edge train-personalization``: train the pooled TCN, tune baselines, meta-train MAML-TCN."""

from __future__ import annotations

import argparse

NAME = "train-personalization"
HELP = "train the few-shot gait personalization models on HuGaDB (folds x seeds); torchrun-ready"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="training/configs/personalization.yaml", help="experiment YAML")
    parser.add_argument("--out", default="runs/personalization", help="checkpoint root (seed<s>/fold<k>/...)")
    parser.add_argument("--folds", type=int, nargs="+", default=[0], help="folds to train (default: 0)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: 0)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--cycles", metavar="NPZ", help="use this saved cycle set instead of HuGaDB (tests, custom data)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import torch

    from metagait_edge import distributed
    from metagait_edge.config import load_config
    from metagait_edge.personalization.config import PersonalizationConfig
    from metagait_edge.personalization.runner import train

    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(PersonalizationConfig, args.config)
    info = distributed.init_from_env()
    t0 = time.perf_counter()
    train(config, Path(args.out), args.folds, args.seeds, progress=not args.no_progress,
          cycles_path=Path(args.cycles) if args.cycles else None)
    if info.is_main:
        print(f"trained folds {args.folds} x seeds {args.seeds} in {time.perf_counter() - t0:.0f} s "
              f"(world size {info.world_size}, device {info.device}); checkpoints under {args.out}")
    distributed.cleanup()
    return 0
