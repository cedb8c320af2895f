"""A virtual walker: IMU frames through a real pty serial link, plus a camera video of the same walker.

IMU: a held-out HuGaDB subject's walking recording (real data from ``$METAGAIT_DATA``; default subject 8,
a fold-0 test subject whose walking files have no corrupted gyroscope), or a synthetic gait
(``imu.synthetic.synthetic_imu``) when the data is absent. Frames go out in the binary protocol
(``imu.protocol``) at ``rate_hz`` on an absolute schedule (``imu.replay.PacedThread``) through a pty; the reader opens a
stable symlink to the pty slave, so ``unplug()`` / ``replug()`` emulate a USB device that disappears and
comes back under the same name.

Camera: the synthetic walker (``synth.identity.identity_from_subject`` with that subject's height, weight, sex
and measured cadence) rendered side-on, composited onto a textured, noisy background, written with
``cv2.VideoWriter``; the scene starts empty (the walker walks into view), as a fixed camera sees it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from metagait_edge.imu.protocol import encode_frame
from metagait_edge.imu.replay import PacedThread
from metagait_edge.sensors import HUGADB_RATE_HZ

log = logging.getLogger(__name__)

DEFAULT_SUBJECT = 8


@dataclass
class WalkerSpec:
    name: str  # e.g. "hugadb-08"
    samples: np.ndarray  # int16 [N, 36] raw counts at rate_hz
    rate_hz: float
    height_cm: float
    weight_kg: float
    sex: str
    cadence_spm: float
    source: str  # "hugadb:<file_id>" or "synthetic"
    true_cycles: Optional[np.ndarray] = None  # float32 [K, 42, 101] offline cycles (physical units)
    channels: tuple = ()


def _resample(samples: np.ndarray, src_hz: float, dst_hz: float) -> np.ndarray:
    if abs(src_hz - dst_hz) < 1e-9:
        return samples
    n = int(len(samples) * dst_hz / src_hz)
    t_src = np.arange(len(samples)) / src_hz
    t_dst = np.arange(n) / dst_hz
    out = np.stack([np.interp(t_dst, t_src, samples[:, c].astype(np.float64)) for c in range(samples.shape[1])], 1)
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def _readme_table(db) -> Dict[int, dict]:
    from metagait_edge.paths import data_root
    from metagait_edge.synth.dataset import hugadb_subjects

    for cand in [data_root(required=False) / "hugadb" / "HuGaDB_README.md",
                 *db.data_dir.parent.glob("**/README.md")]:
        if cand.is_file():
            try:
                return hugadb_subjects(cand)
            except ValueError:
                continue
    return {}


def load_walker(subject: Optional[int] = DEFAULT_SUBJECT, rate_hz: float = HUGADB_RATE_HZ,
                prefer_data: bool = True) -> WalkerSpec:
    """The virtual walker's IMU recording and body: HuGaDB when available, else synthetic."""
    if prefer_data and subject is not None:
        try:
            return _hugadb_walker(int(subject), rate_hz)
        except (FileNotFoundError, OSError, ValueError) as exc:
            log.warning("HuGaDB walker unavailable (%s); using a synthetic IMU walker", exc)
    return synthetic_walker(rate_hz)


def _hugadb_walker(subject: int, rate_hz: float) -> WalkerSpec:
    from metagait_edge.data.cycles import cycle_channels, cycles_from_recording
    from metagait_edge.data.gyro_validity import corrupted_gyros
    from metagait_edge.data.hugadb import HuGaDB

    db = HuGaDB.open()
    files = [f for f in db.select("walking", [subject]) if not corrupted_gyros(f)]
    if not files:
        raise ValueError(f"HuGaDB subject {subject} has no walking file with valid gyroscopes")
    rec = max((db.load(f) for f in files), key=len)  # the longest clean walk: many cycles to stream
    cs = cycles_from_recording(rec)
    table = _readme_table(db).get(subject, {})
    stride_s = float(np.median(cs.duration)) / rec.sample_rate_hz if len(cs) else 1.1
    return WalkerSpec(
        name=f"hugadb-{subject:02d}", samples=_resample(rec.raw, rec.sample_rate_hz, rate_hz), rate_hz=rate_hz,
        height_cm=table.get("height_cm", 175.0), weight_kg=table.get("weight_kg", 70.0), sex=table.get("sex", "M"),
        cadence_spm=float(np.clip(120.0 / stride_s, 40, 200)), source=f"hugadb:{rec.file_id}",
        true_cycles=cs.cycles, channels=tuple(cycle_channels()),
    )


def synthetic_walker(rate_hz: float = HUGADB_RATE_HZ, seconds: float = 60.0, seed: int = 0) -> WalkerSpec:
    """A synthetic IMU walker ``synthetic-<seed + 1>``; each seed another body and cadence (seed 0: 172 cm, 68 kg,
    F, 108 steps/min), so that distinct seeds are distinct walkers for the camera too."""
    from metagait_edge.imu.synthetic import synthetic_imu

    height, weight, sex, cadence_hz = 172.0, 68.0, "F", 0.9
    if seed:
        rng = np.random.default_rng(seed)
        sex = "MF"[int(rng.integers(2))]
        height = float(rng.uniform(165, 192) if sex == "M" else rng.uniform(152, 178))
        weight = float(rng.uniform(0.33, 0.5) * height)
        cadence_hz = float(rng.uniform(0.82, 0.98))
    samples = synthetic_imu(int(seconds * rate_hz), rate_hz, seed, cadence_hz)  # HuGaDB's mounting and mean cycle
    return WalkerSpec(
        name=f"synthetic-{seed + 1:02d}", samples=samples, rate_hz=rate_hz,
        height_cm=round(height, 1), weight_kg=round(weight, 1), sex=sex, cadence_spm=120.0 * cadence_hz,
        source="synthetic",
    )


# ------------------------------------------------------------------------------------------- serial
def frame_write_time(ring: np.ndarray, seq: int, written: int) -> Optional[int]:
    """Write time of frame ``seq`` from a write-time ring, None if not written yet or overwritten since."""
    if not 0 <= seq < written or seq < written - len(ring):
        return None
    return int(ring[seq % len(ring)])


class PtySerialLink:
    """Streams a walker's frames into a pty at ``rate_hz``; the reader opens ``self.path`` (a symlink)."""

    def __init__(self, samples: np.ndarray, rate_hz: float, folder: str | Path, loop: bool = True,
                 corrupt: Optional[callable] = None, write_times: Optional[np.ndarray] = None) -> None:
        self.samples, self.rate_hz, self.loop = np.asarray(samples), float(rate_hz), loop
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "ttyVIRTUAL0"
        self.corrupt = corrupt  # optional bytes -> bytes fault injector
        # CLOCK_REALTIME when frame seq was written, at [seq % len]: a fixed ring, so a soak keeps flat memory.
        # Pass a shared buffer (e.g. over multiprocessing shared memory) to read it from another process.
        self.write_times_ns = np.zeros(1 << 16, np.int64) if write_times is None else write_times
        self.written = 0
        self.lost = 0  # frames the pty refused (nobody reading and buffer full)
        self._fds: Optional[tuple] = None
        self._lock = threading.Lock()
        self._player: Optional[PacedThread] = None
        self._plugged = threading.Event()
        self.replug()

    def replug(self) -> None:
        import tty

        with self._lock:
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(os.ttyname(slave))
            os.replace(tmp, self.path)
            self._fds = (master, slave)
        self._plugged.set()

    def unplug(self) -> None:
        """The device disappears: the link is removed and the pty closed (readers see EIO / ENOENT)."""
        with self._lock:
            self._plugged.clear()
            self.path.unlink(missing_ok=True)
            if self._fds is not None:
                for fd in self._fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                self._fds = None

    def _write(self, data: bytes) -> None:
        with self._lock:
            if self._fds is None:
                self.lost += 1
                return
            if self.corrupt is not None:
                data = self.corrupt(data)
            try:
                if os.write(self._fds[0], data) < len(data):
                    self.lost += 1
            except (BlockingIOError, OSError):
                self.lost += 1

    def start(self, max_frames: Optional[int] = None) -> "PtySerialLink":
        self._player = PacedThread(self._send, len(self.samples), self.rate_hz, thread_name="virtual-walker-imu",
                                   loop=self.loop, max_frames=max_frames, clock=time.perf_counter).start()
        return self

    def _send(self, k: int) -> None:
        frame = encode_frame(k, int(round(k * (1.0 / self.rate_hz) * 1e6)), self.samples[k % len(self.samples)])
        self.write_times_ns[k % len(self.write_times_ns)] = time.time_ns()
        self._write(frame)
        self.written = k + 1

    def write_time_ns(self, seq: int) -> Optional[int]:
        """When frame ``seq`` was written (CLOCK_REALTIME ns), or None if unknown or already overwritten."""
        return frame_write_time(self.write_times_ns, seq, self.written)

    def wait(self, timeout: Optional[float] = None) -> None:
        if self._player is not None:
            self._player.wait(timeout)

    def stop(self, drain_s: float = 0.0) -> None:
        """Stop writing; after ``drain_s`` seconds (time for the reader to take what is in flight) unplug."""
        if self._player is not None:
            self._player.stop(2.0)
            self._player = None
        if drain_s > 0:
            time.sleep(drain_s)
        self.unplug()


# ------------------------------------------------------------------------------------------- camera
def textured_background(size=(320, 240), seed: int = 0) -> np.ndarray:
    """A static BGR scene: smooth colour blobs, a floor, vertical stripes (doors/shelves) and grain."""
    import cv2

    w, h = size
    rng = np.random.default_rng(seed)
    low = rng.uniform(60, 200, size=(6, 8, 3)).astype(np.float32)
    bg = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    bg[int(h * 0.78):] = bg[int(h * 0.78):] * 0.6 + 40
    for x in rng.integers(0, w, 7):
        bg[: int(h * 0.78), x: x + int(rng.integers(3, 10))] *= 0.7
    bg += rng.normal(0, 8, size=bg.shape).astype(np.float32)
    return np.clip(bg, 0, 255).astype(np.uint8)


def composite(masks: np.ndarray, background: np.ndarray, seed: int = 0, noise_sigma: float = 5.0) -> np.ndarray:
    """BGR frames [T, H, W, 3]: the walker (a textured clothing colour) over ``background``, per-frame noise."""
    rng = np.random.default_rng(seed)
    t, h, w = masks.shape
    cloth = np.array([70, 40, 150], np.float32) + rng.normal(0, 18, size=(h, w, 3)).astype(np.float32)
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        m = (masks[i] > 127)[..., None]
        frame = np.where(m, cloth, background.astype(np.float32))
        frame += rng.normal(0, noise_sigma, size=frame.shape).astype(np.float32)
        out[i] = np.clip(frame, 0, 255).astype(np.uint8)
    return out


@dataclass
class RenderedVideo:
    path: Path
    masks: np.ndarray  # uint8 [T, H, W] ground-truth person masks per video frame (lead-in frames empty)
    fps: float
    frames: int


def render_walker_video(spec: WalkerSpec, path: str | Path, n_frames: int = 90, fps: float = 30.0, seed: int = 0,
                        lead_in: int = 60, view_deg: float = 90.0, background_seed: int = 7) -> RenderedVideo:
    """Render ``spec``'s synthetic walker (one pass across the view) into a video file (MJPG .avi)."""
    import cv2

    from metagait_edge.synth.identity import identity_from_subject
    from metagait_edge.synth.dataset import render_walker
    from metagait_edge.synth.render import Defects

    ident = identity_from_subject(spec.height_cm, spec.weight_kg, spec.sex, spec.cadence_spm)
    r = render_walker(ident, view_deg, n_frames, seed=seed, defects=Defects.none(), name=spec.name)
    masks = np.concatenate([np.zeros((lead_in,) + r.masks.shape[1:], np.uint8), r.masks])
    bg = textured_background((masks.shape[2], masks.shape[1]), background_seed)
    frames = composite(masks, bg, seed=seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (masks.shape[2], masks.shape[1]))
    if not writer.isOpened():
        raise OSError(f"cv2.VideoWriter cannot write {path} (MJPG)")
    for f in frames:
        writer.write(f)
    writer.release()
    return RenderedVideo(path, masks, fps, len(frames))
