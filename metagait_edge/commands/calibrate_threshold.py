"""``metagait-edge calibrate-threshold``: fit each recognition checkpoint's open-set threshold on its validation
identities and store it in the checkpoint's JSON sidecar (``metagait_edge.recognition.calibration``).

Rerun it after every retraining: identification refuses weights whose sidecar holds no threshold fitted for
them. ``--test`` also measures each threshold, unchanged, on the (quick) test identities; ``--markdown`` writes
the report (the tracked one is ``docs/results/recognition_threshold.md``).
"""

from __future__ import annotations

import argparse

NAME = "calibrate-threshold"
HELP = "fit the open-set threshold of recognition checkpoints on their validation identities (stored in the sidecar)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from metagait_edge.recognition.calibration import DEFAULT_MODE, DEFAULT_TARGET_FAR

    parser.add_argument("--checkpoint", action="append", default=None, metavar="PATH",
                        help="a checkpoint (<x>.safetensors + <x>.json); repeat for several "
                             "(default: every shipped recognition checkpoint)")
    parser.add_argument("--target-far", type=float, default=DEFAULT_TARGET_FAR,
                        help=f"false accept rate allowed on the validation impostors, 0-1 (default {DEFAULT_TARGET_FAR})")
    parser.add_argument("--mode", choices=("all", "mean"), default=DEFAULT_MODE,
                        help="gallery templates the threshold is fitted for: every enrolled sequence (all, as "
                             "`metagait-edge enroll` stores them) or one mean per walker")
    parser.add_argument("--dry-run", action="store_true", help="fit and print, do not write the sidecars")
    parser.add_argument("--test", action="store_true",
                        help="also measure each fitted threshold on the quick test identities")
    parser.add_argument("--full-test", action="store_true", help="with --test: the full test identity set")
    parser.add_argument("--markdown", "--out", default=None, metavar="PATH", help="write the report here")
    parser.add_argument("--machine", default="2-vCPU Debian 12 VM, CPU only", help="machine named in the report")


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys
    import time
    from pathlib import Path

    import torch
    from tqdm import tqdm

    from metagait_edge.atomic import atomic_write_text
    from metagait_edge.recognition import SHIPPED_VARIANTS, shipped_checkpoint_dir
    from metagait_edge.recognition import calibration as C

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if not 0.0 <= args.target_far <= 1.0:
        raise ValueError(f"--target-far must be in [0, 1], got {args.target_far}")
    paths = [Path(p) for p in args.checkpoint] if args.checkpoint else [
        shipped_checkpoint_dir() / f"{v}.safetensors" for v in SHIPPED_VARIANTS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"recognition checkpoint(s) not found: {', '.join(missing)}")
    command = "metagait-edge " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else NAME
    rows = []
    for path in tqdm(paths, desc="calibrate", unit="checkpoint"):
        record, model, cfg = C.calibrate_checkpoint(path, args.target_far, mode=args.mode, write=not args.dry_run,
                                                    command=command)
        row = {"name": path.name, "record": record}
        if args.test:
            row["test"] = C.evaluate_on_test(model, cfg.data, record, quick=not args.full_test)
        rows.append(row)
        tested = (f"; test FAR {100 * row['test']['far']:.1f} % FRR {100 * row['test']['frr']:.1f} %"
                  if args.test else "")
        print(f"{path.name}: threshold {record.describe()}{tested}"
              f"{' (dry run: sidecar unchanged)' if args.dry_run else ''}")
    seconds = time.perf_counter() - t0
    if args.markdown:
        atomic_write_text(args.markdown, C.markdown(rows, command, args.machine, seconds))
        print(f"report: {args.markdown}")
    print(f"calibrated {len(rows)} checkpoint(s) for FAR {100 * args.target_far:g} % ({args.mode} templates) "
          f"in {seconds:.0f} s{'; sidecars unchanged (dry run)' if args.dry_run else ''}")
    return 0
