"""Fit the synthetic IMU's gait-cycle template to HuGaDB (writes metagait_edge/resources/synthetic_imu_cycle.json).

    METAGAIT_DATA=../shared/data python training/fit_synthetic_imu.py

The template is the mean right-heel-strike-aligned cycle of the 36 IMU channels (physical units: g, deg/s)
over every HuGaDB walking file whose gyroscopes are not corrupted, each walker weighted equally, stored as
a truncated Fourier series per channel. ``metagait_edge.imu.synthetic.synthetic_imu`` plays it back, so the
synthetic walker has HuGaDB's sensor mounting (gravity on the segments' x axes, the sagittal swing on
gyro y, negative in swing) and its gait events are found by the same detector as a real recording's.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "metagait_edge" / "resources" / "synthetic_imu_cycle.json"


def main() -> None:
    from metagait_edge.data.cycles import cycles_from_recording
    from metagait_edge.sensors import IMU_CHANNELS
    from metagait_edge.data.gyro_validity import corrupted_gyros
    from metagait_edge.data.hugadb import HuGaDB

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harmonics", type=int, default=12)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    db = HuGaDB.open()
    per_subject: dict = {}
    strides = []
    for file_id in db.select("walking"):
        if corrupted_gyros(file_id):
            continue
        cs = cycles_from_recording(db.load(file_id))
        if len(cs) == 0:
            continue
        per_subject.setdefault(int(cs.subject[0]), []).append(cs.cycles[:, :36].astype(np.float64))
        strides.append(cs.duration / cs.sample_rate_hz)
    means = np.stack([np.concatenate(v).mean(axis=0) for v in per_subject.values()])  # [S, 36, 101]
    mean = means.mean(axis=0)[:, :-1]  # one period: point 100 is the next cycle's point 0
    spec = np.fft.rfft(mean, axis=1) / mean.shape[1]
    h = args.harmonics
    coef = np.concatenate([spec[:, :1].real, 2 * spec[:, 1:h + 1].real, -2 * spec[:, 1:h + 1].imag], axis=1)
    recon = _evaluate(coef, np.arange(100) / 100.0)
    rms = np.sqrt(((recon - mean) ** 2).mean(axis=1))
    stride_s = float(np.median(np.concatenate(strides)))
    doc = {
        "about": "mean HuGaDB walking cycle (right IC to right IC) of the 36 IMU channels, g and deg/s; "
                 "value(phase) = a0 + sum_k a_k cos(2 pi k phase) + b_k sin(2 pi k phase)",
        "command": "METAGAIT_DATA=../shared/data python training/fit_synthetic_imu.py",
        "date": datetime.date.today().isoformat(),
        "subjects": sorted(per_subject), "files": int(sum(len(v) for v in per_subject.values())),
        "median_stride_s": round(stride_s, 4), "harmonics": h, "channels": list(IMU_CHANNELS),
        "fit_rms": [round(float(r), 4) for r in rms],
        "coef": [[round(float(c), 5) for c in row] for row in coef],
    }
    coef_rows = ",\n".join("  " + json.dumps(row) for row in doc.pop("coef"))
    head = ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in doc.items())
    args.out.write_text("{\n" + head + ',\n"coef": [\n' + coef_rows + "\n]}\n")
    print(f"{args.out}: {len(per_subject)} subjects, {doc['files']} files, median stride {stride_s:.3f} s, "
          f"fit RMS max {rms.max():.3f}")


def _evaluate(coef: np.ndarray, phase: np.ndarray) -> np.ndarray:
    from metagait_edge.imu.synthetic import fourier_eval

    return fourier_eval(coef, phase)


if __name__ == "__main__":
    main()
