"""Standard silhouette pretreatment (the OpenGait / GaitSet alignment).

A raw binary frame becomes a 64x64 uint8 silhouette: tight vertical crop of the foreground, resize to
height 64 keeping the aspect ratio, horizontal centring on the median of the column mass, pad/crop to
64 wide. The network input is then 64x44, obtained by cutting 10 px on each side (``cut_width``).
Frames with too little foreground (segmentation dropouts) are skipped and counted, never padded with
blanks, because a blank frame would teach the model that "nobody" is part of somebody's gait.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

FRAME_SIZE = 64
SIDE_CUT = 10
INPUT_WIDTH = FRAME_SIZE - 2 * SIDE_CUT  # 44
# OpenGait skips frames whose 0..255 sum is <= 10000, i.e. fewer than ~40 full-on pixels.
DEFAULT_MIN_FOREGROUND = 40


class PretreatmentError(ValueError):
    """A sequence could not be pretreated; the message names the sequence."""


@dataclass(frozen=True)
class PretreatedSequence:
    frames: np.ndarray  # uint8 [T, 64, 64]
    n_input: int
    n_skipped: int


def _binary(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim == 3:
        # Colour masks (e.g. PNGs saved as RGB): any channel on counts as foreground.
        frame = frame.max(axis=2)
    if frame.ndim != 2:
        raise ValueError(f"expected a 2-D frame, got shape {frame.shape}")
    if frame.dtype == bool:
        return frame.astype(np.uint8) * 255
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    return frame


def pretreat_frame(
    frame: np.ndarray, size: int = FRAME_SIZE, min_foreground: int = DEFAULT_MIN_FOREGROUND
) -> np.ndarray | None:
    """One frame (H x W, uint8 0..255, bool, or H x W x C) -> uint8 [size, size], or None if empty."""
    import cv2

    img = _binary(frame)
    if int(np.count_nonzero(img > 127)) < min_foreground:
        return None
    rows = np.flatnonzero(img.any(axis=1))
    img = img[rows[0]: rows[-1] + 1]
    h, w = img.shape
    new_w = max(1, int(round(w * size / h)))
    img = cv2.resize(img, (new_w, size), interpolation=cv2.INTER_CUBIC)
    col_mass = img.sum(axis=0, dtype=np.float64)
    total = col_mass.sum()
    if total <= 0:
        return None
    # Centre on the column-mass median: robust to a swinging arm or a bag pulling the mean sideways.
    x_center = int(np.searchsorted(np.cumsum(col_mass), total / 2.0))
    half = size // 2
    padded = np.zeros((size, new_w + 2 * half), dtype=np.uint8)
    padded[:, half: half + new_w] = img
    left = x_center  # x_center + half - half in padded coordinates
    return np.ascontiguousarray(padded[:, left: left + size])


def pretreat_frames(
    frames: Iterable[np.ndarray],
    name: str = "<sequence>",
    size: int = FRAME_SIZE,
    min_foreground: int = DEFAULT_MIN_FOREGROUND,
) -> PretreatedSequence:
    """Pretreat a sequence of raw frames; empty frames are skipped. No valid frame -> error naming ``name``."""
    out = []
    n = 0
    for frame in frames:
        n += 1
        try:
            p = pretreat_frame(frame, size=size, min_foreground=min_foreground)
        except ValueError as exc:
            raise PretreatmentError(f"{name}: frame {n - 1}: {exc}") from exc
        if p is not None:
            out.append(p)
    if not out:
        raise PretreatmentError(
            f"{name}: no valid frame among {n} (each has fewer than {min_foreground} foreground pixels)"
        )
    return PretreatedSequence(np.stack(out).astype(np.uint8), n, n - len(out))


def cut_width(frames: np.ndarray, cut: int = SIDE_CUT) -> np.ndarray:
    """[..., 64, 64] -> [..., 64, 44]: the network input, cutting ``cut`` px on each side."""
    if frames.shape[-1] <= 2 * cut:
        raise ValueError(f"frame width {frames.shape[-1]} too small to cut {cut} px per side")
    return frames[..., cut: frames.shape[-1] - cut]


def list_frame_files(directory: str | os.PathLike) -> list[Path]:
    """PNG/JPG frames of one raw sequence folder, in name order."""
    directory = Path(directory)
    exts = {".png", ".jpg", ".jpeg", ".bmp"}
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in exts)


def read_frame(path: str | os.PathLike) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise PretreatmentError(f"{path}: unreadable image")
    return img


def pretreat_directory(
    directory: str | os.PathLike, name: str | None = None, min_foreground: int = DEFAULT_MIN_FOREGROUND
) -> PretreatedSequence:
    """Pretreat the raw frames ``<id>/<type>/<view>/*.png`` of one sequence folder."""
    directory = Path(directory)
    files = list_frame_files(directory)
    label = name or str(directory)
    if not files:
        raise PretreatmentError(f"{label}: no image frames in {directory}")
    return pretreat_frames((read_frame(f) for f in files), name=label, min_foreground=min_foreground)


def to_model_input(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """uint8 [T, 64, 64] -> float32 [T, 64, 44] in 0..1 (what the model consumes)."""
    arr = np.asarray(frames)
    if arr.ndim != 3 or arr.shape[1:] != (FRAME_SIZE, FRAME_SIZE):
        raise ValueError(f"expected [T, {FRAME_SIZE}, {FRAME_SIZE}] frames, got shape {arr.shape}")
    return cut_width(arr).astype(np.float32) / 255.0
