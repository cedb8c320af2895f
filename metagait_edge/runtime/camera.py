"""Camera input for walker recognition: frame sources, per-track silhouette buffers, recognition.

Pipeline (one thread, ``CameraPipeline``): a frame source (camera index, video file or folder of frames)
-> ``CameraFrontEnd`` (``camera_frontend``: person boxes, one track per walker, a person mask per track
from MOG2/KNN or a pre-trained segmentation model, quality gates, the OpenGait pretreatment to 64x64)
-> one ``SilhouetteBuffer`` track per walker -> every ``every`` frames the ``Recognizer`` embeds each
track's newest ``window`` silhouettes and asks the ``Gallery`` who it is.

cv2 and torch are imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Deque, Dict, Iterator, List, Optional, Tuple

import numpy as np

from metagait_edge.resources import RECOGNITION_CHECKPOINTS
from metagait_edge.runtime.camera_frontend import CameraCounters, CameraFrontEnd
# Public names of the mask extractors stay importable from here (the demo and the ROS tests use them).
from metagait_edge.runtime.camera_masks import (  # noqa: F401
    OnnxPersonSegmenter, PersonSegmenter, SilhouetteExtractor, largest_component, mask_iou,
)

log = logging.getLogger(__name__)



# ------------------------------------------------------------------------------------------- sources
class FrameSource:
    """Iterates ``(frame_bgr uint8 [H, W, 3], monotonic_time)``; ``None`` frames are read failures.

    ``kind``: "camera" (``index``), "video" (``path``) or "frames" (a folder of images, name order).
    ``fps``: pace video/frames playback in real time (None: as fast as possible); ``loop``: start over.
    """

    def __init__(self, kind: str, path: str | Path | None = None, index: int = 0, fps: Optional[float] = None,
                 loop: bool = False, max_consecutive_failures: int = 30) -> None:
        if kind not in ("camera", "video", "frames"):
            raise ValueError(f"camera source kind must be camera, video or frames, got {kind!r}")
        if kind != "camera":
            if path is None or not Path(path).exists():
                raise FileNotFoundError(f"{kind} source {path} does not exist")
        self.kind, self.path, self.index, self.fps, self.loop = kind, path, index, fps, loop
        self.max_failures = max_consecutive_failures
        self.frames_read = 0
        self.read_failures = 0

    def _files(self) -> list[Path]:
        from metagait_edge.data.pretreatment import list_frame_files

        files = list_frame_files(self.path)
        if not files:
            raise FileNotFoundError(f"frames source {self.path}: no .png/.jpg images")
        return files

    def _raw(self) -> Iterator[Optional[np.ndarray]]:
        import cv2

        if self.kind == "frames":
            files = self._files()
            while True:
                for f in files:
                    yield cv2.imread(str(f), cv2.IMREAD_COLOR)
                if not self.loop:
                    return
        while True:
            cap = cv2.VideoCapture(self.index if self.kind == "camera" else str(self.path))
            if not cap.isOpened():
                raise OSError(f"cannot open {self.kind} source {self.path if self.kind != 'camera' else self.index}")
            failures = 0
            try:
                while True:
                    ok, frame = cap.read()
                    if not ok:
                        if self.kind == "video":
                            break  # end of file
                        failures += 1
                        if failures > self.max_failures:
                            raise OSError(f"camera {self.index}: {failures} consecutive read failures")
                        yield None
                        continue
                    failures = 0
                    yield frame
            finally:
                cap.release()
            if not self.loop or self.kind == "camera":
                return

    def __iter__(self) -> Iterator[Tuple[Optional[np.ndarray], float]]:
        t0 = time.monotonic()
        for k, frame in enumerate(self._raw()):
            if self.fps:
                delay = t0 + k / self.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if frame is None:
                self.read_failures += 1
            else:
                self.frames_read += 1
            yield frame, time.monotonic()


# -------------------------------------------------------------------------------------- silhouettes
class SilhouetteBuffer:
    """Newest ``capacity`` pretreated silhouettes (uint8 [64, 64]) per walker track."""

    def __init__(self, capacity: int = 60) -> None:
        self.capacity = capacity
        self._tracks: Dict[int, Deque[np.ndarray]] = {}

    def push(self, silhouette: np.ndarray, track: int = 0) -> None:
        self._tracks.setdefault(track, collections.deque(maxlen=self.capacity)).append(silhouette)

    def latest(self, n: int, track: int = 0) -> np.ndarray:
        buf = self._tracks.get(track)
        if not buf:
            return np.zeros((0, 64, 64), np.uint8)
        items = list(buf)[-n:]
        return np.stack(items)

    def __len__(self) -> int:
        return sum(len(b) for b in self._tracks.values())

    def tracks(self) -> List[int]:
        return sorted(self._tracks)

    def count(self, track: int) -> int:
        return len(self._tracks.get(track, ()))

    def clear(self, track: Optional[int] = None) -> None:
        if track is None:
            self._tracks.clear()
        else:
            self._tracks.pop(track, None)


# -------------------------------------------------------------------------------------- recognition
@dataclass(frozen=True)
class IdentityResult:
    walker_id: Optional[str]  # accepted walker, None when unknown
    nearest_id: Optional[str]
    distance: float
    confidence: float  # 1 - distance / (2 * threshold), clipped to [0, 1]: 0.5 at the threshold; 0 when unknown
    num_frames: int
    embedding: np.ndarray
    track: int = 0  # the camera track (walker in view) the silhouettes came from
    reason: str = ""  # why the walker was not accepted (unknown, uncertain, no threshold); "" when accepted


def load_recognition_model(path: str | Path | None = None, tiny_seed: int = 0):
    """The MetaGait embedding model in inference mode.

    ``path``: a checkpoint (``<x>.safetensors`` + ``<x>.json`` with the MetaGaitConfig); None: the
    shipped one under ``resources/checkpoints/recognition/`` if present, else a randomly initialized
    CPU-sized MetaGait (a stand-in until recognition training ships weights).
    """
    import torch

    from metagait_edge.models.metagait import MetaGait, MetaGaitConfig
    from metagait_edge.recognition.checkpoint import load_recognition_checkpoint

    if path is None:
        found = sorted(RECOGNITION_CHECKPOINTS.glob("*.safetensors")) if RECOGNITION_CHECKPOINTS.is_dir() else []
        # The full MetaGait when shipped, else whichever variant is there.
        found.sort(key=lambda p: (p.stem != "metagait", p.stem))
        path = found[0] if found else None
    if path is None:
        torch.manual_seed(tiny_seed)
        model = MetaGait(MetaGaitConfig.cpu(channels=(8, 16, 32), num_classes=0))
        model.source = "random-init (no recognition checkpoint shipped)"
    else:
        model = load_recognition_checkpoint(path)
    model.set_mode("inference").eval()
    return model


class Recognizer:
    """Silhouettes (uint8 [T, 64, 64]) -> ``IdentityResult`` through the model and the ``Gallery``."""

    def __init__(self, model, gallery=None) -> None:
        from metagait_edge.recognition.checkpoint import model_fingerprint
        from metagait_edge.recognition.gallery import Gallery

        self.model = model
        self.gallery = gallery if gallery is not None else Gallery()
        # Templates of another model are not comparable with this one's embeddings: refused here.
        self.gallery.use_model(getattr(model, "fingerprint", None) or model_fingerprint(model))
        self.backend = "torch"
        self._backend = None

    def use_backend(self, kind: str = "auto", engine_cache: Optional[Path] = None, precision: str = "fp16") -> str:
        """Embed on ``kind`` from now on (``auto``: TensorRT, else ONNX Runtime, else torch); the model is
        exported once into ``$METAGAIT_CACHE/onnx``. Besides speed, ONNX Runtime and TensorRT run the whole
        forward pass without holding Python's interpreter lock, which the gait worker needs meanwhile."""
        from metagait_edge.deploy.backends import BackendConfig, cached_onnx, create_backend, runtime_kind

        resolved = runtime_kind(kind, False)
        if resolved == "torch":
            self._backend = None
        else:
            onnx = cached_onnx(self.model, "recognition")
            self._backend = create_backend(BackendConfig(kind=resolved, model="recognition", onnx=onnx, threads=1,
                                                         precision=precision, engine_cache=engine_cache))
        self.backend = resolved
        log.info("recognition model %s runs on %s", getattr(self.model, "source", "?"), resolved)
        return resolved

    def embed(self, silhouettes: np.ndarray) -> np.ndarray:
        import torch

        from metagait_edge.data.pretreatment import to_model_input

        x = to_model_input(silhouettes)  # [T, 64, 44] in 0..1
        cfg = self.model.config
        if x.shape[1:] != (cfg.input_height, cfg.input_width):
            import cv2  # a smaller edge model (e.g. 32x22): downscale the aligned silhouettes

            x = np.stack([cv2.resize(f, (cfg.input_width, cfg.input_height), interpolation=cv2.INTER_AREA) for f in x])
        x = np.ascontiguousarray(x, dtype=np.float32)[None]
        if self._backend is not None:
            return self._backend.run(x)[self._backend.output_name][0]
        with torch.no_grad():
            return self.model(torch.from_numpy(x))["embeddings"][0].numpy()

    def enroll(self, walker_id: str, silhouettes: np.ndarray, label: str = "") -> np.ndarray:
        """Add one template of ``walker_id`` (``label``: where the silhouettes came from) to the gallery."""
        emb = self.embed(silhouettes)
        self.gallery.enroll(walker_id, emb, label)
        return emb

    def identify(self, silhouettes: np.ndarray) -> IdentityResult:
        emb = self.embed(silhouettes)
        if len(self.gallery) == 0:
            return IdentityResult(None, None, math.nan, 0.0, len(silhouettes), emb, reason="empty gallery")
        ident = self.gallery.identify(emb)  # nobody is accepted without a calibrated threshold
        thr = self.gallery.threshold
        if thr is None or not thr > 0 or ident.walker_id is None:
            conf = 0.0
        else:
            conf = float(np.clip(1.0 - ident.distance / (2.0 * thr), 0.0, 1.0))
        return IdentityResult(ident.walker_id, ident.nearest_id, float(ident.distance), conf, len(silhouettes), emb,
                              reason=ident.reason)


def build_recognizer(gallery_path: str | Path | None = None, threshold: Optional[float] = None,
                     model_path: str | Path | None = None) -> Recognizer:
    """A ``Recognizer`` on the shipped (or given) model and a gallery file (empty gallery when none), for
    identification: the gallery must have been enrolled with this model, and the threshold is ``threshold``,
    else the gallery file's, else the model's calibrated one; none of them: refused (CheckpointError)."""
    from metagait_edge.recognition.identification import open_gallery

    model = load_recognition_model(model_path)
    return Recognizer(model, open_gallery(model, gallery_path, threshold))


def silhouettes_from_frames(frames, extractor: Optional[SilhouetteExtractor] = None) -> np.ndarray:
    """Run the extractor + pretreatment over BGR frames; uint8 [T', 64, 64] (empty frames skipped)."""
    from metagait_edge.data.pretreatment import pretreat_frame

    extractor = extractor or SilhouetteExtractor()
    out = [s for s in (pretreat_frame(extractor(f)) for f in frames if f is not None) if s is not None]
    return np.stack(out) if out else np.zeros((0, 64, 64), np.uint8)


@dataclass
class CameraStats:
    frames: int = 0
    read_failures: int = 0  # frames the source failed to deliver (drops)
    silhouettes: int = 0  # over all tracks
    empty: int = 0  # frames that gave no silhouette (nobody in view, warm-up, or every walker's frame dropped)
    queries: int = 0
    last_identity: Optional[str] = None
    fps: float = 0.0


class CameraPipeline:
    """Thread: source -> front end -> one buffer per track -> recognition every ``every`` frames -> ``on_identity``.

    Each track with at least ``min_frames`` silhouettes is identified on its newest ``window`` (the result
    names its ``track``); a track that ends takes its buffer with it. ``front_end.counters`` says why
    frames were dropped.
    """

    def __init__(self, source, recognizer: Recognizer, on_identity: Callable[[IdentityResult], None],
                 front_end: Optional[CameraFrontEnd] = None, every: int = 15, window: int = 30,
                 min_frames: int = 15, nice: int = 0) -> None:
        self.source, self.recognizer, self.on_identity = source, recognizer, on_identity
        self.front_end = front_end or CameraFrontEnd()
        self.every, self.window, self.min_frames = every, window, min_frames
        self.nice = nice
        self.buffer = SilhouetteBuffer(capacity=max(window, 2 * every))
        self.stats = CameraStats()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.error: Optional[BaseException] = None

    @property
    def counters(self) -> CameraCounters:
        return self.front_end.counters

    def start(self) -> "CameraPipeline":
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def process(self, frame: Optional[np.ndarray]) -> List[IdentityResult]:
        """One frame through the pipeline (also used directly by tests); the identities queried, per track."""
        self.stats.frames += 1
        if frame is None:
            self.stats.read_failures += 1
            return []
        result = self.front_end.process(frame)
        for track in result.ended_tracks:
            self.buffer.clear(track)
        for sil in result.silhouettes:
            self.buffer.push(sil.silhouette, sil.track)
        self.stats.silhouettes += len(result.silhouettes)
        if not result.silhouettes:
            self.stats.empty += 1
        if self.stats.frames % self.every:
            return []
        out = []
        for track in self.buffer.tracks():
            if self.buffer.count(track) < self.min_frames:
                continue
            ident = self.recognizer.identify(self.buffer.latest(self.window, track))
            out.append(dataclasses.replace(ident, track=track))
            self.stats.queries += 1
            self.stats.last_identity = ident.walker_id
        return out

    def _run(self) -> None:
        if self.nice > 0 and hasattr(os, "setpriority"):
            # Perception yields the cores to the sensor and control threads (Linux: per-thread nice value).
            try:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except OSError as exc:
                log.warning("camera thread: cannot lower priority to nice %d: %s", self.nice, exc)
        t0 = time.monotonic()
        try:
            for frame, _t in self.source:
                if self._stop.is_set():
                    break
                results = self.process(frame)
                self.stats.fps = self.stats.frames / max(1e-6, time.monotonic() - t0)
                for result in results:
                    self.on_identity(result)
        except Exception as exc:  # a camera fault must not take down the gait pipeline
            self.error = exc
            log.error("camera pipeline stopped: %s", exc)
        finally:
            self.front_end.close()
