"""Phase error against samples since the estimator (re)started: is `phase.warmup_samples` long enough?

Restarts the fold-0 network at random points inside gait bouts of its held-out walkers' walking files (6 per
file, first 12 files; windows padded by repeating the first row, as after a runtime restart) and prints the
phase RMSE (% of the cycle, both legs) per band of samples since the restart.
Run: python training/phase_warmup.py   (needs METAGAIT_DATA)
"""
import numpy as np
import torch
from tqdm import tqdm
torch.set_num_threads(1)
from metagait_edge.data.hugadb import HuGaDB
from metagait_edge.phase.dataset import load_recordings
from metagait_edge.phase.folds import phase_folds
from metagait_edge.phase.model import load_phase_net, predict_recording, decode
from metagait_edge.phase.evaluate import circular_error
from metagait_edge.phase.model import RESOURCE_DIR
db = HuGaDB.open()
model = load_phase_net(RESOURCE_DIR / "fold0")
test = phase_folds()[0]["test"]
recs = [r for r in load_recordings(db, subjects=test, progress=False) if "walking" in r.file_id][:12]
bins = [0, 16, 32, 48, 64, 90, 117, 160, 240]
errs = {b: [] for b in bins[:-1]}
rng = np.random.default_rng(0)
for r in tqdm(recs, desc="restarts"):
    ok = np.isfinite(r.truth.phase[0])
    cand = np.flatnonzero(ok[:-300])
    for s0 in rng.choice(cand, size=min(6, len(cand)), replace=False):
        out = predict_recording(model, r.x[s0:s0 + 240])
        d = decode(out)
        truth = r.truth.phase[:, s0:s0 + 240]
        e = np.abs(circular_error(d["phase"].T, truth))
        for a, b in zip(bins[:-1], bins[1:]):
            seg = e[:, a:b]
            errs[a].append(seg[np.isfinite(seg)])
for a, b in zip(bins[:-1], bins[1:]):
    v = np.concatenate(errs[a]); print(f"samples {a:3d}-{b:3d} since restart: RMSE {np.sqrt(np.mean(v**2)):.2f} % (n={len(v)})")
