"""Person masks from camera frames: background subtraction (no model) or a pre-trained person segmenter.

- ``BackgroundModel``: OpenCV MOG2 / KNN. It learns the empty scene online, so its first masks are the whole
  image (the first frame is all foreground); ``warmup_frames`` frames learn quickly and return ``None``, so
  no warm-up mask ever reaches a silhouette buffer.
- ``MediaPipePoseSegmenter``: BlazePose (full) with its segmentation head, from the ``mediapipe`` 0.10.21
  wheel, which bundles the model (``mediapipe/modules/pose_landmark/pose_landmark_full.tflite``, Apache-2.0;
  nothing is downloaded at run time). One tracker per walker track, run on the track's crop; its landmarks
  also say whether the whole body is in the crop.
- ``OnnxPersonSegmenter``: any single-input person-segmentation ONNX model (the file is the user's).
- ``SilhouetteExtractor``: the single-walker mask of a whole frame (largest component), for callers that
  know there is one walker (enrolment videos, the demo).

cv2 and mediapipe are imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Protocol, Tuple

import numpy as np

MEDIAPIPE_VERSION = "0.10.21"  # the last release whose wheel bundles the pose-segmentation model
# BlazePose landmarks that must be visible for a whole body: nose, shoulders, hips, ankles.
_HEAD, _SHOULDERS, _HIPS, _ANKLES = (0,), (11, 12), (23, 24), (27, 28)


class PersonSegmenter(Protocol):
    """A person-segmentation model: BGR image -> float person probability (0..1) or uint8 mask [H, W]."""

    def __call__(self, frame_bgr: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class PersonMask:
    """One segmented crop: the person probability [h, w] and whether the model saw the whole body."""

    probability: np.ndarray
    whole_body: bool


class BackgroundModel:
    """MOG2 / KNN foreground of a fixed camera; ``None`` while the scene is being learned (warm-up)."""

    def __init__(self, method: str = "mog2", history: int = 200, var_threshold: float = 40.0,
                 learning_rate: float = 0.001, warmup_frames: int = 60) -> None:
        import cv2

        if method == "mog2":
            self._bg = cv2.createBackgroundSubtractorMOG2(history=history, varThreshold=var_threshold,
                                                          detectShadows=False)
        elif method == "knn":
            self._bg = cv2.createBackgroundSubtractorKNN(history=history, dist2Threshold=var_threshold * 10,
                                                         detectShadows=False)
        else:
            raise ValueError(f"background method must be mog2 or knn, got {method!r}")
        if warmup_frames < 1:
            raise ValueError(f"warmup_frames must be >= 1 (the first frame's mask is the whole image), got {warmup_frames}")
        self.learning_rate, self.warmup_frames = learning_rate, warmup_frames
        self.frames = 0

    @property
    def warming_up(self) -> bool:
        return self.frames <= self.warmup_frames

    def __call__(self, frame_bgr: np.ndarray) -> Optional[np.ndarray]:
        import cv2

        blurred = cv2.GaussianBlur(frame_bgr, (3, 3), 0)  # sensor noise would otherwise speckle the mask
        self.frames += 1
        # Learn the empty scene quickly at first (OpenCV's automatic 1/n rate), then slowly, so that a
        # walker who moves little between frames is not absorbed into the background.
        fg = self._bg.apply(blurred, learningRate=-1.0 if self.warming_up else self.learning_rate)
        if self.warming_up:
            return None
        return (fg > 127).astype(np.uint8) * 255


class OnnxPersonSegmenter:
    """A person-segmentation ONNX model (input NCHW float RGB in 0..1 at ``size``; output [1, 1|2, h, w]).

    Works with any single-input model of that shape (e.g. a MODNet/PP-HumanSeg export); the model file is
    not shipped: pass its path.
    """

    def __init__(self, path: str | Path, size: Tuple[int, int] = (256, 256), person_channel: int = -1) -> None:
        import onnxruntime as ort

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"person segmentation model {p} does not exist")
        self.session = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.size, self.person_channel = size, person_channel

    def __call__(self, frame_bgr: np.ndarray) -> np.ndarray:
        import cv2

        h, w = frame_bgr.shape[:2]
        x = cv2.resize(frame_bgr[:, :, ::-1], self.size).astype(np.float32) / 255.0
        out = self.session.run(None, {self.input: x.transpose(2, 0, 1)[None]})[0]
        prob = out[0, self.person_channel] if out.ndim == 4 else out[0]
        return cv2.resize(prob.astype(np.float32), (w, h))


def import_mediapipe_pose():
    """``mediapipe.solutions.pose``, or an ImportError saying which release to install and why."""
    hint = (f"silhouette_method 'segmentation' with segmenter 'mediapipe-pose' needs mediapipe=={MEDIAPIPE_VERSION} "
            f"(its wheel bundles the pose-segmentation model; needs numpy<2): "
            f"pip install 'metagait-edge[camera-models]'")
    try:
        import mediapipe as mp
    except ImportError as exc:
        raise ImportError(f"{hint}; mediapipe is not installed ({exc})") from exc
    solutions = getattr(mp, "solutions", None)
    if solutions is None or not hasattr(solutions, "pose"):
        raise ImportError(f"{hint}; mediapipe {getattr(mp, '__version__', '?')} has no bundled pose solution")
    return solutions.pose


class MediaPipePoseSegmenter:
    """Per-track BlazePose (full) with segmentation on the track's crop.

    Each track keeps its own tracker (landmarks follow one person from frame to frame). Only
    ``model_complexity=1`` is used: its weights are in the wheel, the lite and heavy ones would be
    downloaded at run time.
    """

    def __init__(self, min_visibility: float = 0.5, min_confidence: float = 0.5) -> None:
        self._pose_module = import_mediapipe_pose()
        self.min_visibility, self.min_confidence = min_visibility, min_confidence
        self._trackers: Dict[int, object] = {}

    def _tracker(self, track: int):
        if track not in self._trackers:
            self._trackers[track] = self._pose_module.Pose(
                static_image_mode=False, model_complexity=1, enable_segmentation=True, smooth_segmentation=False,
                min_detection_confidence=self.min_confidence, min_tracking_confidence=self.min_confidence)
        return self._trackers[track]

    def segment(self, track: int, crop_bgr: np.ndarray) -> Optional[PersonMask]:
        """The person in ``crop_bgr`` for ``track``; None when the model finds nobody."""
        import cv2

        result = self._tracker(track).process(cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2RGB))
        if result.segmentation_mask is None or result.pose_landmarks is None:
            return None
        marks = result.pose_landmarks.landmark

        def seen(i: int) -> bool:  # visible and inside the crop (landmarks are normalized to it)
            m = marks[i]
            return m.visibility >= self.min_visibility and 0.0 <= m.x <= 1.0 and 0.0 <= m.y <= 1.0

        whole = all(any(seen(i) for i in group) for group in (_HEAD, _SHOULDERS, _HIPS, _ANKLES))
        return PersonMask(np.asarray(result.segmentation_mask, np.float32), whole)

    def end(self, track: int) -> None:
        tracker = self._trackers.pop(track, None)
        if tracker is not None:
            tracker.close()

    def close(self) -> None:
        for track in list(self._trackers):
            self.end(track)


class CallableSegmenter:
    """A plain ``PersonSegmenter`` callable used per crop; it says nothing about the whole body (geometry
    gates decide)."""

    def __init__(self, segmenter: PersonSegmenter) -> None:
        self.segmenter = segmenter

    def segment(self, track: int, crop_bgr: np.ndarray) -> Optional[PersonMask]:
        prob = np.asarray(self.segmenter(crop_bgr), dtype=np.float32)
        if prob.max(initial=0.0) > 1.0:
            prob = prob / 255.0
        return PersonMask(prob, True)

    def end(self, track: int) -> None:
        pass

    def close(self) -> None:
        pass


def clean_mask(mask: np.ndarray, kernel: int = 3) -> np.ndarray:
    """Opening (speckle noise), then closing (holes from clothes matching the background)."""
    import cv2

    opening = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel, kernel))
    closing = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kernel + 2, kernel + 2))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, opening)
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, closing)


def fill_holes(blob: np.ndarray) -> np.ndarray:
    import cv2

    out = np.zeros_like(blob, dtype=np.uint8)
    contours, _ = cv2.findContours((blob > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, 255, thickness=cv2.FILLED)
    return out


def largest_component(mask: np.ndarray, min_area: int = 0) -> np.ndarray:
    """Keep the largest 8-connected blob (the walker), with its holes filled; empty if below ``min_area``."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask, dtype=np.uint8)
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[k, cv2.CC_STAT_AREA] < min_area:
        return np.zeros_like(mask, dtype=np.uint8)
    return fill_holes((labels == k).astype(np.uint8) * 255)


def heads_in_view(mask: np.ndarray, band: float = 0.2, min_share: float = 0.3) -> int:
    """Separate blobs in the top ``band`` of a person mask: one head (and shoulders) per walker.

    Two walkers side by side make one foreground blob no wider than tall (the aspect gate misses them), but
    its top band splits into two heads. A blob counts if its area is at least ``min_share`` of the largest
    one's, so a raised hand or a bag strap does not. On the real multi-walker video of docs/results/recognition.md
    ("Real video"), a couple walking side by side showed two heads in 83 % of its frames, single walkers in at
    most 5 %.
    """
    import cv2

    rows = max(1, int(round(band * mask.shape[0])))
    top = (np.asarray(mask)[:rows] > 0).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(top, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    return int(np.count_nonzero(areas >= min_share * areas.max())) if len(areas) else 0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else float(np.count_nonzero(a & b)) / union


class SilhouetteExtractor:
    """BGR frame -> uint8 0/255 mask of the one walker in view (largest component), frame-sized.

    ``method``: "mog2" / "knn" background subtraction (empty masks during the warm-up, never the first
    frame's whole-image mask), or "segmentation" with a ``segmenter`` callable (e.g.
    ``OnnxPersonSegmenter``) run on the whole frame. Several walkers: ``CameraFrontEnd``.
    """

    def __init__(self, method: str = "mog2", segmenter: Optional[PersonSegmenter] = None, history: int = 200,
                 var_threshold: float = 40.0, learning_rate: float = 0.001, min_area: int = 150,
                 kernel: int = 3, warmup_frames: int = 60) -> None:
        self.method = method
        self._bg = None
        if method in ("mog2", "knn"):
            self._bg = BackgroundModel(method, history, var_threshold, learning_rate, warmup_frames)
        elif method == "segmentation":
            if segmenter is None:
                raise ValueError("silhouette method 'segmentation' needs a segmenter (e.g. OnnxPersonSegmenter(path)); "
                                 "from a config: camera.silhouette_method with camera.segmenter")
        else:
            raise ValueError(f"silhouette method must be mog2, knn or segmentation, got {method!r}")
        self.segmenter = segmenter
        self.min_area, self.kernel = min_area, kernel

    def __call__(self, frame_bgr: np.ndarray) -> np.ndarray:
        if frame_bgr is None or frame_bgr.ndim != 3:
            raise ValueError(f"expected a BGR frame [H, W, 3], got {None if frame_bgr is None else frame_bgr.shape}")
        if self._bg is not None:
            mask = self._bg(frame_bgr)
            if mask is None:  # warm-up: the background is not learned yet
                return np.zeros(frame_bgr.shape[:2], np.uint8)
        else:
            mask = CallableSegmenter(self.segmenter).segment(0, frame_bgr).probability
            mask = (mask > 0.5).astype(np.uint8) * 255
        return largest_component(clean_mask(mask, self.kernel), self.min_area)
