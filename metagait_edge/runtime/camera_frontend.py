"""The camera front end: BGR frames -> one pretreated silhouette per tracked walker and frame.

Per frame: person boxes (``detector``: foreground blobs of a fixed camera, or OpenCV's HOG people
detector) -> ``WalkerTracker`` (one id per walker) -> a person mask per confirmed track
(``silhouette_method``: the blob of the MOG2/KNN foreground, or a pre-trained segmentation model on the
track's crop) -> quality gates -> the OpenGait pretreatment (64x64). A frame is dropped for a track, and
counted by reason, when the walker is cut by the image edge, is a partial body (shorter than the track's
usual height, or the pose model does not see head, shoulders, hips and ankles), shares one blob with
another walker (merged: two tracks ran into one blob, the blob is wider than tall, or it has two heads side by
side, as a pair walking abreast has), or has not changed shape for a while (still: a ghost of the background model, an
object, someone standing: no gait to recognize). Nothing is emitted while the background model learns the scene (its first mask
is the whole image).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np

from metagait_edge.runtime.camera_masks import (
    BackgroundModel, CallableSegmenter, MediaPipePoseSegmenter, OnnxPersonSegmenter, PersonSegmenter, clean_mask,
    heads_in_view, largest_component, mask_iou,
)
from metagait_edge.runtime.camera_tracking import (
    Box, Detection, HogPeopleDetector, Track, WalkerTracker, blob_detections, expand_box, touches_edge,
)

SILHOUETTE_METHODS = ("mog2", "knn", "segmentation")
DETECTORS = ("motion", "hog")
SEGMENTERS = ("mediapipe-pose", "onnx")
_SHORT_OF_BLOB = 0.6  # segmented height / foreground-blob height below this: a partial body
# A confirmed track ends when its blob is wider than tall (two walkers, surely), or shows two heads in this many
# consecutive frames (one frame: a raised arm, a passing touch).
_MERGED_FRAMES_TO_END = 2


@dataclass
class CameraConfig:
    """``camera:`` in ``EdgeConfig`` (and the camera_node's ROS parameters of the same names)."""

    silhouette_method: str = "mog2"  # mog2 | knn (no model, fixed camera) | segmentation (pre-trained model)
    detector: str = "motion"  # person boxes: motion (foreground blobs; fixed camera) | hog (OpenCV people detector)
    segmenter: str = "mediapipe-pose"  # segmentation model: mediapipe-pose (bundled in mediapipe 0.10.21) | onnx
    segmenter_onnx: Optional[Path] = None  # segmenter onnx: the model file
    warmup_frames: int = 60  # background-model frames that learn the scene and emit nothing
    max_walkers: int = 3  # tracks at once
    min_area_px: int = 150  # smaller foreground blobs are noise
    min_height_px: int = 40  # smaller boxes are not a walker worth recognizing
    edge_margin_px: int = 2  # a mask this close to the image border is cut by it
    partial_height_ratio: float = 0.8  # shorter than this x the track's median height: partial body
    max_aspect: float = 1.0  # blob width / height above this: walkers merged side by side
    # Two heads in the mask's top band (heads_in_view) in this frame, or in at least half of the track's last
    # merged_memory frames: two walkers side by side in one blob, whatever its aspect. 0 turns the gate off.
    merged_memory: int = 10
    track_min_hits: int = 3  # matches before a track emits silhouettes
    track_max_missed: int = 10  # frames without a match before a track ends
    # Silhouettes unchanged (IoU >= still_iou with the previous) for still_frames frames: nobody walking there,
    # e.g. a background model's ghost of someone who left, an object moved into view, or a person standing.
    # A gait cycle changes the silhouette within a third of a second: keep still_frames >= fps / 3.
    still_iou: float = 0.97
    still_frames: int = 10

    def __post_init__(self) -> None:
        for name, value, allowed in (("silhouette_method", self.silhouette_method, SILHOUETTE_METHODS),
                                     ("detector", self.detector, DETECTORS), ("segmenter", self.segmenter, SEGMENTERS)):
            if value not in allowed:
                raise ValueError(f"camera.{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.silhouette_method == "segmentation" and self.segmenter == "onnx" and self.segmenter_onnx is None:
            raise ValueError("camera.segmenter onnx needs camera.segmenter_onnx (the model file)")
        if self.detector == "hog" and self.silhouette_method != "segmentation":
            raise ValueError("camera.detector hog needs camera.silhouette_method segmentation "
                             "(mog2/knn masks come from the foreground blobs)")
        if self.warmup_frames < 1 or self.max_walkers < 1 or self.track_min_hits < 1 or self.track_max_missed < 0:
            raise ValueError("camera: need warmup_frames >= 1, max_walkers >= 1, track_min_hits >= 1, "
                             "track_max_missed >= 0")
        if not 0 < self.still_iou <= 1 or self.still_frames < 1:
            raise ValueError("camera: need 0 < still_iou <= 1 and still_frames >= 1")
        if self.merged_memory < 0:
            raise ValueError(f"camera.merged_memory must be >= 0, got {self.merged_memory}")
        if not 0 < self.partial_height_ratio <= 1 or not self.max_aspect > 0:
            raise ValueError("camera: need 0 < partial_height_ratio <= 1 and max_aspect > 0")


@dataclass
class CameraCounters:
    """What happened to the frames (status counters); ``dropped_*`` are per track and frame."""

    frames: int = 0
    warmup: int = 0  # frames the background model learned from, nothing emitted
    no_detection: int = 0  # frames without any person box
    silhouettes: int = 0
    dropped_cut_by_edge: int = 0
    dropped_partial: int = 0
    dropped_merged: int = 0
    dropped_no_person: int = 0  # a box in which the model (or the pretreatment) found no person
    dropped_still: int = 0  # a silhouette that has not changed for still_frames frames: no gait there
    tracks_started: int = 0
    tracks_ended: int = 0

    def as_dict(self) -> Dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class TrackSilhouette:
    track: int
    silhouette: np.ndarray  # uint8 [64, 64], pretreated
    box: Box  # the person mask's bounding box in the frame
    mask: np.ndarray  # uint8 0/255 person mask inside ``box``
    frame_index: int

    def full_mask(self, shape) -> np.ndarray:
        out = np.zeros(shape[:2], np.uint8)
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1] = self.mask
        return out


@dataclass
class FrameResult:
    silhouettes: List[TrackSilhouette] = field(default_factory=list)
    ended_tracks: List[int] = field(default_factory=list)


def _mask_box(mask: np.ndarray) -> Optional[Box]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


class CameraFrontEnd:
    """Frames -> per-track silhouettes with drop counters; see the module doc. Not thread-safe: one caller."""

    def __init__(self, config: Optional[CameraConfig] = None, segmenter: Optional[PersonSegmenter] = None) -> None:
        self.config = cfg = config or CameraConfig()
        self.counters = CameraCounters()
        self.tracker = WalkerTracker(cfg.max_walkers, cfg.track_min_hits, cfg.track_max_missed)
        self.background = BackgroundModel("knn" if cfg.silhouette_method == "knn" else "mog2",
                                          warmup_frames=cfg.warmup_frames) if cfg.detector == "motion" else None
        self.hog = HogPeopleDetector(cfg.min_height_px) if cfg.detector == "hog" else None
        self.segmenter = None
        if cfg.silhouette_method == "segmentation":
            if segmenter is not None:
                self.segmenter = CallableSegmenter(segmenter)
            elif cfg.segmenter == "onnx":
                self.segmenter = CallableSegmenter(OnnxPersonSegmenter(cfg.segmenter_onnx))
            else:
                self.segmenter = MediaPipePoseSegmenter()
        self._index = -1

    def process(self, frame_bgr: np.ndarray) -> FrameResult:
        if frame_bgr is None or np.ndim(frame_bgr) != 3 or frame_bgr.shape[2] != 3:
            raise ValueError(f"expected a BGR frame [H, W, 3], got {None if frame_bgr is None else np.shape(frame_bgr)}")
        cfg, counters = self.config, self.counters
        self._index += 1
        counters.frames += 1
        labels = None
        if self.background is not None:
            foreground = self.background(frame_bgr)
            if foreground is None:
                counters.warmup += 1
                return FrameResult()
            detections, labels = blob_detections(clean_mask(foreground), cfg.min_area_px, cfg.min_height_px)
        else:
            detections = self.hog(frame_bgr)
        if not detections:
            counters.no_detection += 1
        update = self.tracker.update(detections)
        counters.tracks_started += len(update.born)
        counters.tracks_ended += len(update.ended)
        counters.dropped_merged += sum(1 for t in update.merged if self.tracker.confirmed(t))
        if self.segmenter is not None:
            for track in update.ended:
                self.segmenter.end(track)
        result = FrameResult(ended_tracks=list(update.ended))
        for track, det in update.matched:
            if not self.tracker.confirmed(track):
                continue
            sil = self._silhouette(frame_bgr, track, det, labels)
            if sil is not None:
                result.silhouettes.append(sil)
            elif track.merged_frames >= _MERGED_FRAMES_TO_END:
                self._end(track.id, result)
        counters.silhouettes += len(result.silhouettes)
        return result

    def _silhouette(self, frame: np.ndarray, track: Track, det: Detection, labels) -> Optional[TrackSilhouette]:
        from metagait_edge.data.pretreatment import pretreat_frame

        cfg, counters = self.config, self.counters
        merged_before, track.merged_frames = track.merged_frames, 0  # counts consecutive merged frames
        x0, y0, x1, y1 = det.box
        if (x1 - x0) > cfg.max_aspect * (y1 - y0):  # wider than any one walker's stride: two people in one blob
            return self._drop_merged(track, _MERGED_FRAMES_TO_END)  # sure: the track ends
        blob = None if labels is None else (labels[y0:y1, x0:x1] == det.label).astype(np.uint8) * 255
        # Judged on the foreground blob when there is one: a segmenter given a pair's crop returns one of them,
        # not always the same one.
        if blob is not None and self._side_by_side(track, blob):
            return self._drop_merged(track, merged_before + 1)
        whole_body = True
        if self.segmenter is None:  # the foreground blob is the mask
            crop = (x0, y0, x1, y1)
            mask = blob
        else:
            crop = expand_box(det.box, 0.15, frame.shape[:2])
            person = self.segmenter.segment(track.id, frame[crop[1]:crop[3], crop[0]:crop[2]])
            if person is None:
                counters.dropped_no_person += 1
                return None
            whole_body = person.whole_body
            mask = largest_component(clean_mask((person.probability > 0.5).astype(np.uint8) * 255), cfg.min_area_px)
        inner = _mask_box(mask)
        if inner is None:
            counters.dropped_no_person += 1
            return None
        box = (crop[0] + inner[0], crop[1] + inner[1], crop[0] + inner[2], crop[1] + inner[3])
        if touches_edge(box, frame.shape[:2], cfg.edge_margin_px):
            counters.dropped_cut_by_edge += 1
            return None
        height = box[3] - box[1]
        typical = track.typical_height()
        # A segmented person reaching the crop's border (inside the image) continues beyond the crop; one far
        # shorter than the moving blob it was found in is only part of that person (the blob may be taller by a
        # shadow or reflection, hence the looser bound).
        cut_by_crop = self.segmenter is not None and touches_edge(inner, mask.shape, 0)
        short_of_blob = self.segmenter is not None and self.background is not None and \
            height < _SHORT_OF_BLOB * (det.box[3] - det.box[1])
        if not whole_body or cut_by_crop or short_of_blob or \
                (typical is not None and height < cfg.partial_height_ratio * typical):
            counters.dropped_partial += 1
            return None
        mask = mask[inner[1]:inner[3], inner[0]:inner[2]]
        if blob is None and self._side_by_side(track, mask):
            return self._drop_merged(track, merged_before + 1)
        silhouette = pretreat_frame(mask)
        if silhouette is None:
            counters.dropped_no_person += 1
            return None
        track.heights.append(height)
        previous, track.last_silhouette = track.last_silhouette, silhouette
        unchanged = previous is not None and mask_iou(previous, silhouette) >= cfg.still_iou
        track.still_frames = track.still_frames + 1 if unchanged else 0
        if track.still_frames >= cfg.still_frames:
            counters.dropped_still += 1
            return None
        return TrackSilhouette(track.id, silhouette, box, np.ascontiguousarray(mask), self._index)

    def _drop_merged(self, track: Track, merged_frames: int) -> None:
        self.counters.dropped_merged += 1
        track.merged_frames = merged_frames

    def _end(self, track: int, result: FrameResult) -> None:
        """A track whose blob held a second walker ends there: when the blob splits, the part that keeps its
        box may be the other walker (seen on real video), so no buffer may continue across a merge."""
        self.tracker.end(track)
        self.counters.tracks_ended += 1
        result.ended_tracks.append(track)
        if self.segmenter is not None:
            self.segmenter.end(track)

    def _side_by_side(self, track: Track, mask: np.ndarray) -> bool:
        """Two walkers in one mask: two heads now, or in most of the track's recent frames (the heads of a pair
        overlap in some frames; the track is still the pair's)."""
        memory = self.config.merged_memory
        if memory == 0:
            return False
        two = heads_in_view(mask) >= 2
        track.two_heads = (track.two_heads + [two])[-memory:]
        return two or (len(track.two_heads) >= 3 and 2 * sum(track.two_heads) >= len(track.two_heads))

    def close(self) -> None:
        if self.segmenter is not None:
            self.segmenter.close()


def emitted(frames: Iterable[Optional[np.ndarray]], front_end: Optional[CameraFrontEnd] = None
            ) -> Dict[int, List[TrackSilhouette]]:
    """Every track's emitted silhouettes (with box and frame) over ``frames``, None frames skipped: {track: [...]}."""
    front_end = front_end or CameraFrontEnd()
    per_track: Dict[int, List[TrackSilhouette]] = {}
    for frame in frames:
        if frame is None:
            continue
        for sil in front_end.process(frame).silhouettes:
            per_track.setdefault(sil.track, []).append(sil)
    return per_track


def track_silhouettes(frames: Iterable[Optional[np.ndarray]], front_end: Optional[CameraFrontEnd] = None
                      ) -> Dict[int, np.ndarray]:
    """Every track's silhouettes over ``frames`` (None frames skipped): {track: uint8 [T, 64, 64]}."""
    return {t: np.stack([s.silhouette for s in sils]) for t, sils in emitted(frames, front_end).items()}
