"""Scores of causal phase and mode estimators on held-out HuGaDB walkers (issue 17, items 2 and 3).

* Phase RMSE in % of the cycle, circular (errors wrapped to -50..50 %), per leg pooled, over the samples
  with a ground-truth phase, per mode (the row's label) and inside +/- 2 strides of every mode transition
  (a label change between two modes of ``dataset.MODES``, one of them a gait mode; 2 strides = twice the
  recording's median ground-truth stride). The baseline outputs nothing before its first stride: its RMSE
  is over the samples it covers, its coverage is reported beside it.
* Heel-strike timing: an estimator's heel strike is where its phase wraps from near 100 % to near 0 %,
  timed to a fraction of a sample by interpolating the unwrapped phase through 100 %; matched one-to-one
  to the ground-truth ICs within ``HS_TOLERANCE_S``; error = estimate - truth in ms (positive: late).
* Modes: per-sample accuracy and recall over the labelled rows; switch delay = time from a true label
  change A -> B until the output first says B (before the next label change, else missed), in seconds and
  in strides of the recording's median stride.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from metagait_edge.data.gait_events import SHANK_SENSOR, CausalGaitDetector, match_events
from metagait_edge.phase.dataset import GAIT_MODES, MODES, PhaseRecording

HS_TOLERANCE_S = 0.25
TRANSITIONS = "transitions"
DEFAULT_STRIDE = 53.0
# The strides the ground truth rejects only because the legs do not alternate in them (detector errors): scored
# apart, never in the groups above, to show what the check removes.
REJECTED = "strides failing the alternation check (not scored above)"
# The same network without the mirror average (one pass on the window as it is), for the report's comparison.
ONE_PASS = "one pass (no mirror average)"
# An ensemble's first member (seed 0) alone, mirror-averaged: what the other seeds add.
ONE_NET = "one net (the seed-0 member alone)"
# Groups scored per held-out walker too: whether a mode's error is every walker's or a few walkers'.
PER_WALKER_GROUPS = tuple(GAIT_MODES) + (TRANSITIONS,)
# Each gait mode split by the file's shank gyroscopes: the ground truth's events come from them, and a corrupted
# one (x10, clipped; masked for the network) is what the truth is detected on there.
SHANK_VALID, SHANK_CORRUPTED = "both shank gyros valid", "a shank gyro corrupted"


def shank_group(mode: str, shank: str) -> str:
    """The group of ``mode``'s rows in files whose shank gyroscopes are ``shank`` (SHANK_VALID or SHANK_CORRUPTED)."""
    return f"{mode}, {shank}"


SHANK_GROUPS = tuple(shank_group(m, v) for m in GAIT_MODES for v in (SHANK_VALID, SHANK_CORRUPTED))
NEAR_CHANGE_S = (0.5, 1.0)
# The true labels themselves, output d ms late: what a causal estimator that is perfect except that it needs d ms
# of evidence after each label change can reach (an upper bound on mode accuracy at that delay).
LABEL_DELAYS_MS = (0, 50, 100, 150, 200, 300, 500)


def delayed_labels(mode: np.ndarray, k: int) -> np.ndarray:
    """The labels ``k`` samples late: out[t] = mode[t - k], the first label repeated before the recording starts."""
    m = np.asarray(mode)
    if k <= 0:
        return m.copy()
    return np.concatenate([np.full(min(k, len(m)), m[0] if len(m) else -1, dtype=m.dtype), m[:max(len(m) - k, 0)]])


def circular_error(est: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """est - truth in percent, wrapped to [-50, 50)."""
    return np.mod(np.asarray(est) - np.asarray(truth) + 50.0, 100.0) - 50.0


def baseline_phase(rec: PhaseRecording) -> np.ndarray:
    """float [2, T]: ``CausalGaitDetector.phase`` after each sample, per leg (NaN before its first stride)."""
    out = np.full((2, len(rec)), np.nan)
    for li, leg in enumerate(("right", "left")):
        det = CausalGaitDetector(rec.fs, corrupted=not rec.valid[SHANK_SENSOR[leg]])
        for t, v in enumerate(rec.shank_gyro[li]):
            det.push(v)
            out[li, t] = det.phase
    return out


def wrap_events(phase: np.ndarray, fs: float, refractory_s: float = 0.3) -> np.ndarray:
    """Fractional sample times where a phase track [T] wraps from high to low (its heel strikes)."""
    p = np.asarray(phase, dtype=np.float64)
    prev, cur = p[:-1], p[1:]
    ok = np.isfinite(prev) & np.isfinite(cur) & (prev - cur > 50.0)
    events, last = [], -np.inf
    for k in np.flatnonzero(ok):
        t = k + (100.0 - prev[k]) / max(cur[k] + 100.0 - prev[k], 1e-9)
        if t - last >= refractory_s * fs:
            events.append(t)
            last = t
    return np.asarray(events)


def median_stride(rec: PhaseRecording) -> float:
    s = rec.truth.strides[0]
    return float(np.median(s[:, 1] - s[:, 0])) if len(s) else DEFAULT_STRIDE


def transition_points(mode: np.ndarray) -> list[tuple[int, int, int]]:
    """(t, from, to) for each label change between two labelled modes, one of them a gait mode."""
    m = np.asarray(mode)
    out = []
    for t in np.flatnonzero(m[1:] != m[:-1]) + 1:
        a, b = int(m[t - 1]), int(m[t])
        if a >= 0 and b >= 0 and (a < len(GAIT_MODES) or b < len(GAIT_MODES)):
            out.append((int(t), a, b))
    return out


def mode_changes(mode: np.ndarray) -> list[tuple[int, int, int]]:
    """(t, from, to) for every change between two labelled modes."""
    m = np.asarray(mode)
    return [(int(t), int(m[t - 1]), int(m[t])) for t in np.flatnonzero(m[1:] != m[:-1]) + 1
            if m[t - 1] >= 0 and m[t] >= 0]


@dataclass
class PhaseScores:
    """Accumulates squared errors per (estimator, group), timing errors, mode counts and delays."""

    sq: dict = field(default_factory=lambda: defaultdict(float))
    n: dict = field(default_factory=lambda: defaultdict(int))
    total: dict = field(default_factory=lambda: defaultdict(int))
    per_subject: dict = field(default_factory=lambda: defaultdict(lambda: [0.0, 0]))  # (name, group, walker) -> [sq, n]
    hs: dict = field(default_factory=lambda: defaultdict(list))
    hs_counts: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))  # truth, matched, extra
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((len(MODES), len(MODES)), dtype=np.int64))
    delays: list = field(default_factory=list)  # (from, to, seconds or nan, strides or nan)
    mode_errors_near: dict = field(default_factory=lambda: defaultdict(int))  # window (s) -> wrong samples that close
    delayed_hits: dict = field(default_factory=lambda: defaultdict(int))  # delay (ms) -> labelled rows the late labels get right

    def add_phase(self, name: str, rec: PhaseRecording, est: np.ndarray) -> None:
        truth = rec.truth.phase
        defined = np.isfinite(truth)
        near = np.zeros(len(rec), dtype=bool)
        half = int(round(2 * median_stride(rec)))
        for t, _, _ in transition_points(rec.mode):
            near[max(0, t - half): t + half] = True
        groups = {m: rec.mode == i for i, m in enumerate(GAIT_MODES)}
        groups[TRANSITIONS] = near
        shank = SHANK_VALID if all(rec.valid[s] for s in SHANK_SENSOR.values()) else SHANK_CORRUPTED
        groups.update({shank_group(m, shank): rec.mode == i for i, m in enumerate(GAIT_MODES)})
        truths = {g: truth for g in groups}
        if rec.truth.rejected is not None:
            groups[REJECTED] = np.ones(len(rec), dtype=bool)
            truths[REJECTED] = rec.truth.rejected
        for g, rows in groups.items():
            ref = truths[g]
            sel = np.isfinite(ref) & rows[None, :]
            self.total[(name, g)] += int(sel.sum())
            sel &= np.isfinite(est)
            if sel.any():
                e = circular_error(est[sel], ref[sel])
                self.sq[(name, g)] += float(np.sum(e ** 2))
                self.n[(name, g)] += int(sel.sum())
                if g in PER_WALKER_GROUPS:
                    acc = self.per_subject[(name, g, rec.subject)]
                    acc[0] += float(np.sum(e ** 2))
                    acc[1] += int(sel.sum())
        for li in range(2):
            ev = wrap_events(est[li], rec.fs)
            ic = rec.truth.ic[li]
            tol = HS_TOLERANCE_S * rec.fs
            # Only events inside the ground truth's reach (within the tolerance of a defined phase) count.
            reach = np.convolve(defined[li].astype(float), np.ones(2 * int(tol) + 1), mode="same") > 0
            ev = ev[reach[np.clip(np.round(ev).astype(int), 0, len(rec) - 1)]] if len(ev) else ev
            matched, _ = match_events(ic, ev, int(tol))
            # match_events works in integers; recompute the fractional offsets of the matches.
            used = np.zeros(len(ev), bool)
            for r in ic[matched]:
                j = int(np.argmin(np.where(used, np.inf, np.abs(ev - r))))
                used[j] = True
                self.hs[name].append(1000.0 * (ev[j] - r) / rec.fs)
            c = self.hs_counts[name]
            c[0] += len(ic)
            c[1] += int(matched.sum())
            c[2] += int(len(ev) - used.sum())

    def add_modes(self, rec: PhaseRecording, pred: np.ndarray) -> None:
        m = rec.mode
        lab = m >= 0
        np.add.at(self.confusion, (m[lab], pred[lab]), 1)
        for d in LABEL_DELAYS_MS:
            late = delayed_labels(m, int(round(d * 1e-3 * rec.fs)))
            self.delayed_hits[d] += int((late[lab] == m[lab]).sum())
        # How many of the wrong samples lie within a short time of a label change (any change of the row's label):
        # errors a causal output makes while it catches up with, or disagrees on the moment of, a change.
        wrong = lab & (pred != m)
        change = np.flatnonzero(m[1:] != m[:-1]) + 1
        if len(change) and wrong.any():
            t = np.flatnonzero(wrong)
            j = np.clip(np.searchsorted(change, t), 1, len(change))
            dist = np.minimum(np.abs(t - change[j - 1]), np.abs(t - change[np.minimum(j, len(change) - 1)]))
            for w in NEAR_CHANGE_S:
                self.mode_errors_near[w] += int((dist < w * rec.fs).sum())
        stride = median_stride(rec)
        changes = mode_changes(m)
        bounds = [t for t, _, _ in changes] + [len(m)]
        for (t, a, b), nxt in zip(changes, bounds[1:]):
            hit = np.flatnonzero(pred[t:nxt] == b)
            d = float(hit[0]) if len(hit) else np.nan
            self.delays.append((a, b, d / rec.fs, d / stride))

    def rmse(self, name: str, group: str) -> float:
        n = self.n.get((name, group), 0)
        return float(np.sqrt(self.sq[(name, group)] / n)) if n else float("nan")

    def coverage(self, name: str, group: str) -> float:
        t = self.total.get((name, group), 0)
        return self.n.get((name, group), 0) / t if t else float("nan")

    def summary(self, names: tuple[str, ...] = ("learned", "baseline")) -> dict:
        groups = list(GAIT_MODES) + [TRANSITIONS, *SHANK_GROUPS, REJECTED]
        out: dict = {"phase_rmse_pct": {}, "coverage": {}, "samples": {}, "hs_timing_ms": {}, "walking_rmse_per_walker": {},
                     "rmse_per_walker": {}, "samples_per_walker": {}}
        for name in names:
            out["phase_rmse_pct"][name] = {g: self.rmse(name, g) for g in groups}
            out["coverage"][name] = {g: self.coverage(name, g) for g in groups}
            out["samples"][name] = {g: self.total.get((name, g), 0) for g in groups}
            e = np.asarray(self.hs[name])
            c = self.hs_counts[name]
            out["hs_timing_ms"][name] = {
                "mean": float(e.mean()) if len(e) else float("nan"),
                "mean_abs": float(np.abs(e).mean()) if len(e) else float("nan"),
                "median_abs": float(np.median(np.abs(e))) if len(e) else float("nan"),
                "p95_abs": float(np.percentile(np.abs(e), 95)) if len(e) else float("nan"),
                "truth_events": c[0], "matched": c[1], "extra": c[2],
            }
            per: dict = {g: {} for g in PER_WALKER_GROUPS}
            counts: dict = {g: {} for g in PER_WALKER_GROUPS}
            for (nm, g, subject), (sq, n) in sorted(self.per_subject.items()):
                if nm == name and n:
                    per[g][int(subject)] = float(np.sqrt(sq / n))
                    counts[g][int(subject)] = n
            out["rmse_per_walker"][name] = per
            out["samples_per_walker"][name] = counts
            out["walking_rmse_per_walker"][name] = per["walking"]
        cm = self.confusion
        tot = cm.sum()
        out["mode_accuracy"] = float(np.trace(cm) / tot) if tot else float("nan")
        out["mode_recall"] = {m: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else float("nan")
                              for i, m in enumerate(MODES)}
        out["mode_samples"] = {m: int(cm[i].sum()) for i, m in enumerate(MODES)}
        out["mode_confusion"] = cm.tolist()
        n_wrong = int(tot - np.trace(cm)) if tot else 0
        out["mode_errors_near_change"] = {f"{w:g}s": (self.mode_errors_near[w] / n_wrong if n_wrong else float("nan"))
                                          for w in NEAR_CHANGE_S}
        out["mode_accuracy_true_labels_delayed"] = {f"{d}ms": (self.delayed_hits[d] / tot if tot else float("nan"))
                                                     for d in LABEL_DELAYS_MS}
        d = np.asarray([x[2] for x in self.delays], dtype=float)
        s = np.asarray([x[3] for x in self.delays], dtype=float)
        ok = np.isfinite(d)
        out["mode_switch_delay"] = {
            "transitions": int(len(d)), "missed": int((~ok).sum()),
            "median_s": float(np.median(d[ok])) if ok.any() else float("nan"),
            "p90_s": float(np.percentile(d[ok], 90)) if ok.any() else float("nan"),
            "median_strides": float(np.median(s[ok])) if ok.any() else float("nan"),
            "p90_strides": float(np.percentile(s[ok], 90)) if ok.any() else float("nan"),
        }
        return out
