"""Results of the personalization evaluation as JSON (a fixed shape other tools read), Markdown and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from metagait_edge.atomic import atomic_write_text
from metagait_edge.plots import save_figure, subplots

METHOD_ORDER = ("maml", "pooled_finetune", "pooled", "support_mean", "copy_previous", "scratch")
LABELS = {
    "maml": "MAML-TCN (ours)",
    "pooled_finetune": "pooled + fine-tuning",
    "pooled": "pooled TCN",
    "support_mean": "support mean",
    "copy_previous": "copy previous cycle",
    "scratch": "TCN from scratch",
    "reference": "personal reference",
}


def build_json(summary: dict, protocol: dict, timing_ms: Dict[str, float]) -> dict:
    """``{"protocol", "results", "timing_ms"}`` (main protocol) plus ``redonning``, ``reference`` and
    ``per_walker`` sections."""

    from metagait_edge.personalization.evaluate import RMSE_DEG

    def section(protocol_name: str) -> dict:
        block = summary.get(protocol_name, {})
        res: dict = {}
        for problem, by_shots in block.items():
            for shots, cell in by_shots.items():
                entry = {m: {k: v for k, v in e.items() if k in ("mse", "mse_sd", "dtw", "dtw_sd", "dtw_norm", "dtw_norm_sd",
                                                                  "n_walkers") or k.startswith(RMSE_DEG)}
                         for m, e in cell["methods"].items() if m not in ("reference", "gap_closed")}
                if "gap_closed" in cell["methods"]:
                    entry["gap_closed"] = cell["methods"]["gap_closed"]
                res.setdefault(problem, {})[shots] = entry
        return res

    reference = {
        problem: {shots: cell["methods"]["reference"] for shots, cell in by_shots.items() if "reference" in cell["methods"]}
        for problem, by_shots in summary.get("main", {}).items()
    }
    per_walker = {
        problem: {shots: cell["per_walker"] for shots, cell in by_shots.items()}
        for problem, by_shots in summary.get("main", {}).items()
    }
    return {
        "protocol": protocol,
        "results": section("main"),
        "redonning": section("redonning"),
        "reference": reference,
        "timing_ms": timing_ms,
        "per_walker": per_walker,
    }


def degree_headers() -> List[str]:
    """Column titles of the joint-angle RMSE columns, in ``ANGLE_CHANNELS`` order."""
    from metagait_edge.data.joint_angles import ANGLE_CHANNELS

    return [f"{c.split('_')[0]} {c.split('_')[1].upper()} (deg)" for c in ANGLE_CHANNELS]


def format_degrees(values: Sequence[float]) -> str:
    return " | ".join("n/a" if v is None or not math.isfinite(v) else f"{v:.1f}" for v in values)


def _degrees(entry: dict) -> str:
    from metagait_edge.data.joint_angles import ANGLE_CHANNELS
    from metagait_edge.personalization.evaluate import RMSE_DEG

    return format_degrees([entry.get(RMSE_DEG + c, math.nan) for c in ANGLE_CHANNELS])


def _fmt(mean: float, sd: float, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _table(section: dict, reference: dict | None) -> List[str]:
    lines = []
    for problem in ("generation", "reconstruction"):
        if problem not in section:
            continue
        for shots in sorted(section[problem], key=int):
            cell = section[problem][shots]
            lines += [f"#### {problem}, {shots}-shot", "",
                      "| method | MSE | " + " | ".join(degree_headers()) + " | DTW | DTW / path length | walkers |",
                      "|---|---|" + "---|" * len(degree_headers()) + "---|---|---|"]
            best_mse = min(e["mse"] for m, e in cell.items() if m != "gap_closed")
            rows = [m for m in METHOD_ORDER if m in cell]
            for m in rows:
                e = cell[m]
                bold = "**" if e["mse"] == best_mse else ""
                lines.append(f"| {LABELS[m]} | {bold}{_fmt(e['mse'], e['mse_sd'])}{bold} | {_degrees(e)} | {_fmt(e['dtw'], e['dtw_sd'], 2)} | "
                             f"{_fmt(e.get('dtw_norm', float('nan')), e.get('dtw_norm_sd', 0.0), 4)} | {e.get('n_walkers', '')} |")
            if reference and problem in reference and shots in reference[problem]:
                e = reference[problem][shots]
                lines.append(f"| *{LABELS['reference']}* | *{_fmt(e['mse'], e['mse_sd'])}* | {_degrees(e)} | *{_fmt(e['dtw'], e['dtw_sd'], 2)}* | "
                             f"*{_fmt(e.get('dtw_norm', float('nan')), e.get('dtw_norm_sd', 0.0), 4)}* | {e.get('n_walkers', '')} |")
            if "gap_closed" in cell:
                g = cell["gap_closed"]
                lines.append("")
                lines.append("Gap to the personal reference closed (MSE): " + ", ".join(
                    f"{LABELS[m]} {100 * v:.0f} %" for m, v in g.items() if not math.isnan(v)))
            lines.append("")
    return lines


def best_baseline(cell: dict, metric: str) -> tuple[str, float]:
    """The baseline with the lowest ``metric`` in one (problem, shots) cell of the results."""
    others = {m: e[metric] for m, e in cell.items() if m not in ("maml", "gap_closed")}
    best = min(others, key=others.get)
    return best, others[best]


def paired_comparison(per_walker_cell: dict, metric: str, baseline: str) -> dict:
    """MAML-TCN against ``baseline`` walker by walker (the same held-out walkers): how many walkers it helps,
    the mean paired difference (negative: MAML-TCN lower) and a two-sided Wilcoxon signed-rank p-value.

    A difference of means a few thousandths wide says nothing with walker SDs of several hundredths; the
    paired test says whether the walkers agree on it.
    """
    from scipy.stats import wilcoxon

    ours, theirs = per_walker_cell["maml"][metric], per_walker_cell[baseline][metric]
    walkers = sorted(set(ours) & set(theirs), key=str)
    diff = np.array([ours[w] - theirs[w] for w in walkers], dtype=float)
    p = float(wilcoxon(diff).pvalue) if len(diff) >= 6 and np.any(diff != 0) else float("nan")
    return {"walkers": len(diff), "wins": int((diff < 0).sum()), "mean_diff": float(diff.mean()) if len(diff) else float("nan"),
            "p": p}


def _paired_phrase(paired: dict, alpha: float) -> str:
    if not paired["walkers"]:
        return ""
    significance = ("n/a" if math.isnan(paired["p"]) else
                    f"p = {paired['p']:.2g}, {'significant' if paired['p'] < alpha else 'not significant'} at {alpha:g}")
    return (f"; per walker: lower for {paired['wins']} of {paired['walkers']}, mean difference "
            f"{paired['mean_diff']:+.3g} (Wilcoxon signed-rank {significance})")


def verdict(results: dict, per_walker: dict | None = None, alpha: float = 0.05) -> List[str]:
    """Plain statements of where MAML-TCN does and does not beat every baseline; with the per-walker scores,
    each comparison also states how many walkers agree and whether the paired difference is significant."""
    lines = []
    for problem, by_shots in results.items():
        for shots, cell in sorted(by_shots.items(), key=lambda kv: int(kv[0])):
            walkers_cell = (per_walker or {}).get(problem, {}).get(shots)
            for metric in ("mse", "dtw"):
                best_other, theirs = best_baseline(cell, metric)
                ours = cell["maml"][metric]
                word = "beats" if ours < theirs else "does NOT beat"
                paired = ""
                if walkers_cell and all(metric in walkers_cell.get(m, {}) for m in ("maml", best_other)):
                    paired = _paired_phrase(paired_comparison(walkers_cell, metric, best_other), alpha)
                lines.append(f"- {problem}, {shots}-shot, {metric.upper()}: MAML-TCN {ours:.4g} {word} the best baseline "
                             f"({LABELS[best_other]} {theirs:.4g}){paired}.")
            gap = cell.get("gap_closed", {}).get("maml")
            if gap is not None and not math.isnan(gap):
                lines.append(f"- {problem}, {shots}-shot: MAML-TCN closes {round(100 * gap)} % of the gap between the pooled "
                             f"model and the personal reference (target: at least 50 %).")
    return lines


def comparison_table(runs: Dict[str, dict]) -> List[str]:
    """Markdown: MAML-TCN against the best baseline, per problem, shot count and metric, for several
    evaluation results (``--json`` files) side by side, e.g. two training set-ups on the same walkers."""
    labels = list(runs)
    lines = ["| problem | shots | metric | " + " | ".join(f"{lb}: MAML-TCN | {lb}: best baseline" for lb in labels) + " |",
             "|---|---|---|" + "---|---|" * len(labels)]
    first = runs[labels[0]]["results"]
    for problem in ("generation", "reconstruction"):
        for shots in sorted(first.get(problem, {}), key=int):
            for metric in ("mse", "dtw", "gap closed"):
                cells = []
                for lb in labels:
                    cell = runs[lb]["results"].get(problem, {}).get(shots)
                    if cell is None:
                        cells += ["n/a", "n/a"]
                    elif metric == "gap closed":
                        gap = cell.get("gap_closed", {})
                        cells += [_pct(gap.get("maml", math.nan)), f"fine-tuning {_pct(gap.get('pooled_finetune', math.nan))}"]
                    else:
                        name, theirs = best_baseline(cell, metric)
                        ours = cell["maml"][metric]
                        mark = "**" if ours < theirs else ""
                        cells += [f"{mark}{ours:.4g}{mark}", f"{theirs:.4g} ({LABELS[name]})"]
                lines.append(f"| {problem} | {shots} | {metric.upper() if metric != 'gap closed' else metric} | "
                             + " | ".join(cells) + " |")
    return lines


def per_walker_section(per_walker: dict, shots: str = "5", atypical_fraction: float = 1 / 3) -> List[str]:
    """Where personalization matters: per problem, the held-out walkers sorted by the pooled model's error
    (least typical first) with the reference, MAML-TCN, fine-tuning and the share of each walker's gap they
    close; then the mean share for the least typical walkers against the others."""
    from metagait_edge.personalization.evaluate import gap_closed

    lines: List[str] = []
    for problem, by_shots in per_walker.items():
        cell = by_shots.get(shots)
        if not cell or not {"pooled", "maml", "pooled_finetune", "reference"} <= set(cell):
            continue
        mse = {m: {str(w): v for w, v in cell[m]["mse"].items()} for m in ("pooled", "maml", "pooled_finetune", "reference")}
        walkers = sorted(mse["pooled"], key=lambda w: -mse["pooled"][w])
        closed = {m: {w: gap_closed(mse["pooled"][w], mse[m][w], mse["reference"][w]) for w in walkers}
                  for m in ("maml", "pooled_finetune")}
        lines += [f"#### {problem}, {shots}-shot", "",
                  "| walker | pooled TCN | personal reference | MAML-TCN (gap closed) | pooled + fine-tuning (gap closed) |",
                  "|---|---|---|---|---|"]
        for w in walkers:
            lines.append(f"| {w} | {mse['pooled'][w]:.3f} | {mse['reference'][w]:.3f} | {mse['maml'][w]:.3f} "
                         f"({_pct(closed['maml'][w])}) | {mse['pooled_finetune'][w]:.3f} ({_pct(closed['pooled_finetune'][w])}) |")
        n = max(1, round(len(walkers) * atypical_fraction))
        groups = {"least typical": walkers[:n], "the others": walkers[n:]}
        parts = []
        for name, group in groups.items():
            means = {m: np.nanmean([closed[m][w] for w in group]) if group else math.nan for m in closed}
            parts.append(f"{name} ({len(group)}: {', '.join(group)}): MAML-TCN {_pct(means['maml'])}, "
                         f"fine-tuning {_pct(means['pooled_finetune'])}")
        lines += ["", "Mean share of the walker's own gap closed, " + "; ".join(parts) + ".", ""]
    return lines


def training_loss_lines(losses: Dict[str, dict]) -> List[str]:
    """The protocol's line on what the pooled model, the personal reference and MAML's meta-loss minimized."""
    parts = []
    for problem, loss in sorted(losses.items()):
        if loss.get("sdtw_weight", 0) > 0:
            points = f", cycles resampled to {loss['sdtw_points']} points" if loss.get("sdtw_points") else ""
            phase = (f" (the pooled model: MSE, then {loss['shape_steps']} steps with the shape term)"
                     if loss.get("shape_steps") else "")
            parts.append(f"{problem}: MSE + {loss['sdtw_weight']:g} x soft-DTW divergence (gamma "
                         f"{loss['sdtw_gamma']:g}{points}){phase}")
        else:
            parts.append(f"{problem}: MSE")
    if not parts:
        return []
    return ["- Training loss of the pooled model, the personal reference and MAML's meta-loss: " + "; ".join(parts)
            + ". Adaptation on a support set (MAML's inner loop, fine-tuning, scratch) minimizes MSE."]


def _pct(fraction: float) -> str:
    return "n/a" if not math.isfinite(fraction) else f"{round(100 * fraction)} %"


DESIGN_NOTES = (
    "- Every learned method shares one network: a whole-cycle TCN (weight norm, circular padding, FiLM, no "
    "BatchNorm) whose input is the previous (generation) or partly observed (reconstruction) cycle, the walker's "
    "template (mean of the support cycles) and the channel validity. It predicts a correction to a base: the "
    "template for reconstruction; for generation, with `model_base: mix`, a learned per-channel blend of the "
    "template and the previous cycle. The pooled baseline, fine-tuning and scratch use exactly the same network "
    "and inputs, so the comparison isolates what meta-learning adds.",
    "- MAML is warm-started from the pooled model and meta-trained with first-order MAML++ (learned per-layer "
    "per-step inner rates, multi-step loss); the checkpoint is the iteration with the lowest validation-walker "
    "loss after adaptation (iteration 0 is the pooled model with the initial inner rates). With `maml.shot_sizes` "
    "every inner rate has a learned multiplier per support size, started at the value from `train.inner_lr_scales` "
    "that adapts best on validation walkers: one cycle's gradient is noisy and five cycles' is not, so the step "
    "that helps at 5 shots overfits at 1 shot. Fine-tuning and scratch get the same privilege: their learning "
    "rates are tuned on validation walkers per support size.",
    "- Support examples use only the K support cycles: support cycle j is generated from cycle j-1 (zeros "
    "before the first) with the template of the other support cycles; for reconstruction each support cycle "
    "is masked at random and recovered. Queries use the template of all K cycles.",
    "- Corrupted gyroscopes (HuGaDB's tables) and joint angles that need them are masked out of inputs, losses "
    "and metrics; 31 % of cycle channels are masked overall.",
)


def support_sentence(protocol: dict) -> str:
    """Where a walk's support cycles come from, as evaluated (``protocol["settle"]``)."""
    settle = protocol.get("settle", 0)
    if not settle:
        return "the K support cycles are the first K strides of a walking recording"
    return (f"the K support cycles are the K strides after the first {settle} of a walking recording (the walk "
            f"settles first, as the runtime's calibration.settle_strides does; queries as with no settling)")


def masking_sentence(protocol: dict) -> str:
    """What a reconstruction input observes, as evaluated (``protocol["masking"]``)."""
    sparse = f"only {100 * protocol.get('keep_fraction', 0):.0f} % of the samples"
    sensors = f"all but {6 - protocol.get('drop_sensors', 0)} of the 6 IMUs"
    mode = protocol.get("masking", "mixed")
    if mode == "sparse":
        return f"recover a cycle of which {sparse} are observed (every cycle; training mixed both kinds)"
    if mode == "sensors":
        return f"recover a cycle of which {sensors} are observed (every cycle; training mixed both kinds)"
    return f"recover a cycle of which {sparse}, or {sensors}, are observed (one of the two at random per cycle)"


def paragraphs(path: Path) -> List[str]:
    """The blank-line separated paragraphs of a notes file, each joined into one line."""
    if not path.is_file():
        raise FileNotFoundError(f"notes file not found: {path}")
    blocks = path.read_text(encoding="utf-8").split("\n\n")
    return [" ".join(line.strip() for line in b.strip().splitlines()) for b in blocks if b.strip()]



def report_opening(title: str, command: str, provenance: Dict) -> List[str]:
    """A personalization report's first lines: its title, the command and provenance that made it, and the
    protocol heading (every report is regenerated by its command, never edited by hand)."""
    return [
        f"# {title}",
        "",
        f"Generated by `{command}` on {provenance.get('date', '?')} ({provenance.get('machine', '?')}; "
        f"commit {provenance.get('commit', '?')}). Do not edit by hand.",
        "",
        "## Protocol",
        "",
    ]

def write_markdown(path: Path, payload: dict, command: str, provenance: Dict[str, str],
                   notes: Sequence[str] = DESIGN_NOTES) -> None:
    p = payload["protocol"]
    lines = report_opening("Few-shot gait personalization on HuGaDB", command, provenance) + [
        f"- Walkers: HuGaDB v1, {p.get('n_folds')} subject-disjoint folds (train / validation / test walkers never "
        f"overlap); every reported walker is a held-out test walker. Seeds: {p.get('seeds')}. Checkpoints: {p.get('checkpoints')}.",
        f"- Main protocol: {support_sentence(p)}; queries are up to {p.get('max_queries')} strides from at "
        f"least {p.get('gap')} strides after the first K, in the same recording.",
        "- Re-donning protocol (reported separately below): support from one recording, queries from another "
        "recording of the same walker.",
        f"- Generation: predict the next cycle from the previous one. Reconstruction: {masking_sentence(p)}; scored on "
        "the whole cycle.",
        "- Scores on normalized channels (training-walker statistics), valid channels only: MSE; multivariate DTW "
        "with one warping path shared by all channels (dtaidistance: square root of the summed squared distances "
        "along the path), raw and divided by the path length. Mean ± SD across held-out walkers of per-walker means.",
        "- Joint angles in degrees (the unit users feel): per joint, the RMSE of the IMU-derived angle estimate over the "
        "walker's valid query cycles (normalized error x the channel's normalization SD), mean across walkers (n/a: no "
        "walker of the cell has a valid estimate, e.g. a corrupted shank gyroscope).",
        f"- Adaptation budget: {p.get('inner_steps')} gradient steps on the support set for MAML, fine-tuning and "
        "scratch; fine-tuning and scratch learning rates (and MAML's starting rate multiplier) tuned on validation "
        "walkers only, per support size where the checkpoint was trained so.",
        "- Personal reference (not a baseline): the pooled model trained further on the walker's own cycles outside "
        "the query set (hundreds of cycles), with the mean of those cycles as its template.",
        *training_loss_lines(p.get("training_loss", {})),
        "",
        "## Verdict",
        "",
        *verdict(payload["results"], payload.get("per_walker")),
        "",
        "## Main protocol (calibrate, keep walking)",
        "",
        *_table(payload["results"], payload.get("reference")),
        "## Re-donning protocol (support and queries from different recordings)",
        "",
        *_table(payload.get("redonning", {}), None),
        "## Where personalization matters: the least typical walkers (main protocol)",
        "",
        "Walkers sorted by the pooled model's error (how far they are from the training walkers). Gap closed: the share "
        "of that walker's pooled-to-reference gap that adaptation closes.",
        "",
        *per_walker_section(payload.get("per_walker", {})),
        "## Timing (one CPU thread, median)",
        "",
        *(["| what | ms |", "|---|---|", *[f"| {k} | {v:.1f} |" for k, v in payload["timing_ms"].items()]]
          if payload["timing_ms"] else ["Not measured: timing runs with the generation model, not evaluated here."]),
        "",
    ]
    if notes:
        lines += ["## Design notes", "", *notes, ""]
    atomic_write_text(path, "\n".join(lines))


def write_json(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=float) + "\n")


def plot_cycles(path: Path, t: np.ndarray, truth: np.ndarray, predictions: Dict[str, np.ndarray],
                channels: Sequence[str], title: str) -> None:
    fig, axes = subplots(1, len(channels), figsize=(5 * len(channels), 3.8), squeeze=False)
    for ax, (c, name) in zip(axes[0], enumerate(channels)):
        ax.plot(t, truth[c], color="black", lw=2.5, label="true next cycle")
        for method, pred in predictions.items():
            ax.plot(t, pred[c], lw=1.4, label=LABELS.get(method, method))
        ax.set_title(name)
        ax.set_xlabel("gait cycle (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path, dpi=90)


def plot_error_vs_shots(path: Path, curves: Dict[str, Dict[int, float]], title: str) -> None:
    import matplotlib.ticker

    fig, ax = subplots(figsize=(6, 4))
    for method, pts in curves.items():
        ks = sorted(pts)
        ax.plot(ks, [pts[k] for k in ks], marker="o", label=LABELS.get(method, method))
    ax.set_xscale("log")
    ax.set_xticks(sorted({k for pts in curves.values() for k in pts}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("support cycles (shots)")
    ax.set_ylabel("normalized MSE")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=90)
