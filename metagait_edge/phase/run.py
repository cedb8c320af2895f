"""The issue-17 phase/mode evaluation: every fold's estimator on its held-out walkers, the baseline beside it.

``evaluate_phase(quick=...)`` loads HuGaDB, runs each fold's shipped ``PhaseNet`` (``resources/phase``)
and the time-since-heel-strike baseline causally over every file of the fold's test walkers, and returns
``PhaseScores.summary()`` plus the per-sample inference latency on one core. ``--quick`` scores every fourth file.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from metagait_edge.phase.dataset import MODES, PhaseRecording, features, load_recordings, mask_gyros, mirror_features
from metagait_edge.phase.evaluate import ONE_NET, ONE_PASS, PhaseScores, baseline_phase, transition_points
from metagait_edge.phase.folds import phase_folds
from metagait_edge.phase.model import (RESOURCE_DIR, PhaseNet, StreamingPhaseEstimator, decode, load_phase_ensemble,
                                       member_paths, mirror_average, predict_recording)
from metagait_edge.sensors import SENSORS


def smooth_modes(prob: np.ndarray, alpha: float) -> np.ndarray:
    """Causal exponential smoothing of mode probabilities [T, M] (alpha = 1: none); argmax per sample."""
    if alpha >= 1.0:
        return prob.argmax(1)
    from scipy.signal import lfilter

    sm = lfilter([alpha], [1.0, alpha - 1.0], prob, axis=0, zi=(1 - alpha) * prob[:1])[0]
    return sm.argmax(1)


# Extra masks for the robustness rows: the learned estimator on the same files with these gyroscopes masked.
MASKED = {"learned, shank gyros masked": ("rs", "ls"), "learned, all gyros masked": SENSORS}
ALPHAS = (1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03)


def tune_mode_alpha(model: PhaseNet | Sequence[PhaseNet], recs: Sequence[PhaseRecording], alphas: Sequence[float] = ALPHAS) -> dict:
    """Mode accuracy per smoothing ``alpha`` on (validation) recordings; the best alpha under ``best``."""
    probs = [decode(predict_recording(model, r.x))["mode_prob"] for r in recs]
    acc = {}
    for a in alphas:
        hit = tot = 0
        for r, p in zip(recs, probs):
            lab = r.mode >= 0
            hit += int((smooth_modes(p, a)[lab] == r.mode[lab]).sum())
            tot += int(lab.sum())
        acc[a] = hit / max(tot, 1)
    return {"accuracy": acc, "best": max(acc, key=acc.get)}


def latency_ms(model: PhaseNet | Sequence[PhaseNet], physical: np.ndarray, valid: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample times (ms) on one thread from one decoded IMU sample (36 values in g, deg/s) to phase,
    confidence and mode (``features`` of the row, then ``StreamingPhaseEstimator.push``), over ``n`` real
    samples: (wall clock, the thread's CPU time). On a shared machine the wall clock also counts the time
    other processes held the core; the CPU time is the compute one core spends per sample."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        est = StreamingPhaseEstimator(model)
        rows = np.asarray(physical, dtype=np.float32)
        for r in rows[:50]:
            est.push(features(r[None], valid)[0])  # warm-up
        wall, cpu = [], []
        for r in rows[np.arange(n) % len(rows)]:
            t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            est.push(features(r[None], valid)[0])
            cpu.append(time.thread_time_ns() - c0)
            wall.append(time.perf_counter_ns() - t0)
        return 1e-6 * np.asarray(wall), 1e-6 * np.asarray(cpu)
    finally:
        torch.set_num_threads(prev)


def evaluate_phase(db, weights_dir: str | Path = RESOURCE_DIR, quick: bool = False, folds: Sequence[int] = (0, 1, 2),
                   mode_alpha: float | None = None, progress: bool = True, walkers: str = "test") -> tuple[dict, dict]:
    """(summary, traces): traces holds one held-out recording's truth and estimates around a transition.

    ``mode_alpha`` None: each fold's mode smoothing is the one most accurate on its validation walkers.
    ``walkers``: "test" (the report) or "val", each fold's validation walkers (choosing a set-up; the smoothing is
    then tuned on the walkers it is scored on)."""
    if walkers not in ("test", "val"):
        raise ValueError(f"walkers must be 'test' or 'val', got {walkers!r}")
    from tqdm import tqdm

    splits = phase_folds()
    scores = PhaseScores()
    trace: dict = {}
    n_files, subjects, alphas = 0, [], {}
    model = None
    weights = {}
    one_pass_scored = one_net_scored = False
    for k in folds:
        model = load_phase_ensemble(Path(weights_dir) / f"fold{k}")
        provenance = [weights_provenance(p) for p in member_paths(Path(weights_dir) / f"fold{k}")]
        weights[k] = dict(provenance[0], members=provenance)  # the first member's fields describe the fold
        test = splits[k][walkers]
        alpha = mode_alpha
        if alpha is None:
            val = load_recordings(db, subjects=splits[k]["val"], progress=False)
            tuned = tune_mode_alpha(model, val[::4] if quick else val)
            alpha = tuned["best"]
            alphas[k] = tuned
        recs = load_recordings(db, subjects=test, progress=False)
        if quick:
            recs = recs[::4]
        subjects += test
        for rec in tqdm(recs, desc=f"fold {k}: {len(test)} held-out walkers", unit="file", disable=not progress):
            # predict_recording(model, rec.x) from each member's two passes, kept for the comparison rows
            passes = [(predict_recording(m, rec.x, mirror=False),
                       predict_recording(m, mirror_features(rec.x), mirror=False) if m.mirror_trained else None)
                      for m in model]
            singles = [p if q is None else mirror_average(p, q) for p, q in passes]
            if any(q is not None for _, q in passes):
                one_pass_scored = True
                scores.add_phase(ONE_PASS, rec, decode(np.mean([p for p, _ in passes], axis=0))["phase"].T)
            if len(model) > 1:
                one_net_scored = True
                scores.add_phase(ONE_NET, rec, decode(singles[0])["phase"].T)
            out = decode(np.mean(singles, axis=0))
            learned = out["phase"].T
            base = baseline_phase(rec)
            scores.add_phase("learned", rec, learned)
            scores.add_phase("baseline", rec, base)
            for name, sensors in MASKED.items():  # the same walkers with more gyroscopes masked on purpose
                scores.add_phase(name, rec, decode(predict_recording(model, mask_gyros(rec.x, sensors)))["phase"].T)
            pred = smooth_modes(out["mode_prob"], alpha)
            scores.add_modes(rec, pred)
            n_files += 1
            _keep_trace(trace, rec, learned, base, pred)
    summary = scores.summary(("learned", "baseline") + tuple(MASKED) + ((ONE_PASS,) if one_pass_scored else ())
                             + ((ONE_NET,) if one_net_scored else ()))
    rec0 = db.load(recs[0].file_id)
    wall, cpu = latency_ms(model, rec0.physical(), recs[0].valid, 1000 if quick else 5000)
    summary["latency_ms_p50"] = float(np.percentile(wall, 50))
    summary["latency_ms_p99"] = float(np.percentile(wall, 99))
    summary["latency_cpu_ms_p50"] = float(np.percentile(cpu, 50))
    summary["latency_cpu_ms_p99"] = float(np.percentile(cpu, 99))
    summary["files"] = n_files
    summary["subjects"] = sorted(subjects)
    summary["quick"] = quick
    summary["scored_walkers"] = walkers
    summary["mode_alpha"] = mode_alpha if mode_alpha is not None else {k: v["best"] for k, v in alphas.items()}
    summary["weights"] = weights
    summary["mode_alpha_validation"] = {k: v["accuracy"] for k, v in alphas.items()}
    return summary, trace


def weights_provenance(path: str | Path) -> dict:
    """What the weights' sidecar says about how they were made: command, date, commit, kept epoch."""
    import json

    meta = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
    extra = meta.get("extra", {})
    hist = extra.get("history", [])
    scored = [h for h in hist if "val_phase_loss" in h]
    kept = min(scored, key=lambda h: h["val_phase_loss"]) if scored else (hist[-1] if hist else {})
    return {"command": extra.get("command", ""), "created": meta.get("created", ""),
            "git_commit": meta.get("git_commit", ""), "epochs": len(hist), "kept_epoch": kept.get("epoch"),
            "val_phase_loss": kept.get("val_phase_loss"), "split": extra.get("split", {}),
            "config": meta.get("config", {}), "train_config": extra.get("train_config", {})}


def _keep_trace(trace: dict, rec: PhaseRecording, learned: np.ndarray, base: np.ndarray, pred: np.ndarray) -> None:
    """Keep the first walking -> stairs transition of a held-out recording with truth on both sides."""
    if trace:
        return
    for t, a, b in transition_points(rec.mode):
        if {MODES[a], MODES[b]} & {"stairs_up", "stairs_down"} and "walking" in (MODES[a], MODES[b]):
            lo, hi = max(0, t - 300), min(len(rec), t + 300)
            if np.isfinite(rec.truth.phase[0, t - 60:t + 60]).mean() > 0.7:
                trace.update(file_id=rec.file_id, t=t - lo, fs=rec.fs, truth=rec.truth.phase[0, lo:hi],
                             learned=learned[0, lo:hi], baseline=base[0, lo:hi], mode=rec.mode[lo:hi],
                             pred=pred[lo:hi], change=f"{MODES[a]} -> {MODES[b]}")
                return


def plot_trace(trace: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fs = trace["fs"]
    t = (np.arange(len(trace["truth"])) - trace["t"]) / fs
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    truth = np.array(trace["truth"], dtype=float)
    truth[1:][np.diff(truth) < -50] = np.nan  # no vertical line at each wrap
    ax.plot(t, truth, "k-", lw=2.0, label="ground truth (offline)")
    ax.plot(t, trace["learned"], "C0.", ms=3, label="learned PhaseNet (causal)")
    ax.plot(t, trace["baseline"], "C3.", ms=3, label="baseline: time since IC / median stride (causal)")
    ax.axvline(0, color="grey", ls="--")
    ax.set_ylabel("right-leg phase (% of cycle)")
    ax.set_ylim(-2, 118)
    ax.set_yticks(range(0, 101, 20))
    ax.legend(loc="upper center", fontsize=8, ncol=3, framealpha=0.95)
    ax.set_title(f"{trace['file_id']} (held-out walker): {trace['change']} at t = 0")
    ax2.step(t, trace["mode"], "k-", where="post", label="true mode")
    ax2.step(t, trace["pred"], "C0-", where="post", label="estimated mode", alpha=0.8)
    ax2.set_yticks(range(len(MODES)))
    ax2.set_yticklabels(MODES, fontsize=7)
    ax2.set_xlabel("time from the labelled transition (s)")
    ax2.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
