"""Sub-sample timing error of the phase ground truth (docs/data.md): every valid shank gyro of the walking files,
ICs at 58.8 Hz (interpolated and integer) against the same detector on the signal upsampled x8.

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
