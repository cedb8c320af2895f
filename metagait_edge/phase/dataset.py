"""Per-sample inputs and labels for phase and mode estimation on HuGaDB.

Input per sample: the 36 IMU channels (accelerometers in g, gyroscopes in deg/s / ``GYRO_SCALE_DPS``) and
one validity flag per gyroscope (rf, rs, rt, lf, ls, lt). A corrupted gyroscope (the shipped table,
``data.gyro_validity``) is zeroed and flagged 0: the estimators see the mask, never the x10 signal.

Locomotion modes per row (``MODES``): HuGaDB's walking, running, going_up, going_down, standing, sitting,
and its two transitional activities (sitting_down, standing_up) as ``transition``. Bicycling, the lift
and sitting in a car are outside the issue's classes: label -1, neither trained on nor scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from metagait_edge.data.gyro_validity import gyro_valid
from metagait_edge.data.hugadb import Recording
from metagait_edge.data.gait_events import SHANK_CHANNEL
from metagait_edge.phase.ground_truth import LEGS, PhaseTruth, phase_truth
from metagait_edge.sensors import IMU_CHANNELS, SENSORS

MODES = ("walking", "running", "stairs_up", "stairs_down", "standing", "sitting", "transition")
GAIT_MODES = MODES[:4]
ACT_TO_MODE = {1: 0, 2: 1, 3: 2, 4: 3, 8: 4, 5: 5, 6: 6, 7: 6}
GYRO_SCALE_DPS = 250.0
N_INPUTS = len(IMU_CHANNELS) + len(SENSORS)  # 42
_GYRO_COLS = {s: [IMU_CHANNELS.index(f"gyro_{s}_{a}") for a in "xyz"] for s in SENSORS}


def mode_labels(act: np.ndarray) -> np.ndarray:
    """int64 [T]: index into ``MODES`` per row, -1 for activities outside them."""
    lut = np.full(256, -1, dtype=np.int64)
    for a, m in ACT_TO_MODE.items():
        lut[a] = m
    return lut[np.asarray(act, dtype=np.int64)]


def features(physical: np.ndarray, valid: dict) -> np.ndarray:
    """float32 [T, 42] from physical IMU values [T, 36] (g, deg/s) and ``{sensor: gyro valid}``."""
    x = np.asarray(physical, dtype=np.float32).copy()
    flags = np.ones((len(x), len(SENSORS)), dtype=np.float32)
    for i, s in enumerate(SENSORS):
        cols = _GYRO_COLS[s]
        x[:, cols] /= GYRO_SCALE_DPS
        if not valid.get(s, True):
            x[:, cols] = 0.0
            flags[:, i] = 0.0
    return np.concatenate([x, flags], axis=1)


def mask_gyros(x: np.ndarray, sensors: Sequence[str]) -> np.ndarray:
    """A copy of feature rows ``x`` [..., 42] with the gyroscopes of ``sensors`` masked (zero, flag 0)."""
    x = np.array(x, copy=True)
    for s in sensors:
        x[..., _GYRO_COLS[s]] = 0.0
        x[..., len(IMU_CHANNELS) + SENSORS.index(s)] = 0.0
    return x


def mirror_map() -> tuple[np.ndarray, np.ndarray]:
    """(source column, sign) per feature column: the same window as if the left and right legs were swapped.

    HuGaDB's six IMUs are mounted alike on both legs (checked on the walking files with six valid gyros: the
    left leg's signal half a stride later correlates positively with the right's in acc x, acc z and gyro y,
    the sagittal ones; the mean acc y is about -0.45 g on the right foot and +0.44 g on the left). So y is the
    mediolateral axis and a mirror through the sagittal plane keeps acc x, acc z, gyro y and negates acc y,
    gyro x, gyro z (rotations about the axes that lie in the mirror plane change sense); validity flags swap."""
    n_imu = len(IMU_CHANNELS)
    src = np.arange(n_imu + len(SENSORS))
    sign = np.ones(len(src), dtype=np.float32)
    other = {s: ("l" if s[0] == "r" else "r") + s[1:] for s in SENSORS}
    for j, name in enumerate(IMU_CHANNELS):
        kind, s, axis = name.split("_")
        src[j] = IMU_CHANNELS.index(f"{kind}_{other[s]}_{axis}")
        if (kind, axis) in {("acc", "y"), ("gyro", "x"), ("gyro", "z")}:
            sign[j] = -1.0
    for i, s in enumerate(SENSORS):
        src[n_imu + i] = n_imu + SENSORS.index(other[s])
    return src, sign


def mirror_features(x: np.ndarray) -> np.ndarray:
    """Feature rows ``x`` [..., 42] as if the legs were swapped (``mirror_map``), float32."""
    src, sign = mirror_map()
    return (np.asarray(x, np.float32)[..., src] * sign).astype(np.float32, copy=False)


@dataclass
class PhaseRecording:
    file_id: str
    subject: int
    x: np.ndarray  # float32 [T, 42]
    mode: np.ndarray  # int64 [T]
    act: np.ndarray  # uint8 [T]
    truth: PhaseTruth
    valid: dict  # sensor -> gyro valid
    fs: float
    shank_gyro: np.ndarray  # float32 [2, T] right, left sagittal shank gyro in deg/s, unmasked (the baseline's input)

    def __len__(self) -> int:
        return len(self.x)


def prepare_recording(rec: Recording) -> PhaseRecording:
    valid = gyro_valid(rec.file_id)
    shank = np.stack([rec.channel(SHANK_CHANNEL[leg]) for leg in LEGS])
    return PhaseRecording(rec.file_id, rec.subject, features(rec.physical(), valid), mode_labels(rec.act),
                          np.asarray(rec.act), phase_truth(rec), valid, rec.sample_rate_hz, shank)


def load_recordings(db, subjects: Sequence[int] | None = None, file_ids: Sequence[str] | None = None,
                    progress: bool = True) -> list[PhaseRecording]:
    """Every HuGaDB file of ``subjects`` (or ``file_ids``) with at least one labelled mode row."""
    ids = list(db.file_ids) if file_ids is None else list(file_ids)
    if subjects is not None:
        wanted = {int(s) for s in subjects}
        ids = [f for f in ids if int(f.split("_")[-2]) in wanted]
    out = []
    for rec in db.iter_recordings(ids, progress=progress, desc="HuGaDB -> phase truth"):
        pr = prepare_recording(rec)
        if (pr.mode >= 0).any():
            out.append(pr)
    return out


def windows(x: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """float32 [N, window, C]: the causal windows ending at rows ``ends`` (the first row repeats before 0)."""
    idx = np.asarray(ends)[:, None] + np.arange(-window + 1, 1)[None, :]
    return x[np.clip(idx, 0, None)]
