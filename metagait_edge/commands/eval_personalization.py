"""``metagait-edge eval-personalization``: MAML-TCN against every baseline on held-out HuGaDB walkers."""

from __future__ import annotations

import argparse

NAME = "eval-personalization"
HELP = "evaluate few-shot gait personalization (MSE, DTW; 1- and 5-shot; generation and reconstruction)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="CI-sized run: shipped checkpoint, few tasks")
    parser.add_argument("--json", metavar="PATH", help="write machine-readable results here")
    parser.add_argument("--checkpoints", help="checkpoint root (default: the shipped checkpoint)")
    parser.add_argument("--config", help="experiment YAML every checkpoint must match (default: each problem's "
                        "stored config; data, split, protocol and masking must agree)")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds")
    parser.add_argument("--folds", type=int, nargs="*", help="only these folds (none, with --merge: only merge)")
    parser.add_argument("--out", metavar="MD", help="write the Markdown report here (none without it; the tracked "
                        "reports are docs/results/personalization[_quick].md)")
    parser.add_argument("--plots", metavar="DIR", help="write the cycle and shots plots (PNG) here")
    parser.add_argument("--scores-out", metavar="JSON", help="also save the raw per-query scores, evaluated and merged (to merge later)")
    parser.add_argument("--merge", metavar="JSON", nargs="+", default=[],
                        help="add raw scores saved by other runs (e.g. other folds evaluated in parallel)")
    parser.add_argument("--note", action="append", default=[], help="a line for the report's notes (provenance)")
    parser.add_argument("--notes", metavar="MD", help="a Markdown file whose paragraphs (separated by blank lines) "
                        "follow the --note lines in the report's notes")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--cycles", metavar="NPZ", help="use this saved cycle set instead of HuGaDB (tests, custom data)")
    parser.add_argument("--masking", choices=("mixed", "sparse", "sensors"), default="mixed",
                        help="reconstruction inputs: as trained (a random kind per cycle) or every cycle sparse "
                             "(few samples) / sensors (whole IMUs missing)")
    parser.add_argument("--settle", type=int, default=0, metavar="STRIDES",
                        help="skip this many strides at the start of each walk before the support (as the runtime's "
                             "calibration.settle_strides does); queries stay where they are")
    parser.add_argument("--problems", nargs="+", choices=("generation", "reconstruction"),
                        help="only these problems (default: all the checkpoints have)")
    parser.add_argument("--continual", action="store_true",
                        help="evaluate continual personalization instead: the share of the pooled-to-reference gap "
                             "closed after 5..200 strides walked (JSON key 'continual'; --out: its report, "
                             "--plots: its curve)")
    parser.add_argument("--no-progress", action="store_true")


def _config_from_checkpoints(root):
    from metagait_edge.personalization.experiment import stored_config
    from metagait_edge.personalization.runner import available_runs, fold_dir

    runs = available_runs(root)
    if not runs:
        raise FileNotFoundError(f"no trained personalization checkpoints under {root}")
    seed, fold = runs[0]
    problem_dir = next(p for p in sorted(fold_dir(root, seed, fold).iterdir()) if (p / "maml.json").is_file())
    return stored_config(problem_dir)


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys
    import time
    from pathlib import Path

    import torch

    from metagait_edge.config import load_config
    from metagait_edge.personalization import report as R
    from metagait_edge.personalization.config import PersonalizationConfig
    from metagait_edge.personalization.runner import DEFAULT_CHECKPOINTS, evaluate, provenance

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    root = Path(args.checkpoints) if args.checkpoints else DEFAULT_CHECKPOINTS
    if args.continual:  # each generation checkpoint loads with its own stored config
        return _run_continual(args, root, t0)
    config = load_config(PersonalizationConfig, args.config) if args.config else _config_from_checkpoints(root)
    payload = evaluate(config, root, args.quick, args.seeds, args.folds, progress=not args.no_progress,
                       plots_dir=Path(args.plots) if args.plots else None,
                       cycles_path=Path(args.cycles) if args.cycles else None, strict_config=bool(args.config),
                       scores_out=Path(args.scores_out) if args.scores_out else None, merge=[Path(m) for m in args.merge],
                       masking=args.masking, problems=args.problems, settle=args.settle)
    command = "metagait-edge " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "metagait-edge eval-personalization"
    written = []
    if args.out:  # a report only where asked: a quick check must not rewrite the tracked docs/results/
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        notes = list(args.note)
        if args.notes:
            notes += R.paragraphs(Path(args.notes))
        R.write_markdown(out, payload, command, provenance(), notes=R.DESIGN_NOTES + tuple(f"- {n}" for n in notes))
        written.append(str(out))
    if args.json:
        R.write_json(Path(args.json), payload)
        written.append(args.json)
    print()
    print("\n".join(R.verdict(payload["results"], payload.get("per_walker"))))
    for problem, by_shots in payload["results"].items():
        for shots, cell in sorted(by_shots.items()):
            row = "  ".join(f"{m}={e['mse']:.3f}" for m, e in cell.items() if m != "gap_closed")
            print(f"{problem:14s} {shots}-shot MSE  {row}")
    print(f"\n{'wrote ' + ' and '.join(written) if written else 'no report written (--out MD, --json PATH)'} "
          f"in {time.perf_counter() - t0:.0f} s")
    return 0


def _run_continual(args: argparse.Namespace, root, t0: float) -> int:
    import shlex
    import sys
    import time
    from pathlib import Path

    from metagait_edge.personalization import continual_report as CR
    from metagait_edge.personalization.continual_eval import evaluate_runs
    from metagait_edge.personalization.runner import provenance

    payload = evaluate_runs(root, args.quick, args.seeds, args.folds, progress=not args.no_progress,
                            cycles_path=Path(args.cycles) if args.cycles else None)
    command = "metagait-edge " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else \
        "metagait-edge eval-personalization --continual"
    written = []
    if args.plots:
        CR.plot_curve(Path(args.plots) / "personalization_continual.png", payload["continual"],
                      payload.get("continual_name_order"))
        written.append(str(Path(args.plots) / "personalization_continual.png"))
    if args.out:
        CR.write_markdown(Path(args.out), payload, command, provenance())
        written.append(args.out)
    if args.json:
        CR.write_json(Path(args.json), payload)
        written.append(args.json)
    print()
    print("\n".join(CR.verdict(payload["continual"], "Walk up to the future: ")
                    + CR.verdict(payload["continual_name_order"], "Name order: ")))
    print(f"\n{'wrote ' + ' and '.join(written) if written else 'no report written (--out MD, --json PATH)'} "
          f"in {time.perf_counter() - t0:.0f} s")
    return 0
