"""The phase ground truth's figures in docs/data.md.

1. Sub-sample timing error: every valid shank gyro of the walking files, ICs at 58.8 Hz (interpolated and
   integer) against the same detector on the signal upsampled x8.
2. Coverage of the gait rows per mode (both legs, every file), and the share of them whose stride the
   alternation check alone rejects (``PhaseTruth.rejected``), overall and for the walkers it hits most.

    METAGAIT_DATA=/work/shared/data .venv/bin/python training/phase_truth_error.py
"""
import numpy as np
from metagait_edge.data.hugadb import HuGaDB
from metagait_edge.data.gyro_validity import gyro_valid
from metagait_edge.phase.ground_truth import subsample_error
db = HuGaDB.open()
ef, ei, n = [], [], 0
from tqdm import tqdm

for fid in tqdm(db.select(activity="walking"), desc="walking files"):
    v = gyro_valid(fid)
    rec = db.load(fid)
    for leg, s in (("gyro_rs_y", "rs"), ("gyro_ls_y", "ls")):
        if v[s]:
            a, b = subsample_error(rec.channel(leg), rec.sample_rate_hz)
            ef.append(a); ei.append(b); n += 1
ef, ei = np.concatenate(ef), np.concatenate(ei)
ms = 1000 / 58.8
print(f"{n} clean shank recordings, {len(ef)} ICs: sub-sample RMS {np.sqrt(np.mean(ef**2))*ms:.2f} ms (p99 |e| {np.percentile(np.abs(ef),99)*ms:.2f} ms); integer RMS {np.sqrt(np.mean(ei**2))*ms:.2f} ms")

from metagait_edge.phase.dataset import GAIT_MODES, load_recordings

kept, rejected, rows = (np.zeros(len(GAIT_MODES)) for _ in range(3))
per_walker: dict = {}
files = list(db.file_ids)
for pr in load_recordings(db):  # files without a labelled mode row have no gait rows either
    w = per_walker.setdefault(pr.subject, np.zeros((2, len(GAIT_MODES))))
    for i in range(len(GAIT_MODES)):
        m = pr.mode == i
        k, r = np.isfinite(pr.truth.phase)[:, m].sum(), np.isfinite(pr.truth.rejected)[:, m].sum()
        kept[i] += k; rejected[i] += r; rows[i] += 2 * m.sum()
        w[:, i] += (k, r)
print(f"{len(files)} files, both legs: " + "; ".join(
    f"{m} coverage {100 * kept[i] / rows[i]:.1f} %, {100 * rejected[i] / rows[i]:.1f} % rejected by the alternation check"
    for i, m in enumerate(GAIT_MODES)))
for i, m in enumerate(GAIT_MODES):
    share = {s: v[1, i] / max(v.sum(0)[i], 1) for s, v in per_walker.items()}
    top = sorted(share, key=share.get, reverse=True)[:3]
    print(f"  {m}: most rejected " + ", ".join(f"walker {s} {100 * share[s]:.0f} %" for s in top))
