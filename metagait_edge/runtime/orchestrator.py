"""The edge runtime: sensor threads -> gait worker -> safety envelope -> ZeroMQ, plus camera recognition.

Sensor readers push rows into the IMU ``RingBuffer`` and send each sample's gait phase (``PhaseStream``, no
hand-off); the gait worker turns samples into cycles,
generates each next cycle's reference (personalized or generic), bounds it with the ``SafetyEnvelope``
and publishes it without blocking; the watchdog publishes ``HOLD`` on a stale IMU; the camera thread
identifies the walker; calibration adapts in the caller's thread. No control output waits on inference,
a subscriber, the camera or calibration. Threads and what each may block on: docs/runtime.md.
"""

from __future__ import annotations

import gc
import logging
import math
import queue
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Deque, Dict, List, Optional

import numpy as np

from metagait_edge.imu import protocol as imu_protocol
from metagait_edge.runtime.calibration import (
    ANGLE_CHANNELS, CalibrationOutcome, CycleRecord, Personalizer, calibrate, load_personalizer,
)
from metagait_edge.runtime.config import EdgeConfig
from metagait_edge.runtime.continual import continual_learner
from metagait_edge.runtime.identity import IdentityVote, WearerIdentity
from metagait_edge.runtime.reference import Reference
from metagait_edge.runtime.features import OnlineFeatures
from metagait_edge.runtime.input_gate import RESTART, STALE, InputGate, wall_ns
from metagait_edge.runtime.phase_output import PhaseOutput
from metagait_edge.runtime.phase_stream import UNKNOWN_MODE, PhaseEstimate, PhaseStream, gyro_valid_for, mode_reference
from metagait_edge.runtime.realtime import set_realtime_priority
from metagait_edge.runtime.records import PublishedRecord, RuntimeStats, start_recording_writer
from metagait_edge.runtime.ringbuffer import RingBuffer
from metagait_edge.runtime.safety import NeutralPosture, SafetyEnvelope, SafetyStatus
from metagait_edge.runtime.status import StatusReporter

log = logging.getLogger(__name__)

__all__ = ["Runtime", "build_runtime"]


class Runtime(StatusReporter, PhaseOutput):
    """See the module docstring. ``start()`` / ``stop()``; ``push_imu``, ``step``, ``calibrate`` for the ROS nodes."""

    def __init__(self, config: Optional[EdgeConfig] = None, personalizer: Optional[Personalizer] = None,
                 publisher=None, recognizer=None, store=None, imu_rate_hz: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from metagait_edge.data.gait_events import CausalGaitDetector
        from metagait_edge.runtime.profiles import ProfileStore

        self.config = config or EdgeConfig(sources=[])
        src = self.config.imu_source
        self.rate_hz = float(imu_rate_hz or (src.rate_hz if src else 58.8))
        models = self.config.models
        self.personalizer = personalizer or load_personalizer(models.personalization)
        self.personalizer.use_backend(models.backend, models.onnx, models.engine_cache, models.precision)
        self.channel_names = list(ANGLE_CHANNELS)
        self.publisher = publisher
        self.recognizer = recognizer
        self.store = store or ProfileStore(self.config.calibration.directory)
        self.safety = SafetyEnvelope(self.config.safety)
        self.neutral = NeutralPosture()  # what relative joint limits are offsets from
        self.gate = InputGate(self.config.safety.staleness_timeout_s, self.config.safety.max_sample_gap_s)
        self.clock = clock
        cap = max(1024, int(self.rate_hz * 10))
        self.ring = RingBuffer(cap, imu_protocol.N_CHANNELS)
        self._frame_seq = np.full(cap, -1, np.int64)
        self._arrival_s = np.zeros(cap, np.float64)
        self._scale = imu_protocol.channel_scale(np.float32)
        self.features = OnlineFeatures(self.rate_hz)
        self.detector = CausalGaitDetector(self.rate_hz)
        pc = self.config.phase  # gait.phase per sample; a replayed HuGaDB file gets eval-phase's gyro masks
        self.phase = PhaseStream(pc, self.rate_hz, gyro_valid_for(pc, src.path if src and src.kind == "replay" else None)
                                 ) if pc.enabled else None
        self.phase_listeners: List[Callable[[PhaseEstimate], None]] = []  # called on the worker thread per sample
        self.phase_latency_s: Deque[float] = deque(maxlen=4096)  # IMU sample pushed -> its gait.phase sent
        hist = int(self.config.runtime.history_s * self.rate_hz)
        self._hist = np.zeros((hist, 42), np.float32)
        self._hist_t = np.zeros(hist, np.float64)
        self._prev_ic: Optional[int] = None
        self._prev_cycle: Optional[CycleRecord] = None
        self._recent: Deque[np.ndarray] = deque(maxlen=5)  # normalized recent cycles: the uncalibrated template
        self._cycle_index = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self.stats = RuntimeStats()
        # The last published trajectories, for latency reports and plots; bounded so a robot running for days
        # keeps flat memory.
        self.records: Deque[PublishedRecord] = deque(maxlen=2048)
        self._calib_queue: Optional[queue.Queue] = None
        self._calib_lock = threading.Lock()
        self._lock = threading.Lock()
        # identity and personalization state
        self.walker: Optional[str] = self.config.runtime.walker or None
        self.confidence = 1.0 if self.walker else 0.0
        self._profiles: Dict[str, tuple] = {}
        self._profile_errors: Dict[str, str] = {}  # walker -> why its profile could not be loaded
        if self.walker:
            self._load_profile(self.walker)
        self._latest_out = None
        self._identity_vote = IdentityVote()
        self.identity = WearerIdentity(self.config.identity, self.store)  # camera + IMU evidence, fused
        self._walker_pinned = False  # use_walker named the walker: the strides' identity must not override it
        self.continual = continual_learner(self)  # None unless continual.enabled (runtime/continual.py)
        self.reference_listeners: List[Callable[[], None]] = []  # called on the worker thread per new trajectory
        self._last_traj = None
        self.serial = None
        self.camera = None
        self._recording = None
        self.realtime = False  # control threads run SCHED_FIFO (runtime.realtime_priority granted)

    # --------------------------------------------------------------------------------- inputs
    def push_imu(self, raw36, host_time_s: float, frame_seq: int = -1) -> None:
        """One IMU sample as raw int16 counts (``imu_protocol`` order), host monotonic seconds."""
        row = np.asarray(raw36, dtype=np.float32) * self._scale
        seq = self.ring.push(row, host_time_s)
        self._frame_seq[seq % self.ring.capacity] = frame_seq
        self._arrival_s[seq % self.ring.capacity] = arrival = time.monotonic()
        self._phase_input(row, host_time_s, arrival)
        self._wake.set()

    def _on_serial_frame(self, frame, t: float) -> None:
        slot = (self.ring.head - 1) % self.ring.capacity
        self._frame_seq[slot] = frame.seq
        self._arrival_s[slot] = arrival = time.monotonic()
        self._phase_input(np.asarray(frame.raw, np.float32) * self._scale, t, arrival)
        self._wake.set()

    def set_identity(self, walker: Optional[str], confidence: float) -> None:
        if walker and walker not in self._profiles and walker not in self._profile_errors:
            self._load_profile(walker)
        self.walker, self.confidence = walker, float(confidence)

    def _load_profile(self, walker: str) -> None:
        from metagait_edge.runtime.profiles import ProfileError

        if not self.store.exists(walker):  # never calibrated: the generic model, as documented
            log.info("%s has no profile (never calibrated): generic reference", walker)
            return
        try:
            prof = self.store.load(walker)
            self._profiles[walker] = (prof, self.personalizer.generator(prof.weights))
            self._profile_errors.pop(walker, None)
            log.info("loaded the profile of %s (%s)", walker, prof.meta.get("saved", ""))
        except (ProfileError, ValueError) as exc:  # corrupt file, checksum mismatch: not the same as never calibrated
            self._profile_errors[walker] = str(exc)
            log.warning("the profile of %s is unusable, the generic model runs instead: %s", walker, exc)

    def observe_identity(self, walker_id: Optional[str], confidence: float, reason: str = "") -> None:
        """One camera identity answer (None: unknown walker), fused with the IMU's (``WearerIdentity``); the
        profile switches as ``IdentityVote`` decides."""
        self._vote(self.identity.observe_camera(walker_id, confidence, reason, self.clock()))

    def _vote(self, fused) -> None:
        switch, walker = self._identity_vote.decide(fused.walker_id, self.walker)
        if switch:
            self.set_identity(walker, fused.confidence if walker else 0.0)

    def _on_identity(self, result) -> None:
        self.observe_identity(result.walker_id, result.confidence, result.reason)
        self._publish_identity(result.distance)

    def _publish_identity(self, distance: float = math.nan) -> None:
        fused = self.identity.fused  # what the runtime follows, with why not when it follows nobody
        if self.publisher is not None:
            self.publisher.publish_identity(fused.walker_id, distance, fused.confidence, reason=fused.reason,
                                            personalized=bool(fused.walker_id) and fused.walker_id in self._profiles)

    def _expire_identity(self) -> None:
        """Evidence too old to vouch for the wearer is dropped before the cycle's model is chosen (a walker
        declared or named through ``use_walker`` stays: nobody's evidence chose them)."""
        fused = self.identity.expire(self.clock())
        if fused is not None:
            if not (self.config.runtime.walker or self._walker_pinned):
                self._vote(fused)
            self._publish_identity()

    def _observe_stride(self, rec: CycleRecord) -> None:
        """The IMU's identity evidence from the wearer's latest walking strides (not for a declared walker): the
        embedding knows walking strides only, so stairs or running strides are no evidence."""
        before = self.identity.fused
        declared = self.config.runtime.walker or self._walker_pinned
        walking = rec.mode in ("walking", UNKNOWN_MODE)
        fused = None if declared or not walking else self.identity.observe_stride(rec.cycle, self.clock())
        if fused is not None:
            self._vote(fused)
            if fused != before:
                self._publish_identity()

    # --------------------------------------------------------------------------------- worker
    def _worker(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.05)
            self._wake.clear()
            while True:
                w = self.ring.read_new(256)
                self.stats.dropped_samples = self.ring.dropped
                if len(w) == 0:
                    break
                for i in range(len(w)):
                    try:
                        self._sample(w.data[i], float(w.timestamps[i]), w.first_seq + i)
                    except Exception as exc:  # one bad cycle must not stop the control path
                        self.stats.worker_errors += 1
                        log.exception("gait worker error: %s", exc)

    def _sample(self, x: np.ndarray, t: float, ring_seq: int) -> None:
        if not np.isfinite(x).all():
            self.stats.nonfinite_samples += 1  # dropped: it must not poison the filters' state
            return
        verdict = self.gate.admit(t, self.clock())  # stale backlog is dropped, a gap restarts detection
        if verdict == STALE:
            return
        if verdict == RESTART:
            self.detector.reset()
            self.features.reset()
            self._prev_ic = self._prev_cycle = None
        self.stats.samples += 1
        feats = self.features.push(x)
        k = self.detector.t + 1
        h = len(self._hist)
        self._hist[k % h] = feats
        self._hist_t[k % h] = t
        ev = self.detector.push(float(x[imu_protocol.CHANNEL_NAMES.index("gyro_rs_y")]))
        if ev is None:
            return
        picked_s = time.monotonic()
        prev, self._prev_ic = self._prev_ic, ev.index
        self._cycle_index += 1
        if prev is None or ev.stride_samples is None or k - prev >= h - 1 or ev.index <= prev:
            self._prev_cycle = None
            return
        from metagait_edge.data.cycles import resample_cycles

        idx = np.arange(prev, ev.index + 1) % h
        rows, ts = self._hist[idx], self._hist_t[idx]
        cycle = resample_cycles(rows, np.array([0]), np.array([len(rows) - 1]))[0]
        rec = CycleRecord(cycle, np.isfinite(cycle).all(axis=1), float(ts[-1] - ts[0]),
                          float(np.diff(ts).max()) if len(ts) > 1 else 0.0, t, self._cycle_index,
                          self.phase.take_cycle_mode() if self.phase is not None else UNKNOWN_MODE)
        self.stats.cycles += 1
        self.gate.on_cycle(float(ts[-1]), rec.duration_s)  # the next cycle starts at this IC
        with self._calib_lock:
            if self._calib_queue is not None:
                try:
                    self._calib_queue.put_nowait(rec)
                except queue.Full:
                    pass
        self._recent.append(np.nan_to_num(self.personalizer.normalize(rec.cycle), nan=0.0, posinf=0.0, neginf=0.0))
        if self.continual is not None and self.confidence >= self.config.safety.confidence_threshold:
            self.continual.offer(rec, self.walker)  # only queues: updates run on the learner's own thread
        self._expire_identity()
        self._generate(rec, ring_seq, picked_s)
        self._observe_stride(rec)  # after the trajectory left: identity never delays the control output
        self._prev_cycle = rec

    def _recent_template(self) -> Optional[np.ndarray]:
        return np.mean(np.stack(self._recent), axis=0).astype(np.float32) if self._recent else None

    def _generate(self, rec: CycleRecord, ring_seq: int, picked_s: float = math.nan) -> None:
        walker, conf = self.walker, self.confidence
        entry = self._profiles.get(walker) if walker else None
        gate = self.config.safety.confidence_threshold
        allowed, hold, note = mode_reference(rec.mode, entry[0].meta.get("mode", "walking") if entry else None,
                                             self.config.phase.other_mode_policy)
        if hold is not None:
            self._set_status("HOLD", hold)
            return
        use_profile = entry is not None and conf >= gate and allowed
        t0 = time.perf_counter()
        if use_profile:
            prof, model = entry
            out = self.personalizer.generate(rec.cycle, prof.template, rec.valid, model, prof.residual)
        else:
            # Uncalibrated walkers get the pooled model with the mean of their most recent cycles as template,
            # the input distribution it was trained on (never the population zero template).
            out = self.personalizer.generate(rec.cycle, self._recent_template(), rec.valid)
        generated_s = time.monotonic()
        self.stats.gen_ms.append(1e3 * (time.perf_counter() - t0))
        if len(self.stats.gen_ms) > 10000:
            del self.stats.gen_ms[:5000]
        traj = out[self.personalizer.angle_index]
        # rec.t_end: freshness of the newest sample the cycle used, not of the ring's newest
        res = self.safety.apply(traj, self.channel_names, rec.t_end, self.clock(), conf if use_profile else 0.0,
                                use_profile, rec.duration_s, self.neutral.update(rec.cycle[self.personalizer.angle_index]),
                                unusable_profile=self._profile_errors.get(walker) if walker else None)
        if note and res.status is SafetyStatus.DEGRADED:  # the profile set aside for another mode: say so
            res = res._replace(reason=note)
        now = self.clock()
        phase, _ = self._phase_now(now)  # the estimate at t_ns: the IC was detected a little late
        t_ns = time.time_ns()
        t_input_ns = wall_ns(rec.t_end, now, t_ns)  # the newest IMU sample this reference rests on
        if res.status is SafetyStatus.HOLD:
            self._set_status("HOLD", res.reason)
            return

        def send() -> None:
            self.publisher.publish_trajectory(res.trajectory, self.channel_names, walker_id=walker,
                                              personalized=res.personalized, phase=phase, cycle_s=rec.duration_s,
                                              status=res.status.value, reason=res.reason,
                                              confidence=conf, t_ns=t_ns, t_input_ns=t_input_ns)

        # A status change (e.g. leaving HOLD) reaches the wire before the trajectory it allows.
        self._set_status(res.status.value, res.reason, then=send if self.publisher is not None else None)
        self.stats.published += 1
        self.stats.personalized += int(res.personalized)
        self._last_traj = (res, phase, rec.duration_s, walker)
        self._latest_out = (res, phase, rec.duration_s, walker, t_ns)
        for notify in self.reference_listeners:  # e.g. the ROS node publishes a new cycle at once
            notify()
        slot = ring_seq % self.ring.capacity
        self.records.append(PublishedRecord(t_ns, ring_seq, int(self._frame_seq[slot]), res.personalized,
                                            res.status.value, rec.index, res.trajectory,
                                            (float(self._arrival_s[slot]), picked_s, generated_s, time.monotonic())))
        if self._recording is not None:
            self._recording.put_nowait(("trajectory", t_ns, res.status.value, res.trajectory)) if not self._recording.full() else None

    # --------------------------------------------------------------------------------- ROS API
    def reference(self) -> Optional[Reference]:
        """The reference a pull-style consumer (the ROS trajectory node) may follow now, or None.

        None while status is HOLD, while the IMU input is stale, and before the first trajectory: a consumer
        then has nothing to track and reads why from ``stats.last_status``/``last_reason``.
        """
        latest = self._latest_out
        if latest is None or self.stats.last_status == "HOLD" or self.imu_age() > self.config.safety.staleness_timeout_s:
            return None
        res, _, cycle_s, walker, _ = latest
        t_in = float(self._hist_t[self.detector.t % len(self._hist)])
        return Reference(res.trajectory, list(self.channel_names), walker or "", bool(res.personalized),
                         self._phase_now(t_in)[0], float(cycle_s), res.status.value, res.reason,
                         bool(res.clamped_points or res.rate_limited_points), self.stats.published, t_in)

    @property
    def has_profile(self) -> bool:
        """A usable profile of the current walker is loaded (the confidence gate still applies per cycle)."""
        return bool(self.walker) and self.walker in self._profiles

    def use_walker(self, walker: Optional[str], confidence: float = 1.0) -> bool:
        """Run ``walker``'s profile, re-read from the store (after a new calibration); False: generic model.
        A named walker is kept until the next call: identity from the strides does not override it."""
        self._walker_pinned = bool(walker)
        if walker:
            self._profiles.pop(walker, None)
            self._load_profile(walker)
        self.walker, self.confidence = walker or None, float(confidence) if walker else 0.0
        return bool(walker) and walker in self._profiles

    def calibrate(self, walker: str, shots: Optional[int] = None, feedback: Callable[[int, int], None] = lambda n, k: None,
                  cancelled: Callable[[], bool] = lambda: False, timeout_s: Optional[float] = None) -> CalibrationOutcome:
        """Few-shot calibration of ``walker`` on the cycles the worker detects from now on (blocks the caller)."""
        from metagait_edge.runtime.profiles import ProfileError

        q: queue.Queue = queue.Queue(maxsize=64)
        with self._calib_lock:
            if self._calib_queue is not None:
                raise RuntimeError("another calibration is running")
            self._calib_queue = q
        try:
            try:
                previous = self.store.load(walker) if self.store.exists(walker) else None
            except ProfileError as exc:
                log.warning("previous profile of %s unreadable (%s): calibrating from the base model", walker, exc)
                previous = None

            def commit(profile) -> None:
                self._profiles[walker] = (profile, self.personalizer.generator(profile.weights))
                self.identity.enroll_profile(profile)  # the calibration strides identify the wearer from now on

            return calibrate(self.personalizer, self.store, walker, q, self.config.calibration, shots, feedback,
                             cancelled, timeout_s, previous, commit, self.identity.enrollment)
        finally:
            with self._calib_lock:
                self._calib_queue = None

    # --------------------------------------------------------------------------------- lifecycle
    def start(self) -> "Runtime":
        import torch

        torch.set_num_threads(1)  # the worker must not fight the sensor threads for cores
        cfg = self.config
        if cfg.runtime.gil_switch_interval_ms > 0:
            sys.setswitchinterval(cfg.runtime.gil_switch_interval_ms / 1000.0)
        if self.publisher is None and cfg.sinks.zmq.endpoints and self.config.sources:
            from metagait_edge.runtime.zmq_output import ZmqPublisher

            self.publisher = ZmqPublisher(cfg.sinks.zmq, realtime_priority=cfg.runtime.realtime_priority).start()
        if cfg.sinks.recording.path is not None:
            self._start_recording(cfg.sinks.recording.path)
        for name, target in (("gait-worker", self._worker), ("watchdog", self._watchdog)):
            th = threading.Thread(target=target, name=name, daemon=True)
            th.start()
            self._threads.append(th)
        src = cfg.imu_source
        if src is not None:
            self.serial = self._open_imu(src)
            if self.serial is not None:
                self.serial.start()
        cam = cfg.camera_source
        if cam is not None:
            self._start_camera(cam)
        if cfg.runtime.realtime_priority > 0:
            self.realtime = set_realtime_priority(self.control_threads(), cfg.runtime.realtime_priority)
        if cfg.runtime.freeze_gc:
            gc.collect()
            gc.freeze()
        return self

    def control_threads(self) -> List[threading.Thread]:
        """The threads between an IMU frame and its trajectory message (not camera or recording)."""
        owners = [getattr(self.serial, "_thread", None), getattr(self.publisher, "_thread", None)]
        return [th for th in self._threads if th.name in ("gait-worker", "watchdog")] + [th for th in owners if th]

    def _open_imu(self, src):
        if src.kind == "serial":
            from metagait_edge.runtime.serial_source import SerialSource, SerialSourceConfig

            return SerialSource(SerialSourceConfig(port=src.port, baudrate=src.baudrate, format=src.format),
                                ring=self.ring, on_frame=self._on_serial_frame)
        from metagait_edge.imu.replay import FileImuSource

        return FileImuSource(src, self)

    def _start_camera(self, cam) -> None:
        from metagait_edge.runtime.camera import CameraPipeline, FrameSource, build_recognizer
        from metagait_edge.runtime.camera_frontend import CameraFrontEnd

        import cv2

        cv2.setNumThreads(1)  # OpenCV's own worker pool would otherwise take every core in bursts
        models = self.config.models
        if self.recognizer is None:
            self.recognizer = build_recognizer(models.gallery, models.identity_threshold, models.recognition)
        self.recognizer.use_backend(models.backend, models.engine_cache, models.precision)
        source = FrameSource(cam.kind, cam.path, cam.index, fps=cam.rate_hz if cam.kind != "camera" else None,
                             loop=cam.loop)
        rc = self.config.runtime
        self.camera = CameraPipeline(source, self.recognizer, self._on_identity,
                                     CameraFrontEnd(self.config.camera), rc.recognition_every,
                                     rc.recognition_window, nice=rc.camera_nice).start()

    def _start_recording(self, path: Path) -> None:
        self._recording = queue.Queue(maxsize=1024)
        self._threads.append(start_recording_writer(path, self._recording, self._stop))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self.serial is not None:
            self.serial.stop()
        if self.camera is not None:
            self.camera.stop()
        for th in self._threads:
            th.join(2.0)
        self._threads = []
        if self.publisher is not None:
            self.publisher.stop()

    def __enter__(self) -> "Runtime":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def build_runtime(backend: str = "auto", model_path: Optional[str] = None, engine_path: Optional[str] = None,
                  calibration_dir: Optional[str] = None, walker: Optional[str] = None,
                  imu_rate_hz: float = 58.8, recording: Optional[str] = None) -> Runtime:
    """The runtime for the ROS 2 nodes: started worker + watchdog, fed by ``push_imu``, read by ``step``.

    ``backend`` runs per-cycle generation (``ModelsConfig.backend``); ``engine_path`` is the TensorRT
    engine cache folder (engines are built from the exported ONNX model once and reused). ``recording``: the
    HuGaDB file the IMU stream replays, whose corrupted gyroscopes the phase estimate masks as eval-phase does.
    """
    from metagait_edge.runtime.config import CalibrationConfig, ModelsConfig, RuntimeConfig
    from metagait_edge.runtime.profiles import ProfileStore

    models = ModelsConfig(personalization=Path(model_path) if model_path else None, backend=backend,
                          engine_cache=Path(engine_path) if engine_path else None)
    config = EdgeConfig(sources=[], models=models,
                        calibration=CalibrationConfig(directory=Path(calibration_dir) if calibration_dir else None),
                        runtime=RuntimeConfig(walker=walker or ""))
    rt = Runtime(config, store=ProfileStore(calibration_dir), imu_rate_hz=imu_rate_hz)
    if recording and rt.phase is not None:
        rt.phase.set_gyro_valid(gyro_valid_for(config.phase, Path(recording)))
    return rt.start()
