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


def verdict(continual: dict, label: str = "") -> List[str]:
    """Plain statements of the goals met and missed, with the numbers."""
    rows = {r["strides"]: r for r in continual["points"]}
    lines = []
    for strides, goal in GOALS.items():
        row = rows.get(strides, {})
        if not row.get("walkers"):
            lines.append(f"- {label}After {strides} strides: no held-out walker walked that far; the goal "
                         f"(>= {_pct(goal)}) is not measured.")
            continue
        got = row["gap_closed"]
        word = "meets" if math.isfinite(got) and got >= goal else "does NOT meet"
        lines.append(f"- {label}After {strides} strides ({row['walkers']} walkers): {_pct(got)} of the gap between the "
                     f"pooled model and the personal reference closed; {word} the goal of >= {_pct(goal)}.")
    worse = continual["walkers_worse_than_pooled"]
    lines.append(f"- {label}Walkers ever worse than the pooled model (at any point of the curve): {worse} of "
                 f"{len(continual['per_walker'])}" + (" (goal: none)." if worse else " (goal met: none)."))
    return lines


def _updates(continual: dict) -> str:
    up = continual["updates"]
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(up.get("accepted_kinds", {}).items(), key=lambda kv: -kv[1]))
    return (f"- Updates: {up['accepted']} accepted ({kinds}), {up['rejected']} rejected (rolled back); wall time per "
            f"update {up['ms_median']:.0f} ms median, {up['ms_p95']:.0f} ms p95 on one thread of the evaluating machine "
            f"(CPU time per update: docs/BENCHMARKS.md, `python benchmarks/bench_continual.py`).")


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


def _get(d: dict, n):
    return d.get(n, d.get(str(n)))


def _walker_table(continual: dict) -> List[str]:
    points = continual["strides"]
    lines = ["| walker | strides walked | reference | " + " | ".join(f"@ {n}: learner / pooled" for n in points)
             + " | updates accepted / rejected |", "|---|---|---|" + "---|" * len(points) + "---|"]
    for w in continual["per_walker"]:
        cells = []
        for n in points:
            p, pooled = _get(w["points"], n), _get(w.get("pooled_points", {}), n)
            if p is None or pooled is None:
                cells.append("-")
                continue
            gap = pooled["mse"] - w["reference"]["mse"]
            closed = (pooled["mse"] - p["mse"]) / gap if gap > 0 else math.nan
            cells.append(f"{p['mse']:.4f} / {pooled['mse']:.4f} ({_pct(closed)})")
        lines.append(f"| {w['subject']} | {w['strides_walked']} | {w['reference']['mse']:.4f} | " + " | ".join(cells)
                     + f" | {w['accepted']} / {w['rejected']} |")
    return lines


def _diagnosis_table(continual: dict, name_order: dict) -> List[str]:
    """Per walker: how much of its name-order gap the reference's template alone closes, and when the name-order
    walk reaches the future strides' recording."""
    lines = ["| walker | strides walked | of them in the future's recording (the last ones) | pooled (first 5 strides' "
             "template) | pooled weights, reference's template | personal reference | gap closed by the template alone |",
             "|---|---|---|---|---|---|---|"]
    for w in name_order["per_walker"]:
        pooled = _get(w["pooled_points"], min(int(k) for k in w["pooled_points"]))["mse"]
        tmpl, ref = w["pooled_reference_template"]["mse"], w["reference"]["mse"]
        closed = (pooled - tmpl) / (pooled - ref) if pooled > ref else math.nan
        lines.append(f"| {w['subject']} | {w['strides_walked']} | {w['same_recording_strides']} | {pooled:.4f} | "
                     f"{tmpl:.4f} | {ref:.4f} | {_pct(closed)} |")
    return lines


def _learner_text(p: dict) -> str:
    cfg = p["continual"]
    grown = (f"the last {cfg['template_strides']} strides" if cfg.get("template_strides") else "every stride walked "
             "since calibration (the calibration's template counting for its 5 strides)")
    recent = (f", the mean of the last {cfg['recent_strides']} strides" if cfg.get("recent_strides") else "")
    head = (f"; and the best of those with its output head refitted in closed form on the buffer (ridge "
            f"{cfg['ridge']:g} towards the current head)" if cfg.get("ridge") else "; the output head not refitted")
    if cfg.get("grad_steps"):
        head += (f"; the best so far with every weight trained {cfg['grad_steps']} Adam steps (learning rate "
                 f"{cfg.get('grad_lr', 1e-3):g}, {cfg.get('grad_batch', 32)} stride pairs of the buffer per step; an "
                 f"accepted update carries the training on)")
    if cfg.get("residual_prior"):
        head += (f"; the best so far with a per-phase residual added to its output (its mean error over the buffer "
                 f"per channel and sample of the cycle, shrunk as sum / (n + {cfg['residual_prior']:g}) for n strides)")
    majority = (" and beats the current state on more than half of them" if cfg.get("majority") else "")
    session = (f". After a gap between strides (another bout or recording), once the held-out strides all follow "
               f"it: if the current state does worse than the pooled model there by more than "
               f"{100 * cfg['session_jump']:.0f} %, a session change: the learner re-anchors on the strides since the "
               f"gap (pooled weights, their mean as template, the older strides forgotten)"
               if cfg.get("session_jump") else "")
    return (f"- Learner (`personalization.continual.Learner`, the object the runtime's ContinualLearner drives): "
            f"the pooled model with the {p['calibration_shots']} calibration strides' mean as template; from the next "
            f"stride on the few-shot calibration (MAML adapted on them) if it predicts that stride better, as the "
            f"runtime's calibration validates on a held-out stride; then every {cfg['every_strides']} strides an update "
            f"on a buffer of the last {cfg['buffer_strides']} strides. Candidates: the current weights and the pooled "
            f"ones, each with the mean of {grown}{recent} or the calibration's template{head}; the pooled model itself "
            f"(the fallback). The best candidate on the newest {cfg['holdout_strides']} strides (held out from it) is "
            f"accepted only if it beats the current state and the pooled model there{majority}; else rolled back"
            f"{session}. "
            f"Settings chosen on the fold's 3 validation walkers, never on these.")


def write_markdown(path: Path, payload: dict, command: str, provenance: Dict[str, str],
                   plot: str = "../img/personalization_continual.png") -> None:
    p, c = payload["protocol"], payload["continual"]
    old = payload.get("continual_name_order")
    lines = report_opening("Continual gait personalization on HuGaDB", command, provenance) + [
        f"- Walkers: the held-out test walkers of the runs (seed, fold) {p['runs']} (checkpoints: {p['checkpoints']}); "
        "each walker's walking segments (walking files and the walking parts of the 'various' files) joined in "
        "file-name order into one walk (HuGaDB gives no time order between files; every 'various' file comes before "
        "the 'walking' ones)." + (" Quick: the first walkers of the first run only." if p.get("quick") else ""),
        f"- Future strides: the last {p['queries']} strides of the walk (each with its true predecessor), never seen "
        "by the learner; every score is the masked MSE of generating them from their predecessor (normalized "
        "channels, mean over walkers).",
        f"- Walk up to the future (the curve below): for each point n, the walker calibrates on the "
        f"{p['calibration_shots']} strides n strides before the future ones and the learner walks the n - "
        f"{p['calibration_shots']} strides between, in order; then the next strides, the future ones, are scored. "
        "Name order (the previous protocol, second table): one learner calibrated on the walk's first "
        f"{p['calibration_shots']} strides, scored as it walks; there the first hundreds of strides are short walking "
        "bouts of the 'various' recordings and the future strides lie in the last 'walking' recording, often another "
        "session, which the learner has not reached at 100 strides (table 'Diagnosis').",
        _learner_text(p),
        f"- Pooled model: the network trained on all training walkers, not adapted, with the mean of the "
        f"{p['calibration_shots']} calibration strides as template (the 5-shot table's pooled baseline; in the walk up "
        "to the future its template comes from strides n before the future ones, so it changes with n).",
        "- Personal reference: the pooled model trained further on every walking stride of the walker outside the "
        "future strides (hundreds, including the strides just before them), with the mean of the future recording's "
        "other strides as template (as in the few-shot report). A learner that sees only the past cannot use the "
        "strides of other sessions it has not walked yet; the reference can.",
        "- Gap closed after n strides: (pooled MSE - learner MSE) / (pooled MSE - reference MSE), from the means over "
        "the walkers whose walk reaches n strides. Joint angles: RMSE in degrees per joint (IMU-derived estimates), "
        "mean over walkers of per-walker RMSE.",
        "",
        "## Verdict",
        "",
        *verdict(c, "Walk up to the future: "),
        *(verdict(old, "Name order: ") if old else []),
        _updates(c),
        "",
        "## Gap closed while walking (walk up to the future)",
        "",
        *_curve_table(c),
        "",
        f"![gap closed versus strides walked]({plot})",
        "",
    ]
    if old:
        lines += ["## Gap closed while walking (name order, the previous protocol)", "", *_curve_table(old), "",
                  _updates(old), "",
                  "## Diagnosis: what the name-order walk asks of the learner", "",
                  "Most of the personal reference's advantage is its template, the mean of the future recording's other "
                  "strides: the pooled weights with that template alone close the share below of the name-order gap. "
                  "The learner reaches that recording only in its last strides (third column); before, its template "
                  "grows from other sessions and activities, and whether it moves towards or away from the future "
                  "session is chance: the walkers that get worse than the pooled model do so while walking the "
                  "'various' bouts.", "", *_diagnosis_table(c, old), ""]
    lines += [
        "## Joint-angle RMSE (degrees, walk up to the future)",
        "",
        *_degree_table(c),
        "",
        "## Per walker (walk up to the future; MSE, share of that walker's gap closed)",
        "",
        *_walker_table(c),
        "",
    ]
    if old:
        lines += ["## Per walker (name order)", "", *_walker_table(old), ""]
    atomic_write_text(path, "\n".join(lines))


PER_WALKER_CLIP = (-100.0, 200.0)  # % of the gap, for the plot only


def plot_curve(path: Path, continual: dict, name_order: dict | None = None) -> None:
    from metagait_edge.plots import save_figure, subplots

    fig, ax = subplots(figsize=(6, 4))
    rows = [r for r in continual["points"] if r.get("walkers")]
    ax.plot([r["strides"] for r in rows], [100 * r["gap_closed"] for r in rows], marker="o", lw=2, label="mean")
    if name_order:
        old = [r for r in name_order["points"] if r.get("walkers")]
        ax.plot([r["strides"] for r in old], [100 * r["gap_closed"] for r in old], marker="s", lw=1.5, ls="--",
                color="gray", label="mean, name order")
    # One thin line per walker, clipped: a walker whose pooled model is already close to its reference has a tiny
    # gap, and its share closed runs to hundreds of percent, which would flatten everyone else's lines.
    lo, hi = PER_WALKER_CLIP
    for i, w in enumerate(continual["per_walker"]):
        pts = []
        for n, p in w["points"].items():
            pooled = _get(w["pooled_points"], n)["mse"]
            if pooled > w["reference"]["mse"]:
                pts.append((int(n), 100 * (pooled - p["mse"]) / (pooled - w["reference"]["mse"])))
        pts.sort()
        ax.plot([n for n, _ in pts], [min(max(v, lo), hi) for _, v in pts], lw=0.7, alpha=0.5, color="tab:blue",
                label=f"one walker each (clipped to {lo:g}..{hi:g} %)" if i == 0 else None)
    for strides, goal in GOALS.items():
        ax.plot([strides], [100 * goal], marker="*", color="red", ms=10, ls="none")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("strides walked")
    ax.set_ylabel("gap to the personal reference closed (%)")
    ax.set_title("Continual personalization, held-out walkers (red: goals)")
    ax.set_ylim(lo - 10, hi + 10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path, dpi=90)
