"""Enroll walkers from a video file or a live camera, and say who walks in a video.

Frames go through the camera front end (``runtime.camera.FrameSource``, then
``runtime.camera_frontend.track_silhouettes``: detection, one track per walker, masks, quality gates,
pretreatment) into silhouettes per walker track; each track is cut into windows of ``window`` silhouettes
(the runtime's ``recognition_window``), and each window is one embedding: a *template* when enrolling (every
pass, every view adds templates; each is labelled with where it came from), a *query* when identifying.

A video's track is identified by its windows: the walker accepted by more than half of them, else unknown
(the reasons of the rejected windows are kept: unknown, uncertain).
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

DEFAULT_WINDOW = 30  # silhouettes per template / query, as the runtime's recognition_window
MIN_FRAMES = 15  # a shorter track has too little of a gait cycle to embed


def windows(n: int, window: int = DEFAULT_WINDOW, min_frames: int = MIN_FRAMES) -> list[tuple[int, int]]:
    """Non-overlapping ``[start, stop)`` windows over ``n`` silhouettes (one shorter window when n < window)."""
    if window < 2:
        raise ValueError(f"window must be >= 2 silhouettes, got {window}")
    if n < min(min_frames, window):
        return []
    if n < window:
        return [(0, n)]
    return [(s, s + window) for s in range(0, n - window + 1, window)]


def read_frames(source, seconds: Optional[float] = None, max_frames: Optional[int] = None,
                progress: bool = False) -> list[np.ndarray]:
    """BGR frames of a ``runtime.camera.FrameSource`` until it ends, ``seconds`` pass or ``max_frames`` are read."""
    from tqdm import tqdm

    frames: list[np.ndarray] = []
    t0 = time.monotonic()
    bar = tqdm(desc=f"read {source.kind}", unit="frame", total=max_frames, disable=not progress)
    for frame, t in source:
        if frame is not None:
            frames.append(frame)
            bar.update(1)
        if (seconds is not None and t - t0 >= seconds) or (max_frames is not None and len(frames) >= max_frames):
            break
    bar.close()
    return frames


@dataclass
class Enrollment:
    walker: str
    added: List[str]  # labels of the templates this enrollment added
    templates: int  # the walker's templates in the gallery now
    silhouettes: int


def enroll_silhouettes(recognizer, walker: str, silhouettes: np.ndarray, label: str,
                       window: int = DEFAULT_WINDOW) -> Enrollment:
    """One template per window of one walker's silhouettes, added to ``recognizer.gallery``."""
    spans = windows(len(silhouettes), window)
    if not spans:
        raise ValueError(f"{label}: {len(silhouettes)} silhouettes of {walker!r}; enrollment needs at least "
                         f"{min(MIN_FRAMES, window)} (is the walker in view, whole?)")
    added = []
    for a, b in spans:
        name = f"{label} silhouettes {a}-{b - 1}"
        recognizer.enroll(walker, silhouettes[a:b], name)
        added.append(name)
    return Enrollment(walker, added, recognizer.gallery.num_sequences(walker), len(silhouettes))


def enroll_tracks(recognizer, walker: str, tracks: Dict[int, np.ndarray], label: str,
                  window: int = DEFAULT_WINDOW) -> Enrollment:
    """Enroll the one walker of a recording; several tracks (or none) are refused: whose would they be?"""
    if len(tracks) != 1:
        raise ValueError(f"{label}: enrollment needs exactly one walker in view, found {len(tracks)} track(s)")
    (silhouettes,) = tracks.values()
    return enroll_silhouettes(recognizer, walker, silhouettes, label, window)


@dataclass
class TrackIdentity:
    track: int
    walker_id: Optional[str]  # accepted by more than half of the windows, else None (unknown / uncertain)
    nearest_id: Optional[str]
    confidence: float  # mean confidence of the windows that accepted walker_id; 0 when unknown
    distance: float  # median distance to nearest_id over the windows
    silhouettes: int
    reason: str  # why walker_id is None ("" when accepted)
    windows: list = field(default_factory=list)  # runtime.camera.IdentityResult per window

    def as_dict(self) -> dict:
        """Plain JSON values (a distance that does not exist, e.g. with an empty gallery, is None)."""
        return {"track": self.track, "walker_id": self.walker_id, "accepted": self.walker_id is not None,
                "nearest_id": self.nearest_id, "confidence": round(self.confidence, 4),
                "distance": _finite(self.distance), "silhouettes": self.silhouettes, "reason": self.reason,
                "windows": [{"walker_id": w.walker_id, "nearest_id": w.nearest_id, "distance": _finite(w.distance),
                             "confidence": round(float(w.confidence), 4), "reason": w.reason} for w in self.windows]}


def _finite(value: float) -> Optional[float]:
    return float(value) if math.isfinite(value) else None


def identify_track(recognizer, track: int, silhouettes: np.ndarray, window: int = DEFAULT_WINDOW) -> TrackIdentity:
    spans = windows(len(silhouettes), window)
    if not spans:
        return TrackIdentity(track, None, None, 0.0, float("nan"), len(silhouettes),
                             f"too few silhouettes ({len(silhouettes)}) to identify")
    results = [recognizer.identify(silhouettes[a:b]) for a, b in spans]
    nearest = collections.Counter(r.nearest_id for r in results).most_common(1)[0][0]
    distance = float(np.median([r.distance for r in results if r.nearest_id == nearest]))
    votes = collections.Counter(r.walker_id for r in results if r.walker_id is not None)
    if votes:
        walker, count = votes.most_common(1)[0]
        if 2 * count > len(results):
            conf = float(np.mean([r.confidence for r in results if r.walker_id == walker]))
            return TrackIdentity(track, walker, nearest, conf, distance, len(silhouettes), "", results)
    reasons = collections.Counter(r.reason.split(":")[0] for r in results if r.walker_id is None)
    why = ", ".join(f"{k} in {v}" for k, v in reasons.most_common())
    reason = f"accepted by {votes.most_common(1)[0][1] if votes else 0} of {len(results)} windows ({why})"
    return TrackIdentity(track, None, nearest, 0.0, distance, len(silhouettes), reason, results)


def identify_tracks(recognizer, tracks: Dict[int, np.ndarray], window: int = DEFAULT_WINDOW) -> List[TrackIdentity]:
    return [identify_track(recognizer, k, s, window) for k, s in sorted(tracks.items())]


def describe_source(video: Optional[str | Path], camera: Optional[int]) -> str:
    return f"video {Path(video).name}" if video is not None else f"camera {camera}"
