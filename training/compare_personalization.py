"""Compare personalization results (``eval-personalization --json`` files) side by side.

    python training/compare_personalization.py mse=runs/v3_s0.json sdtw=runs/v4_s0.json --out docs/results/x.md

Prints (and with ``--out`` writes) one Markdown table: for each problem, shot count and metric, MAML-TCN
and the best baseline of every result, MAML-TCN in bold where it beats that baseline.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from metagait_edge.atomic import atomic_write_text
from metagait_edge.personalization.report import comparison_table


def parse_run(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=PATH, got {text!r}")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"results file not found: {path}")
    return label, Path(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=parse_run, metavar="LABEL=JSON")
    ap.add_argument("--out", type=Path, help="also write the table (Markdown) here")
    ap.add_argument("--title", default="Personalization: results compared")
    args = ap.parse_args(argv)
    runs = {label: json.loads(path.read_text()) for label, path in args.runs}
    for label, payload in runs.items():
        if "results" not in payload:
            raise SystemExit(f"{label}: {dict(args.runs)[label]} is not an eval-personalization --json file (no 'results')")
    lines = [f"# {args.title}", "", *comparison_table(runs), ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
