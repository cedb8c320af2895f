"""The continual personalization results (``continual_eval``) as JSON, a Markdown report and a curve plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List

from metagait_edge.atomic import atomic_write_text
from metagait_edge.personalization.report import degree_headers, format_degrees, report_opening

GOALS = {100: 0.5, 200: 0.8}  # issue 17: share of the gap closed after this many strides


def write_json(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=float) + "\n")


def _pct(fraction: float) -> str:
    return "n/a" if fraction is None or not math.isfinite(fraction) else f"{round(100 * fraction)} %"


def verdict(continual: dict) -> List[str]:
    """Plain statements of the goals met and missed, with the numbers."""
    rows = {r["strides"]: r for r in continual["points"]}
    lines = []
    for strides, goal in GOALS.items():
        row = rows.get(strides, {})
        if not row.get("walkers"):
            lines.append(f"- After {strides} strides: no held-out walker walked that far; the goal (>= {_pct(goal)}) "
                         f"is not measured.")
            continue
        got = row["gap_closed"]
        word = "meets" if math.isfinite(got) and got >= goal else "does NOT meet"
        lines.append(f"- After {strides} strides ({row['walkers']} walkers): {_pct(got)} of the gap between the pooled "
                     f"model and the personal reference closed; {word} the goal of >= {_pct(goal)}.")
    worse = continual["walkers_worse_than_pooled"]
    lines.append(f"- Walkers ever worse than the pooled model (at any point of the curve): {worse} of "
                 f"{len(continual['per_walker'])}" + (" (goal: none)." if worse else " (goal met: none)."))
    up = continual["updates"]
    lines.append(f"- Updates: {up['accepted']} accepted, {up['rejected']} rejected (rolled back); wall time per update "
                 f"{up['ms_median']:.0f} ms median, {up['ms_p95']:.0f} ms p95 on one thread of the evaluating machine "
                 f"(CPU time per update: docs/BENCHMARKS.md, `python benchmarks/bench_continual.py`).")
    return lines


def _curve_table(continual: dict) -> List[str]:
    lines = ["| strides walked | walkers | pooled model MSE | learner MSE | personal reference MSE | gap closed | "
             "walkers worse than pooled |", "|---|---|---|---|---|---|---|"]
    for r in continual["points"]:
        if not r.get("walkers"):
            lines.append(f"| {r['strides']} | 0 | n/a | n/a | n/a | n/a | n/a |")
            continue
        lines.append(f"| {r['strides']} | {r['walkers']} | {r['mse_pooled']:.4f} | {r['mse_learner']:.4f} | "
                     f"{r['mse_reference']:.4f} | {_pct(r['gap_closed'])} | {r['walkers_worse']} |")
    return lines


def _degree_table(continual: dict) -> List[str]:
    lines = ["| strides walked | model | " + " | ".join(degree_headers()) + " |",
             "|---|---|" + "---|" * len(degree_headers())]
    for r in continual["points"]:
        if not r.get("walkers"):
            continue
        for label, key in (("pooled model", "deg_pooled"), ("learner", "deg_learner"),
                           ("personal reference", "deg_reference")):
            lines.append(f"| {r['strides']} | {label} | {format_degrees(r[key])} |")
    return lines


def _walker_table(continual: dict) -> List[str]:
    points = continual["strides"]
    lines = ["| walker | strides walked | pooled | reference | " + " | ".join(f"learner @ {n}" for n in points)
             + " | updates accepted / rejected |", "|---|---|---|---|" + "---|" * len(points) + "---|"]
    for w in continual["per_walker"]:
        gap = w["pooled"]["mse"] - w["reference"]["mse"]
        cells = []
        for n in points:
            p = w["points"].get(n, w["points"].get(str(n)))
            if p is None:
                cells.append("-")
                continue
            closed = (w["pooled"]["mse"] - p["mse"]) / gap if gap > 0 else math.nan
            cells.append(f"{p['mse']:.4f} ({_pct(closed)})")
        lines.append(f"| {w['subject']} | {w['strides_walked']} | {w['pooled']['mse']:.4f} | {w['reference']['mse']:.4f} | "
                     + " | ".join(cells) + f" | {w['accepted']} / {w['rejected']} |")
    return lines


def write_markdown(path: Path, payload: dict, command: str, provenance: Dict[str, str],
                   plot: str = "../img/personalization_continual.png") -> None:
    p, c = payload["protocol"], payload["continual"]
    cfg = p["continual"]
    lines = report_opening("Continual gait personalization on HuGaDB", command, provenance) + [
        f"- Walkers: the held-out test walkers of the runs (seed, fold) {p['runs']} (checkpoints: {p['checkpoints']}); "
        "each walker's walking segments (walking files and the walking parts of the 'various' files) joined in "
        "file-name order into one walk (HuGaDB gives no time order between files)."
        + (" Quick: the first walkers of the first run only." if p.get("quick") else ""),
        f"- Future strides: the last {p['queries']} strides of the walk (each with its true predecessor), never seen "
        "by the learner; every score is the masked MSE of generating them from their predecessor (normalized "
        "channels, mean over walkers).",
        f"- Learner: after {p['calibration_shots']} strides the pooled model with their mean as template; from the next "
        f"stride on the few-shot calibration (MAML adapted on the {p['calibration_shots']} strides) if it predicts that "
        f"stride better, as the runtime's calibration validates on a held-out stride; then every "
        f"{cfg['every_strides']} strides an update on a buffer of the last "
        f"{cfg['buffer_strides']} strides: the template grows to the mean of "
        + (f"the last {cfg['template_strides']} strides" if cfg.get("template_strides") else "every stride walked")
        + "; the weights are the current ones or the pooled model's, whichever does better, "
        + (f"with the output head refitted in closed form (ridge {cfg['ridge']:g} towards the current head)"
           if cfg.get("ridge") else "the output head not refitted (ridge 0)")
        + f"; the update is accepted only if it beats the current state and the pooled model on the newest "
        f"{cfg['holdout_strides']} strides (held out from it), else rolled back. Settings chosen on the fold's "
        "validation walkers, never on these.",
        f"- Pooled model: the network trained on all training walkers, not adapted, with the mean of the walker's first "
        f"{p['calibration_shots']} strides as template (the 5-shot table's pooled baseline).",
        "- Personal reference: the pooled model trained further on every walking stride of the walker outside the "
        "future strides (hundreds), with their mean as template (as in the few-shot report).",
        "- Gap closed after n strides: (pooled MSE - learner MSE) / (pooled MSE - reference MSE), from the means over "
        "the walkers whose walk reaches n strides. Joint angles: RMSE in degrees per joint (IMU-derived estimates), "
        "mean over walkers of per-walker RMSE.",
        "",
        "## Verdict",
        "",
        *verdict(c),
        "",
        "## Gap closed while walking",
        "",
        *_curve_table(c),
        "",
        f"![gap closed versus strides walked]({plot})",
        "",
        "## Joint-angle RMSE (degrees)",
        "",
        *_degree_table(c),
        "",
        "## Per walker (MSE; share of that walker's gap closed)",
        "",
        *_walker_table(c),
        "",
    ]
    atomic_write_text(path, "\n".join(lines))


def plot_curve(path: Path, continual: dict) -> None:
    from metagait_edge.plots import save_figure, subplots

    fig, ax = subplots(figsize=(6, 4))
    rows = [r for r in continual["points"] if r.get("walkers")]
    ax.plot([r["strides"] for r in rows], [100 * r["gap_closed"] for r in rows], marker="o", lw=2, label="mean")
    for w in continual["per_walker"]:
        gap = w["pooled"]["mse"] - w["reference"]["mse"]
        if gap <= 0:
            continue
        pts = sorted((int(n), 100 * (w["pooled"]["mse"] - p["mse"]) / gap) for n, p in w["points"].items())
        ax.plot([n for n, _ in pts], [v for _, v in pts], lw=0.8, alpha=0.6, label=f"walker {w['subject']}")
    for strides, goal in GOALS.items():
        ax.plot([strides], [100 * goal], marker="*", color="red", ms=10, ls="none")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("strides walked")
    ax.set_ylabel("gap to the personal reference closed (%)")
    ax.set_title("Continual personalization, held-out walkers (red: goals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path, dpi=90)
