"""Train the shipped gait-phase / locomotion-mode estimators (issue 17) on HuGaDB.

    METAGAIT_DATA=/work/shared/data .venv/bin/python training/train_phase.py --config training/configs/phase.yaml [--folds 0 1 2] [--all]

One ``PhaseNet`` per personalization fold (train walkers -> weights, validation walkers -> epoch choice;
the fold's test walkers are never seen) in ``metagait_edge/resources/phase/fold<k>.safetensors`` (+ .json),
used by ``metagait-edge eval-phase``; ``--all`` also trains one on all 18 walkers (``all.safetensors``,
for the runtime; no validation walkers, so its last epoch is kept). Folds can train in separate processes
(``--folds 0 1`` and ``--folds 2 --all`` side by side on 2 cores). ``--config`` names the network and its
training (``PhaseExperiment``: keys checked, unknown ones fail); without it, the first shipped set-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time

from metagait_edge.checkpoint import save_checkpoint
from metagait_edge.data.hugadb import HuGaDB
from metagait_edge.phase.dataset import load_recordings
from metagait_edge.phase.folds import phase_folds
from metagait_edge.phase.model import RESOURCE_DIR
from metagait_edge.config import load_config
from metagait_edge.phase.train import PhaseExperiment, train_phase_net


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--all", action="store_true", help="also train on all walkers (the runtime's weights)")
    ap.add_argument("--config", default=None, help="a PhaseExperiment YAML (training/configs/phase.yaml)")
    ap.add_argument("--epochs", type=int, default=None, help="overrides the config's train.epochs")
    ap.add_argument("--windows-per-epoch", type=int, default=None)
    ap.add_argument("--seed", type=int, default=None,
                    help="overrides the config's train.seed; the weights are then named <fold>.seed<N> (another member "
                         "of the fold's ensemble, phase.model.load_phase_ensemble) unless N is the config's seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESOURCE_DIR))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    exp = load_config(PhaseExperiment, args.config) if args.config else PhaseExperiment()
    cfg = dataclasses.replace(exp.train, threads=args.threads,
                              **({"epochs": args.epochs} if args.epochs is not None else {}),
                              **({"seed": args.seed} if args.seed is not None else {}),
                              **({"windows_per_epoch": args.windows_per_epoch} if args.windows_per_epoch is not None else {}))
    net = exp.net
    db = HuGaDB.open()
    recs = load_recordings(db)
    t0 = time.time()
    summary = []
    jobs = [(f"fold{k}", phase_folds()[k]) for k in args.folds]
    if args.all:
        jobs.append(("all", {"train": sorted({r.subject for r in recs}), "val": [], "test": []}))
    for name, split in jobs:
        train = [r for r in recs if r.subject in split["train"]]
        val = [r for r in recs if r.subject in split["val"]]
        model, history = train_phase_net(train, val, cfg, net, desc=f"train {name}")
        member = name if args.seed is None or args.seed == exp.train.seed else f"{name}.seed{args.seed}"
        path = save_checkpoint(f"{args.out}/{member}", model, net,
                               extra={"split": split, "train_config": dataclasses.asdict(cfg), "history": history,
                                      "command": " ".join(["training/train_phase.py"] + sys.argv[1:])})
        if val:
            best = min(history, key=lambda h: h["val_phase_loss"])
            summary.append(f"{name}: {path} ({len(train)} train files, kept epoch {best['epoch']}: {best})")
        else:
            summary.append(f"{name}: {path} ({len(train)} train files, no validation walkers, kept the last epoch: "
                           f"{history[-1]})")
    print(f"trained {len(jobs)} model(s) in {time.time() - t0:.0f} s")
    for line in summary:
        print("  " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
