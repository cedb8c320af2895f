"""``metagait-edge train-recognition``: train MetaGait (or the Table 4 ablation variants) from a YAML config."""

from __future__ import annotations

import argparse

NAME = "train-recognition"
HELP = "train the MetaGait recognition model from training/configs/recognition_*.yaml (torchrun works too)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="recognition config YAML (training/configs/recognition_*.yaml)")
    parser.add_argument("--out", default=None, help="output folder (default: the config's output_dir)")
    parser.add_argument("--iterations", type=int, default=None, help="override train.iterations")
    parser.add_argument("--ablation", action="store_true",
                        help="train the variants baseline, mta, mtp, metagait and evaluate each on the test ids")
    parser.add_argument("--variants", default="baseline,mta,mtp,metagait", help="variants for --ablation")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds for --ablation (default 0)")
    parser.add_argument("--ship", default=None,
                        help="with --ablation: copy each variant's first-seed checkpoint into this folder "
                             "(e.g. metagait_edge/resources/checkpoints/recognition)")
    parser.add_argument("--quick", action="store_true",
                        help="with --ablation: evaluate each run on the quick test set (data.synthetic.test_ids "
                             "identities) instead of the full one")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected comma-separated integers") from None


def run(args: argparse.Namespace) -> int:
    import torch

    from metagait_edge import distributed as D
    from metagait_edge.recognition.config import load_recognition_config

    cfg = load_recognition_config(args.config)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    try:
        if args.ablation:
            from metagait_edge.recognition.evaluate import run_ablation

            variants = [v.strip() for v in args.variants.split(",") if v.strip()]
            summary = run_ablation(cfg, variants, _ints(args.seeds, "--seeds"), out_dir=args.out,
                                   iterations=args.iterations, ship_dir=args.ship, progress=not args.no_progress,
                                   quick=args.quick)
            print(summary["table"])
        else:
            from metagait_edge.recognition.train import train

            result = train(cfg, args.out, iterations=args.iterations, progress=not args.no_progress)
            if result.checkpoint is not None:
                print(f"trained {cfg.name} ({cfg.variant}) for {result.iterations} iterations in "
                      f"{result.seconds:.0f} s: loss {result.first_loss:.3f} -> {result.last_loss:.3f}; "
                      f"checkpoint {result.checkpoint}")
    finally:
        D.cleanup()
    return 0
