"""The open-set threshold of a recognition checkpoint, fitted on its validation identities.

``metagait-edge calibrate-threshold`` runs :func:`calibrate_checkpoint` on each checkpoint; rerun it whenever
the weights change (a retrained checkpoint has another fingerprint, and identification refuses it until then).

Protocol (``evaluate.open_set_distances`` on the validation identities only, never the test identities):
the first half of the validation identities is enrolled with its nm-01..04 sequences, each sequence a
template (``mode="all"``, as ``metagait-edge enroll`` stores several templates per walker: views, passes);
probes are the other sequences (nm-05/06, bg, cl) of the enrolled identities (genuine: distance to their
own walker) and of the other half (impostors: distance to the nearest walker). The threshold is the largest
one whose false accept rate on those impostors is <= ``target_far`` (``gallery.fit_threshold``): an unknown
walker handed someone else's personalized model is the failure that matters, so FAR is fixed and FRR is
what it costs. ``evaluate_on_test`` then measures that threshold, unchanged, on held-out test identities.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Optional

import numpy as np

from metagait_edge.recognition.gallery import OpenSetThreshold

DEFAULT_TARGET_FAR = 0.01
DEFAULT_MODE = "all"
DEFAULT_METRIC = "cosine"


def _synthetic(data, what: str):
    if data.dataset != "synthetic":
        raise ValueError(f"{what}: the checkpoint was trained on {data.dataset}, whose configuration names no "
                         f"validation identities here; only synthetic-data checkpoints can be calibrated so far")
    return data.synthetic


def _rates(genuine, impostor, threshold: float) -> tuple[float, float, float]:
    from metagait_edge.recognition.gallery import equal_error_rate, far_frr_curve

    _, far, frr = far_frr_curve(genuine, impostor, [threshold])
    eer, _ = equal_error_rate(genuine, impostor)
    return float(far[0]), float(frr[0]), float(eer)


def fit_open_set_threshold(model, data, target_far: float = DEFAULT_TARGET_FAR, metric: str = DEFAULT_METRIC,
                           mode: str = DEFAULT_MODE, progress: bool = False, command: str = "",
                           log=print) -> OpenSetThreshold:
    """The :class:`OpenSetThreshold` of ``model`` on the validation identities of ``data`` (a DataConfig)."""
    from metagait_edge.recognition.checkpoint import model_fingerprint
    from metagait_edge.recognition.data import synthetic_index
    from metagait_edge.recognition.evaluate import extract_embeddings, open_set_distances
    from metagait_edge.recognition.gallery import fit_threshold

    s = _synthetic(data, "calibrate-threshold")
    ids = s.id_range("val")
    if len(ids) < 2:
        raise ValueError(f"calibrate-threshold: {len(ids)} validation identities (data.synthetic.val_ids); "
                         f"at least 2 are needed (some enrolled, some unknown)")
    emb = extract_embeddings(model, synthetic_index(s, "val", log=log), progress=progress, desc="embed validation")
    genuine, impostor, _, enrolled, unknown = open_set_distances(emb, metric, mode)
    threshold = fit_threshold(genuine, impostor, target_far)
    far, frr, eer = _rates(genuine, impostor, threshold)
    fitted_on = (f"synthetic seed {s.seed} validation ids {min(ids):03d}..{max(ids):03d} (enrolled "
                 f"{', '.join(enrolled)}; unknown {', '.join(unknown)}; nm-01..04 templates)")
    return OpenSetThreshold(
        threshold=float(threshold), metric=metric, mode=mode, target_far=float(target_far),
        model_fingerprint=getattr(model, "fingerprint", None) or model_fingerprint(model), fitted_on=fitted_on,
        val_far=far, val_frr=frr, eer=eer, n_genuine=int(genuine.size), n_impostor=int(impostor.size),
        command=command, created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def evaluate_on_test(model, data, record: OpenSetThreshold, quick: bool = True, progress: bool = False,
                     log=print) -> dict:
    """``record``'s threshold applied unchanged to the test identities: FAR, FRR, identification (0-1)."""
    from metagait_edge.recognition.data import synthetic_index
    from metagait_edge.recognition.evaluate import extract_embeddings, open_set_distances

    s = _synthetic(data, "calibrate-threshold --test")
    ids = s.id_range("test", quick)
    emb = extract_embeddings(model, synthetic_index(s, "test", quick=quick, log=log), progress=progress,
                             desc="embed test")
    genuine, impostor, hits, enrolled, unknown = open_set_distances(emb, record.metric, record.mode)
    far, frr, eer = _rates(genuine, impostor, record.threshold)
    ident = float(np.mean([ok and d <= record.threshold for ok, d in hits]))
    return {"ids": f"{min(ids):03d}..{max(ids):03d}", "enrolled": enrolled, "unknown": unknown, "far": far,
            "frr": frr, "identification": ident, "eer": eer, "n_genuine": int(genuine.size),
            "n_impostor": int(impostor.size)}


def calibrate_checkpoint(path: str | Path, target_far: float = DEFAULT_TARGET_FAR, metric: str = DEFAULT_METRIC,
                         mode: str = DEFAULT_MODE, write: bool = True, progress: bool = False, command: str = "",
                         log=print) -> tuple[OpenSetThreshold, object, object]:
    """Fit the threshold of the checkpoint at ``path`` and (``write``) store it in its sidecar.

    Returns (record, model, RecognitionConfig) so that callers can evaluate the same model further.
    """
    from metagait_edge.recognition.checkpoint import write_open_set
    from metagait_edge.recognition.train import load_model

    model, cfg = load_model(path)
    record = fit_open_set_threshold(model, cfg.data, target_far, metric, mode, progress, command, log)
    if write:
        write_open_set(path, record)
    return record, model, cfg


def markdown(rows: list[dict], command: str, machine: str, seconds: float, date: Optional[str] = None) -> str:
    """The report of one calibrate-threshold run: one row per checkpoint (validation fit, test measurement)."""
    date = date or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    first = rows[0]["record"]
    lines = [
        "# Open-set thresholds of the shipped recognition checkpoints",
        "",
        f"Generated by `{command}` on {date}, {machine}, in {seconds:.0f} s.",
        "",
        f"Each threshold is fitted on the checkpoint's **validation identities** ({first.fitted_on}) for a target "
        f"false accept rate of {100 * first.target_far:g} % ({first.metric} distance, every enrolled sequence a "
        f"template: gallery mode `{first.mode}`), stored in the checkpoint's JSON sidecar (`extra.open_set`, with "
        f"the fingerprint of the weights), and then applied unchanged to the held-out **test identities**. "
        f"Identification refuses a checkpoint without one. Rates in %; identification = enrolled probes accepted "
        f"*and* matched to the right walker; EER is threshold-free.",
        "",
        "| checkpoint | threshold | val FAR | val FRR | val EER | test ids | test FAR | test FRR | identification | test EER |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        r, t = row["record"], row.get("test")
        cells = [f"`{row['name']}`", f"{r.threshold:.4g}", f"{100 * r.val_far:.1f}", f"{100 * r.val_frr:.1f}",
                 f"{100 * r.eer:.1f}"]
        cells += ([t["ids"], f"{100 * t['far']:.1f}", f"{100 * t['frr']:.1f}", f"{100 * t['identification']:.1f}",
                   f"{100 * t['eer']:.1f}"] if t else ["-"] * 5)
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Probes per checkpoint: {first.n_genuine} genuine and {first.n_impostor} impostor on the validation "
              f"identities" + (f", {rows[0]['test']['n_genuine']} and {rows[0]['test']['n_impostor']} on the test "
                               f"identities." if rows[0].get("test") else ".")]
    return "\n".join(lines) + "\n"
