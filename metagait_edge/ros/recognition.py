"""Walker identification and enrollment for the ROS 2 camera node: the camera pipeline's recognizer, ROS-shaped.

``build_recognizer(gallery_path, threshold)`` returns an object with ``identify(silhouettes, stamp_ns) ->
IdentityOutput`` (``metagait_edge.ros.msgs``), the interface ``metagait_edge_ros.runtime_adapter`` expects,
and ``enroll(walker, silhouettes, window)`` for the ``Enroll`` action (templates from the live stream, the
gallery file rewritten atomically). The gallery is opened as everywhere else
(``recognition.identification.open_gallery``): enrolled with this model, and a calibrated threshold.
It lives on the ROS side: ROS adapts the runtime, the runtime never imports ROS.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

from metagait_edge.ros.msgs.records import IdentityOutput
from metagait_edge.runtime import camera


class RosRecognizer:
    """Adapts :class:`metagait_edge.runtime.camera.Recognizer` to ROS identity records; ``enroll`` adds templates
    and saves the gallery to ``gallery_path``. Safe to call from the camera callback and an action thread."""

    def __init__(self, recognizer: camera.Recognizer, gallery_path: str | Path | None = None) -> None:
        self.recognizer = recognizer
        self.gallery_path = Path(gallery_path) if gallery_path else None
        self._lock = threading.Lock()  # the gallery changes under enrollment while the camera identifies

    def identify(self, silhouettes: np.ndarray, stamp_ns: int) -> IdentityOutput:
        with self._lock:
            result = self.recognizer.identify(silhouettes)
            threshold = self.recognizer.gallery.threshold
        return IdentityOutput(
            walker_id=result.walker_id or "",
            known=result.walker_id is not None,
            score=float(result.confidence),
            threshold=float(threshold) if threshold is not None else float("nan"),
            stamp_ns=int(stamp_ns),
            best_match=result.nearest_id or "",
            num_frames=int(result.num_frames),
            embedding=np.asarray(result.embedding, np.float32).reshape(-1),
            reason=result.reason,
        )

    def enroll(self, walker: str, silhouettes: np.ndarray, window: int):
        """Templates of ``walker`` from ``silhouettes`` (``runtime.enrollment.Enrollment``), saved atomically."""
        from metagait_edge.runtime.enrollment import enroll_silhouettes

        if self.gallery_path is None:
            raise ValueError("gallery_path: empty; enrollment needs a gallery file to write")
        with self._lock:
            result = enroll_silhouettes(self.recognizer, walker, silhouettes,
                                        f"ROS camera_node {time.strftime('%Y-%m-%d %H:%M')}", window)
            self.recognizer.gallery.save(self.gallery_path)
        return result


def build_recognizer(gallery_path: str | Path | None = None, threshold: Optional[float] = None,
                     model_path: str | Path | None = None, create: bool = False) -> RosRecognizer:
    """``create``: a gallery file that does not exist yet starts empty (enrollment writes it)."""
    from metagait_edge.recognition.identification import open_gallery

    model = camera.load_recognition_model(model_path)
    gallery = open_gallery(model, gallery_path, threshold, create=create)
    return RosRecognizer(camera.Recognizer(model, gallery), gallery_path)
