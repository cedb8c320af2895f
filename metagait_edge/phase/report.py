"""docs/results/phase.md from an ``evaluate_phase`` summary: tables, the plot, the command and the machine."""

from __future__ import annotations

import math

from metagait_edge.phase.dataset import GAIT_MODES, MODES
from metagait_edge.phase.evaluate import ONE_NET, ONE_PASS, REJECTED, SHANK_GROUPS

GROUPS = list(GAIT_MODES) + ["transitions", *SHANK_GROUPS, REJECTED]


def _f(x: float, nd: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


JSON_MODES = ("walking", "running", "stairs_up", "stairs_down", "transitions")


def machine_summary(summary: dict) -> dict:
    """The ``eval-phase --json`` document: the issue's keys first, everything else under ``details``."""
    return {
        "phase_rmse_pct": {m: summary["phase_rmse_pct"]["learned"][m] for m in JSON_MODES},
        "baseline_phase_rmse_pct": {m: summary["phase_rmse_pct"]["baseline"][m] for m in JSON_MODES},
        "mode_accuracy": summary["mode_accuracy"],
        "latency_ms_p99": summary["latency_ms_p99"],
        "details": summary,
    }


def _alpha(a) -> str:
    if isinstance(a, dict):
        return ", ".join(f"{k}: {v:g}" for k, v in a.items()) + " (the most accurate on each fold's validation walkers)"
    return f"{a:g} (fixed by --mode-alpha)"


def _near_change(s: dict) -> str:
    near = s.get("mode_errors_near_change")
    if not near:
        return ""
    return (f" Of the wrong samples, {100 * near['0.5s']:.0f} % lie within 0.5 s of a label change and "
            f"{100 * near['1s']:.0f} % within 1 s: most of what the accuracy misses is the causal output catching up "
            "with a change, or disagreeing with the labels on its moment.")


def _bound_line(s: dict) -> str:
    late = s.get("mode_accuracy_true_labels_delayed") or {}
    if "150ms" not in late or "300ms" not in late:
        return ""
    return (f"; the true labels themselves score {late['150ms']:.4f} when 150 ms late and {late['300ms']:.4f} when "
            "300 ms late (the bound above)")


def _delayed_bound(s: dict) -> list[str]:
    """What any causal mode output can reach on these labels if it needs d ms of evidence after each change."""
    late = s.get("mode_accuracy_true_labels_delayed")
    if not late:
        return []
    goal = [k for k, v in late.items() if v >= 0.98]
    reach = (f"0.98 needs the output to follow every label change within {goal[-1].removesuffix('ms')} ms and to make "
             "no other error" if goal else "no delay reaches 0.98")
    return ["Upper bound for a causal output: the true labels themselves, output d ms late (out[t] = label[t - d]; "
            "a perfect recognizer that needs d ms of evidence after each change), scored like the estimator on the "
            "same held-out rows:", "",
            "| delay d (ms) | " + " | ".join(k.removesuffix("ms") for k in late) + " |",
            "|---" * (len(late) + 1) + "|",
            "| accuracy | " + " | ".join(f"{v:.4f}" for v in late.values()) + " |", "",
            f"Every label change costs d ms of rows at that delay, so {reach} (the estimator's own switch delay is in "
            "the paragraph above; 150 ms is 9 samples, about 13 % of a walking stride). The bound assumes the evidence "
            "of a change starts at its label; an output can be right earlier only where the motion changes before the "
            "annotator's label does.", ""]


def _per_walker_table(s: dict) -> list[str]:
    """The learned estimator's RMSE per held-out walker and mode: is a mode's error every walker's or a few walkers'?"""
    per = (s.get("rmse_per_walker") or {}).get("learned")
    if not per:
        return []
    import numpy as np

    groups = [g for g in per if per[g]]
    walkers = sorted({w for g in groups for w in per[g]})
    n = (s.get("samples_per_walker") or {}).get("learned", {})
    lines = ["", "Learned phase RMSE (%) per held-out walker and mode ('-': no scored samples of that mode); the last "
             "rows pool each mode's squared errors over all walkers, then over all but the walker with the largest "
             "share of them:", "", "| walker | " + " | ".join(groups) + " |", "|---" * (len(groups) + 1) + "|"]
    for w in walkers:
        lines.append(f"| {w} | " + " | ".join(_f(per[g][w]) if w in per[g] else "-" for g in groups) + " |")
    lines.append("| median over walkers | " + " | ".join(_f(float(np.median(list(per[g].values())))) for g in groups) + " |")
    lines.append("| pooled | " + " | ".join(_f(s["phase_rmse_pct"]["learned"][g]) for g in groups) + " |")
    cells = []
    for g in groups:
        sq = {w: per[g][w] ** 2 * n.get(g, {}).get(w, 0) for w in per[g]}
        total_n = sum(n.get(g, {}).get(w, 0) for w in per[g])
        worst = max(sq, key=sq.get)
        rest_n = total_n - n.get(g, {}).get(worst, 0)
        cells.append(f"{_f(float(np.sqrt((sum(sq.values()) - sq[worst]) / rest_n)))} (without {worst})" if rest_n else "n/a")
    lines.append("| pooled, largest share left out | " + " | ".join(cells) + " |")
    return lines


def learned_description(summary: dict) -> str:
    """What the evaluated network is, from its weights' sidecar (the first fold's; every fold shares the set-up)."""
    from metagait_edge.config import from_dict
    from metagait_edge.phase.model import PhaseNet, PhaseNetConfig, used_length

    w = first = next(iter((summary.get("weights") or {}).values()), {})
    cfg = from_dict(PhaseNetConfig, w.get("config") or {})
    n_params = sum(p.numel() for p in PhaseNet(cfg).parameters())
    n = used_length(cfg)
    fs = 58.8
    read = (f"the last {n} samples ({n / fs:.2f} s) of the six IMUs, every one of which reaches the output "
            "(right-aligned stride-2 convolutions; run per sample with each layer's outputs cached)" if cfg.right_aligned
            else f"the last {cfg.window} samples ({cfg.window / fs:.2f} s) of the six IMUs (its convolutions start at the "
                 "oldest sample, so the 3 newest never reach the output)")
    tc = w.get("train_config") or {}
    extras = ["extra random gyro masks"]
    if tc.get("balance"):
        extras.append(f"windows drawn with weight count(mode)^-{tc['balance']:g} (rarer modes oversampled)")
    if tc.get("gain_sd"):
        extras.append(f"a random gain per IMU and window (log-normal, sd {tc['gain_sd']:g})")
    if tc.get("leg_swap_prob"):
        extras.append(f"a {tc['leg_swap_prob']:g} share of windows mirrored left <-> right with the legs' phase targets "
                      "swapped (`dataset.mirror_map`)")
    epochs = f", {tc['epochs']} epochs x {tc['windows_per_epoch']} windows" if tc.get("epochs") else ""
    mirror = ("; per sample its outputs for the window and for the window's mirror image (legs swapped back) are "
              "averaged (`model.mirror_average`: a two-member ensemble of one network trained mirrored, both passes in "
              "one set of matrix products)" if tc.get("leg_swap_prob") else "")
    n_members = len(first.get("members") or [first])
    if n_members > 1:
        mirror += (f"; each fold's estimator is an ensemble of {n_members} such networks trained with different seeds "
                   "(`model.load_phase_ensemble`: their outputs averaged; per sample every member and both windows run in one "
                   "batched matrix product per layer)")
    return (f"`PhaseNet` (`metagait_edge/phase/model.py`, {n_params / 1000:.0f}k parameters: a 1x1 mix to "
            f"{cfg.mix_channels} channels, {cfg.n_conv} stride-2 convolutions of width {cfg.width}, a {cfg.hidden}-unit "
            f"layer): {read}, corrupted gyroscopes zeroed and flagged -> (cos, sin) of each leg's phase + "
            f"{cfg.n_modes} mode logits; trained with " + ", ".join(extras) + f"{epochs} (`training/train_phase.py`, "
            f"weights in `metagait_edge/resources/phase/`){mirror}.")


def render(summary: dict, command: str, machine: str, date: str, plot: str | None) -> str:
    s = summary
    ph, cov, n = s["phase_rmse_pct"], s["coverage"], s["samples"]
    lines = [
        "# Gait phase and locomotion mode per IMU sample (issue 17)",
        "",
        *(["**Validation walkers** (`--validation`): each fold's estimator on the walkers that chose its epoch and "
           "set-up, not on held-out test walkers. For choosing set-ups only; the figures to report are the test "
           "walkers'.", ""] if s.get("scored_walkers") == "val" else []),
        f"Generated by `{command}` on {machine}, {date}. Held-out walkers only: each of the personalization "
        f"experiment's 3 subject-disjoint folds scores its estimator on its test walkers ({len(s['subjects'])} walkers, "
        f"{s['files']} files{', every fourth file (--quick)' if s.get('quick') else ''}); the network never saw them, "
        "and its epoch was chosen on the fold's validation walkers.",
        "",
        "- **Ground truth** (`metagait_edge/phase/ground_truth.py`, [docs/data.md](../data.md#gait-phase-ground-truth-metagait_edgephaseground_truthpy)): "
        "offline zero-phase IC per leg (end of terminal swing on the shank gyro), timed to a fraction of a sample, "
        "phase linear between consecutive accepted ICs inside a gait bout, a stride accepted only where the legs "
        "alternate (one IC of the other leg at 30-70 % of it: a stride without that is a detector error, an extra, "
        "missed or misplaced IC); undefined (not scored) elsewhere. The strides removed by that check alone are "
        "scored apart in the last row of the table below.",
        "- **Baseline**: `CausalGaitDetector.phase` (time since the last causal IC over the median of the last three "
        "strides), per leg, on the shank gyro (a corrupted one divided by its x10 gain, as the detector does). It says "
        "nothing before its first stride: its RMSE is over the samples it covers (coverage column).",
        "- **Learned**: " + learned_description(s),
        "- Phase RMSE: circular error (wrapped to +/-50 %), both legs pooled, per mode of the row's label; "
        "*transitions* = samples within +/-2 strides of a label change between two modes, one of them a gait mode.",
        "",
        "## Phase RMSE (% of the gait cycle)",
        "",
        "| samples | learned | baseline | baseline coverage | scored samples (legs x rows) |",
        "|---|---|---|---|---|",
    ]
    for g in GROUPS:
        lines.append(f"| {g} | {_f(ph['learned'][g])} | {_f(ph['baseline'][g])} | "
                     f"{_f(100 * cov['baseline'][g], 1)} % | {n['learned'][g]} |")
    masked = [k for k in ph if k.startswith("learned, ")]
    if masked:
        lines += ["", "Robustness to masked gyroscopes: the learned estimator on the same held-out files with more "
                  "gyroscopes masked on purpose (zeroed, flag 0), phase RMSE %:", "",
                  "| estimator | " + " | ".join(GROUPS[:5]) + " |", "|---" * 6 + "|"]
        for k in ["learned"] + masked:
            lines.append(f"| {k} | " + " | ".join(_f(ph[k][g]) for g in GROUPS[:5]) + " |")
    parts = [k for k in (ONE_PASS, ONE_NET) if k in ph]
    if parts:
        lines += ["", "What the mirror average and the ensemble add: the same networks on the same files, without the "
                  "mirror average (one pass on the window as it is) and, for an ensemble, its seed-0 member alone "
                  "(mirror-averaged), against `learned` (both), phase RMSE %:", "",
                  "| estimator | " + " | ".join(GROUPS[:5]) + " |", "|---" * 6 + "|"]
        for k in ["learned"] + parts:
            lines.append(f"| {k} | " + " | ".join(_f(ph[k][g]) for g in GROUPS[:5]) + " |")
    per = s["walking_rmse_per_walker"]
    if per.get("learned"):
        import numpy as np

        v = np.array(list(per["learned"].values()))
        b = np.array(list(per["baseline"].values()))
        lines += ["", f"Walking RMSE per held-out walker (mean +/- sd over {len(v)} walkers): learned "
                  f"{v.mean():.2f} +/- {v.std():.2f} %, baseline {b.mean():.2f} +/- {b.std():.2f} %; per walker (learned): "
                  + ", ".join(f"{k}: {x:.2f}" for k, x in per["learned"].items()) + "."]
    lines += _per_walker_table(s)
    lines += ["", "## Heel-strike timing (ms; estimate - truth, positive = late)", "",
              "Where the estimator's phase wraps from ~100 % to ~0 %, matched one-to-one to ground-truth ICs "
              "within 250 ms. For the baseline this is when it declares the IC (2 samples after it, minus the "
              "part of the phase it back-dates).", "",
              "| estimator | mean | mean abs | median abs | p95 abs | matched / truth | extra events |", "|---|---|---|---|---|---|---|"]
    for name in ("learned", "baseline"):
        h = s["hs_timing_ms"][name]
        lines.append(f"| {name} | {_f(h['mean'], 1)} | {_f(h['mean_abs'], 1)} | {_f(h['median_abs'], 1)} | "
                     f"{_f(h['p95_abs'], 1)} | {h['matched']} / {h['truth_events']} | {h['extra']} |")
    d = s["mode_switch_delay"]
    lines += ["", "## Locomotion mode (per sample, causal)", "",
              f"Accuracy **{s['mode_accuracy']:.4f}** over {sum(s['mode_samples'].values())} labelled samples "
              f"(bicycling, lift and car rows are outside the classes and not scored); output = argmax of the "
              f"network's mode probabilities after causal exponential smoothing, p <- (1 - alpha) p + alpha p_new, "
              f"alpha per fold {_alpha(s['mode_alpha'])}.", "",
              "| mode | recall | samples |", "|---|---|---|"]
    for m in MODES:
        lines.append(f"| {m} | {_f(s['mode_recall'][m], 4)} | {s['mode_samples'][m]} |")
    lines += ["", "Confusion (rows: true, columns: estimated; " + ", ".join(MODES) + "):", "", "```"]
    lines += [" ".join(f"{v:7d}" for v in row) for row in s["mode_confusion"]]
    lines += ["```", "",
              f"Switch delay after a true label change until the output first says the new mode: {d['transitions']} "
              f"changes, median {_f(d['median_s'])} s = {_f(d['median_strides'])} strides, p90 {_f(d['p90_s'])} s = "
              f"{_f(d['p90_strides'])} strides; {d['missed']} never switched before the next change "
              "(a stride is the recording's median ground-truth stride)." + _near_change(s), ""]
    lines += _delayed_bound(s)
    lines += [
              "## Latency", "",
              f"Per sample, from one decoded IMU sample (36 values in g and deg/s) to phase, confidence and mode "
              f"(`features` of the row, then `StreamingPhaseEstimator.push`: one compiled call, `phase/kernel.py`: network, "
              f"decode) on one thread: wall clock p50 {s['latency_ms_p50']:.3f} ms, p99 {s['latency_ms_p99']:.3f} ms "
              f"(`latency_ms_p99` in the JSON); the thread's CPU time p50 {s['latency_cpu_ms_p50']:.3f} ms, p99 "
              f"{s['latency_cpu_ms_p99']:.3f} ms. The VM's 2 cores are shared with other engineers' jobs, so the "
              "wall-clock tail includes time the core spent on them.", ""]
    if s.get("weights"):
        lines += ["## Weights", "", "| fold | train / validation / test walkers | seed | made by | at | kept epoch (of) |",
                  "|---|---|---|---|---|---|"]
        for k, fold in s["weights"].items():
            for w in fold.get("members") or [fold]:
                sp = w.get("split", {})
                walkers = " / ".join(",".join(str(x) for x in sp.get(part, [])) for part in ("train", "val", "test"))
                lines.append(f"| {k} | {walkers} | {w.get('train_config', {}).get('seed', 'n/a')} | `{w['command']}` | "
                             f"{w['created'][:16]}, commit {w['git_commit'][:10]} | {w['kept_epoch']} ({w['epochs']}) |")
        lines.append("")
    if plot:
        lines += ["## Estimate vs truth across a transition", "", f"![phase across a transition]({plot})", ""]
    lines += ["## Notes", "",
              "- The switch delay counts the first sample that says the new mode; a flickering output can switch early "
              "and back, so accuracy and recall are the primary mode figures. Sitting rows predicted as `transition` and "
              "walking rows predicted as stairs (or back) are most of the errors (confusion above).",
              "- Stairs are the weakest phase modes: they have a sixth of walking's training rows, the shank zero "
              "crossing that defines 0 % moves within the stride on stairs, so the ground truth itself is less regular "
              "there, and the per-walker table shows their error is mostly a few walkers'. The rows '<mode>, both shank "
              "gyros valid' / '<mode>, a shank gyro corrupted' split each mode by the file's shank gyroscopes, the "
              "signal the ground truth's events are detected on (a corrupted one is amplified about x10 and clipped; "
              "the detector divides it back, the network sees it masked): on stairs the error is larger on the "
              "corrupted files. "
              "Not all of them: 12 of the 18 walkers have a corrupted shank gyroscope in most of their stairs "
              "recordings, several of them among the best. On the worst stairs file (walker 18, "
              "HuGaDB_v1_various_18_08) the truth's strides last 1.2 s where the gyroscope's impacts, and the estimate, "
              "repeat every 0.9 s ([figure](../img/phase_truth_corrupted.png), `python training/phase_truth_plot.py "
              "--file HuGaDB_v1_various_18_08 --start 320 --end 560 --out docs/img/phase_truth_corrupted.png`): there "
              "the error is at least partly the truth's.",
              "- The alternation check on the ground truth (docs/data.md) removes the strides in which the other leg's "
              "IC is missing, doubled or outside 30-70 % of the stride; the estimator and the baseline both disagree "
              "with those strides by about 20 % RMSE (the last row of the first table), as they would with a truth at "
              "the wrong event. The shipped weights were trained on the checked truth.",
              "- Masked gyroscopes: the network sees a corrupted gyroscope as zeros with a 0 flag (never the x10 "
              "signal); the rows '<mode>, ...' above split each mode by the file's shank gyroscope validity.",
              "- Each fold keeps the epoch with the lowest validation phase loss; the validation mode cross-entropy "
              "rises after a few epochs (over-confidence on new walkers), so it does not choose the epoch. The network's "
              "set-up (`training/configs/phase.yaml`: window, layers, sampling, augmentation, epochs) was chosen on fold 0's "
              "validation walkers only; the file's comments give that comparison.",
              "- Mirror average: chosen on every fold's validation walkers (`eval-phase --validation`), where it lowered "
              "the phase RMSE in every mode of every fold (walking by 0.1-0.36 points) and raised mode accuracy by "
              "0.001-0.002; the 'one pass' row above is the same networks without it. A causal smoothing of the phase "
              "(each estimate blended with the previous one advanced at the estimated rate) was tried on fold 0's "
              "validation walkers after it and gained under 0.01 points: not used.",
              "- Ensemble: the second network per fold (the same set-up, seed 1) was chosen on fold 0's validation "
              "walkers, where the two averaged beat either alone in every mode but stairs down (walking 1.55 % against "
              "1.64 and 1.57); the 'one net' row above is the seed-0 member alone on the test walkers.",
              "- Mode smoothing: besides the exponential smoothing above, a causal HMM forward filter (a switch "
              "probability per sample) was tried on fold 0's validation walkers with the weights before leg swap; it was no "
              "better (0.9608 at best against 0.9613), since every stickier output switches later, and late switches are most of the errors.",
              "- Ground-truth resolution: ICs are interpolated to 0.33 ms RMS (docs/data.md); one sample is 17 ms, "
              "1.8 % of a walking stride.", ""]
    lines += ["## Against the issue's goals", "",
              f"- walking <= 1.5 %: learned {_f(ph['learned']['walking'])} %.",
              "- every mode <= 3 %: learned " + ", ".join(f"{g} {_f(ph['learned'][g])} %" for g in list(GAIT_MODES) + ["transitions"]) + ".",
              f"- mode accuracy >= 0.98: {s['mode_accuracy']:.4f}" + _bound_line(s) + ".", ""]
    return "\n".join(lines)
