"""One stretch of a HuGaDB file: each leg's shank gyroscope, the phase ground truth and the held-out estimate.

For looking at where the phase error of a file comes from (docs/results/phase.md, notes): the estimate is the
shipped ensemble of the fold whose test walkers include this file's walker (it never saw them), mirror-averaged,
as ``eval-phase`` scores it; the gyroscope is shown as the truth's detector reads it (a corrupted one, x10 and
clipped, divided back by its gain), with the truth's accepted ICs marked.

    METAGAIT_DATA=/work/shared/data .venv/bin/python training/phase_truth_plot.py \\
        --file HuGaDB_v1_various_18_08 --start 320 --end 560 --out docs/img/phase_truth_corrupted.png
"""

from __future__ import annotations

import argparse

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", required=True, help="a HuGaDB file id, e.g. HuGaDB_v1_various_18_08")
    ap.add_argument("--start", type=int, required=True, help="first row shown")
    ap.add_argument("--end", type=int, required=True, help="row after the last shown")
    ap.add_argument("--out", required=True, help="PNG path")
    args = ap.parse_args(argv)

    from metagait_edge.data.hugadb import HuGaDB
    from metagait_edge.phase.dataset import MODES, load_recordings
    from metagait_edge.phase.ground_truth import LEGS
    from metagait_edge.phase.evaluate import circular_error
    from metagait_edge.phase.folds import phase_folds
    from metagait_edge.phase.model import RESOURCE_DIR, decode, load_phase_ensemble, predict_recording
    from metagait_edge.plots import save_figure, subplots

    recs = load_recordings(HuGaDB.open(), file_ids=[args.file], progress=False)
    if not recs:
        raise SystemExit(f"{args.file}: no such HuGaDB file with labelled rows")
    rec = recs[0]
    fold = next(k for k, s in enumerate(phase_folds()) if rec.subject in s["test"])
    est = np.asarray(decode(predict_recording(load_phase_ensemble(RESOURCE_DIR / f"fold{fold}"), rec.x))["phase"]).T
    a, b = max(0, args.start), min(len(rec), args.end)
    if a >= b:
        raise SystemExit(f"--start {args.start} / --end {args.end}: no rows of {args.file} ({len(rec)} rows)")
    t = np.arange(a, b) / rec.fs
    fig, axes = subplots(2, 1, figsize=(11, 6), sharex=True)
    for li, (leg, ax) in enumerate(zip(LEGS, axes)):
        sensor = "rs" if leg == "right" else "ls"
        corrupted = not rec.valid[sensor]
        gyro = rec.shank_gyro[li, a:b] / (10.0 if corrupted else 1.0)
        truth = rec.truth.phase[li, a:b]
        e = circular_error(est[li, a:b], truth)
        rmse = float(np.sqrt(np.nanmean(e ** 2))) if np.isfinite(e).any() else float("nan")
        ax.plot(t, gyro, color="0.6", lw=1, label=f"{leg} shank gyro, deg/s{' (corrupted: / 10)' if corrupted else ''}")
        ax.set_ylabel("deg/s")
        ax2 = ax.twinx()
        ax2.plot(t, truth, "k.", ms=3, label="ground truth")
        ax2.plot(t, est[li, a:b], "r.", ms=2, label=f"estimate (fold {fold}, held out)")
        ic = rec.truth.ic[li]
        for x in ic[(ic >= a) & (ic < b)]:
            ax2.axvline(x / rec.fs, color="k", lw=0.6, ls=":")
        ax2.set_ylabel("phase (% of the cycle)")
        ax2.set_ylim(-5, 105)
        modes = sorted({MODES[m] for m in rec.mode[a:b] if m >= 0})
        ax.set_title(f"{leg} leg: phase RMSE {rmse:.1f} % here; rows labelled {', '.join(modes) or 'none'}", fontsize=9)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="lower left", fontsize=7)
    axes[-1].set_xlabel(f"time in {args.file} (s); dotted: the truth's accepted ICs")
    save_figure(fig, args.out, dpi=80)
    print(f"summary: {args.file} rows {a}-{b} (walker {rec.subject}, fold {fold}) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
