"""Person boxes and multi-walker tracking for the camera front end.

Detections are boxes from the foreground's connected components (``blob_detections``, fixed camera) or
OpenCV's HOG people detector (``HogPeopleDetector``: built into OpenCV, no weights to fetch; works with a
moving camera, slower). ``WalkerTracker`` keeps one track per walker: boxes matched greedily by IoU with
a constant-velocity prediction (never to a box over 30 % taller than the track's walker: that is them merged
with someone behind them); a track is born on an unmatched detection, confirmed after ``min_hits``
matches and ends after ``max_missed`` frames without one. One detection that covers two tracks is a
merged blob (walkers passing each other): the frame is dropped for both, and they stay one merge group
while the blob stays one. When it splits, nobody can say which part is which walker, so the group's tracks
end and the parts start new tracks: a buffer never receives another walker's silhouettes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

Box = Tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), pixels


def box_iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def touches_edge(box: Box, shape: Tuple[int, int], margin: int) -> bool:
    h, w = shape
    return box[0] <= margin or box[1] <= margin or box[2] >= w - margin or box[3] >= h - margin


def expand_box(box: Box, ratio: float, shape: Tuple[int, int]) -> Box:
    h, w = shape
    dx, dy = int(round((box[2] - box[0]) * ratio)), int(round((box[3] - box[1]) * ratio))
    return max(0, box[0] - dx), max(0, box[1] - dy), min(w, box[2] + dx), min(h, box[3] + dy)


@dataclass(frozen=True)
class Detection:
    box: Box
    label: int = 0  # connected-component label in the foreground (0: from a detector, no mask)


def blob_detections(mask: np.ndarray, min_area: int, min_height: int) -> Tuple[List[Detection], np.ndarray]:
    """Boxes of the foreground's connected components big enough for a walker, and the label image."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    out = []
    for k in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[k, :5])
        if area >= min_area and h >= min_height:
            out.append(Detection((x, y, x + w, y + h), k))
    return out, labels


class HogPeopleDetector:
    """OpenCV's default HOG + linear SVM people detector (Dalal-Triggs; part of OpenCV, Apache-2.0)."""

    def __init__(self, min_height: int = 64, hit_threshold: float = 0.0) -> None:
        import cv2

        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.min_height, self.hit_threshold = min_height, hit_threshold

    def __call__(self, frame_bgr: np.ndarray) -> List[Detection]:
        import cv2

        rects, weights = self._hog.detectMultiScale(frame_bgr, hitThreshold=self.hit_threshold, winStride=(8, 8),
                                                    padding=(8, 8), scale=1.05)
        if len(rects) == 0:
            return []
        boxes = [[int(x), int(y), int(w), int(h)] for x, y, w, h in rects if h >= self.min_height]
        keep = cv2.dnn.NMSBoxes(boxes, [float(s) for s in np.ravel(weights)[:len(boxes)]], 0.0, 0.4)
        # The HOG window pads the person by ~1/8 of its height: the box is tightened by the segmenter later.
        return [Detection((b[0], b[1], b[0] + b[2], b[1] + b[3])) for b in (boxes[i] for i in np.ravel(keep))]


@dataclass
class Track:
    id: int
    box: Box
    velocity: Tuple[float, float] = (0.0, 0.0)  # box centre, pixels per frame
    hits: int = 1
    missed: int = 0
    heights: List[int] = field(default_factory=list)  # silhouette heights of accepted frames (partial-body gate)
    group: Optional[int] = None  # merge group: tracks inside one merged blob
    last_silhouette: Optional[np.ndarray] = None  # the previous frame's (still-silhouette gate)
    still_frames: int = 0  # consecutive frames whose silhouette barely changed
    two_heads: List[bool] = field(default_factory=list)  # recent frames whose mask had two heads (merged gate)
    merged_frames: int = 0  # consecutive frames the front end dropped as merged (two walkers in its blob)

    def predicted(self) -> Box:
        if self.group is not None:
            return self.box
        dx, dy = (int(round(v)) for v in self.velocity)
        return self.box[0] + dx, self.box[1] + dy, self.box[2] + dx, self.box[3] + dy

    def update(self, box: Box) -> None:
        old = self.box
        cx = (box[0] + box[2] - old[0] - old[2]) / 2.0
        cy = (box[1] + box[3] - old[1] - old[3]) / 2.0
        self.velocity = (0.5 * self.velocity[0] + 0.5 * cx, 0.5 * self.velocity[1] + 0.5 * cy)
        self.box, self.hits, self.missed = box, self.hits + 1, 0

    def coast(self) -> None:
        self.box = self.predicted()

    def typical_height(self, min_samples: int = 5) -> Optional[float]:
        return float(np.median(self.heights[-30:])) if len(self.heights) >= min_samples else None


@dataclass
class TrackUpdate:
    """One frame's tracking: matched (track, detection), merged tracks, tracks born and ended."""

    matched: List[Tuple[Track, Detection]]
    merged: List[Track]
    born: List[int]
    ended: List[int]


class WalkerTracker:
    """IoU tracker with track birth (``min_hits``) and death (``max_missed``); at most ``max_tracks``."""

    def __init__(self, max_tracks: int = 4, min_hits: int = 3, max_missed: int = 10, min_iou: float = 0.2,
                 merge_iou: float = 0.1, max_height_growth: float = 0.3) -> None:
        self.max_tracks, self.min_hits, self.max_missed = max_tracks, min_hits, max_missed
        self.min_iou, self.merge_iou, self.max_height_growth = min_iou, merge_iou, max_height_growth
        self.tracks: Dict[int, Track] = {}
        self._next_id = 0

    def confirmed(self, track: Track) -> bool:
        return track.hits >= self.min_hits

    def update(self, detections: List[Detection]) -> TrackUpdate:
        predicted = {tid: t.predicted() for tid, t in self.tracks.items()}
        covers = [{tid for tid, box in predicted.items() if box_iou(box, det.box) > self.merge_iou}
                  for det in detections]
        free = set(range(len(detections)))
        merged: set[int] = set()
        ended: List[int] = []
        groups: Dict[int, List[int]] = {}
        for tid, track in self.tracks.items():
            if track.group is not None:
                groups.setdefault(track.group, []).append(tid)
        for group, members in groups.items():
            if len(members) == 1:  # its partner ended: this track may have been either walker
                del self.tracks[members[0]]
                ended.append(members[0])
                continue
            touching = [j for j in free if covers[j] & set(members)]
            if len(touching) == 1 and set(members) <= covers[touching[0]]:
                self._merge(members, detections[touching[0]].box, group)
                merged.update(members)
                free.discard(touching[0])
            elif touching:  # the blob split: which part is which walker is unknown
                for tid in members:
                    del self.tracks[tid]
                    ended.append(tid)
        for j in sorted(free):
            confirmed = [tid for tid in covers[j] if tid in self.tracks and self.tracks[tid].group is None
                         and self.confirmed(self.tracks[tid])]
            if len(confirmed) >= 2:
                self._merge(confirmed, detections[j].box, self._take_id())
                merged.update(confirmed)
                free.discard(j)
        pairs = sorted(((box_iou(predicted[tid], detections[j].box), tid, j) for tid in self.tracks
                        if tid not in merged and self.tracks[tid].group is None for j in free), reverse=True)
        matched, used_t = [], set()
        for iou, tid, j in pairs:
            if iou < self.min_iou or tid in used_t or j not in free or \
                    not self._not_taller(self.tracks[tid], detections[j].box):
                continue
            used_t.add(tid)
            free.discard(j)
            self.tracks[tid].update(detections[j].box)
            matched.append((self.tracks[tid], detections[j]))
        for tid, track in list(self.tracks.items()):
            if tid in used_t or tid in merged:
                continue
            track.coast()
            track.missed += 1
            if track.missed > self.max_missed:
                ended.append(tid)
                del self.tracks[tid]
        born = []
        for j in sorted(free):
            if len(self.tracks) < self.max_tracks:
                track = Track(self._take_id(), detections[j].box)
                self.tracks[track.id] = track
                born.append(track.id)
                matched.append((track, detections[j]))
        return TrackUpdate(matched, [self.tracks[t] for t in sorted(merged)], born, ended)

    def _not_taller(self, track: Track, box: Box) -> bool:
        """A walker's image height changes by a few percent a frame: a box much taller than the track's walker
        (its typical accepted height, else its last box) is them merged with someone behind them, and is not
        matched (seen on real video: a track that took such a box over followed the other walker out of it).
        A much shorter box stays matched: the front end's partial-body gate drops it, and a track's typical
        height only learns from frames it accepted."""
        before = track.typical_height() or track.box[3] - track.box[1]
        return before <= 0 or box[3] - box[1] <= (1 + self.max_height_growth) * before

    def end(self, tid: int) -> None:
        """End a track now (the front end saw a second walker in its blob); its blob's next detection starts a
        new one."""
        self.tracks.pop(tid, None)

    def _merge(self, members: List[int], box: Box, group: int) -> None:
        for tid in members:
            track = self.tracks[tid]
            track.box, track.group, track.missed = box, group, 0

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1
