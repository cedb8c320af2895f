"""Walker identification for the ROS 2 camera node: the camera pipeline's recognizer, ROS-shaped.

``build_recognizer(gallery_path, threshold)`` returns an object with ``identify(silhouettes, stamp_ns) ->
IdentityOutput`` (``metagait_edge.ros.msgs``), the interface ``metagait_edge_ros.runtime_adapter`` expects.
It lives on the ROS side: ROS adapts the runtime, the runtime never imports ROS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from metagait_edge.ros.msgs.records import IdentityOutput
from metagait_edge.runtime import camera


class RosRecognizer:
    """Adapts :class:`metagait_edge.runtime.camera.Recognizer` to ROS identity records."""

    def __init__(self, recognizer: camera.Recognizer) -> None:
        self.recognizer = recognizer

    def identify(self, silhouettes: np.ndarray, stamp_ns: int) -> IdentityOutput:
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
        )


def build_recognizer(gallery_path: str | Path | None = None, threshold: Optional[float] = None,
                     model_path: str | Path | None = None) -> RosRecognizer:
    return RosRecognizer(camera.build_recognizer(gallery_path, threshold, model_path))
