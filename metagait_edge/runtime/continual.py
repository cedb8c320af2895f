"""Continual personalization in the runtime: a calibrated walker's profile keeps learning as they walk.

The control thread only hands each detected cycle to :meth:`ContinualLearner.offer` (a non-blocking put into
a small queue; a full queue drops the cycle and counts it). A background thread of its own (``continual``)
checks each cycle with the calibration's quality checks, keeps the growing template and the bounded buffer
of recent strides (``personalization.continual``), and every ``every_strides`` strides proposes an update.
An accepted update is written as the walker's new profile through ``ProfileStore.save`` (atomic: a crash
leaves the old profile or the new one), and only then handed to the runtime (``commit``); a rejected one
leaves the profile as it was. The counters (``accepted``, ``rejected``, ...) go into every status message.

Learning starts from the walker's committed profile (their calibration) and stops for a walker without one:
continual learning refines a calibration, it never replaces it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from typing import Callable, Deque, Dict, Optional

import numpy as np

from metagait_edge.personalization.continual import ContinualConfig
from metagait_edge.phase.dataset import GAIT_MODES
from metagait_edge.runtime.calibration import CycleRecord, Personalizer, check_cycle
from metagait_edge.runtime.config import CalibrationConfig
from metagait_edge.runtime.profiles import Profile

log = logging.getLogger(__name__)

THREAD_NAME = "continual"
FALLBACK_STRIDES = 5  # the uncalibrated runtime's template: the mean of the walker's most recent 5 cycles


class ContinualLearner:
    """See the module docstring. ``profile_of(walker)`` is the walker's current profile (None: not
    calibrated); ``commit(profile)`` makes a saved profile the one the control path uses."""

    def __init__(self, personalizer: Personalizer, store, config: ContinualConfig, quality: CalibrationConfig,
                 profile_of: Callable[[str], Optional[Profile]], commit: Callable[[Profile], None],
                 stop: Optional[threading.Event] = None, queue_size: int = 8,
                 threads: Optional[list] = None) -> None:
        self.personalizer = personalizer
        self.store = store
        self.config = config
        self.quality = quality
        self.profile_of = profile_of
        self.commit = commit
        self._stop = stop or threading.Event()
        self._queue: "queue.Queue[tuple]" = queue.Queue(maxsize=queue_size)
        self._thread: Optional[threading.Thread] = None
        self._start_lock = threading.Lock()
        self._owner_threads = threads  # the runtime's thread list: its stop() joins this thread too
        # strides: cycles learnt from; skipped: cycles not (quality, mode, no profile); dropped: queue full
        self.stats: Dict[str, int] = {"strides": 0, "accepted": 0, "rejected": 0, "skipped": 0, "dropped": 0,
                                      "failed": 0}
        self.update_threads: Deque[str] = deque(maxlen=16)  # names of the threads updates ran on (checked by tests)
        self.update_ms: Deque[float] = deque(maxlen=256)
        self._reset(None)

    # ------------------------------------------------------------------ control thread
    def offer(self, rec: CycleRecord, walker: Optional[str]) -> None:
        """Hand one detected cycle to the learner; never blocks (a full queue drops the cycle)."""
        if not walker:
            return
        if self._thread is None:
            self._start()
        try:
            self._queue.put_nowait((rec, walker))
        except queue.Full:
            self.stats["dropped"] += 1

    def counters(self) -> Dict[str, int]:
        """``continual_<what>`` counts for the runtime's status counters."""
        return {f"continual_{k}": v for k, v in self.stats.items()}

    # ------------------------------------------------------------------ background thread
    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
                self._thread.start()
                if self._owner_threads is not None:
                    self._owner_threads.append(self._thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every offered cycle has been processed (tests, the benchmark); False on timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rec, walker = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.learn(rec, walker)
            except Exception:  # a failed update must never take the runtime down; the profile stays
                self.stats["failed"] += 1
                log.exception("continual update for %s failed; the profile is unchanged", walker)
            finally:
                self._queue.task_done()

    def _reset(self, walker: Optional[str], profile: Optional[Profile] = None) -> None:
        from metagait_edge.personalization.continual import RunningTemplate

        self._walker = walker
        self._profile = profile  # the profile object learnt from: another one means a new calibration
        self._strides: Deque[np.ndarray] = deque(maxlen=self.config.buffer_strides)
        self._valid: Deque[np.ndarray] = deque(maxlen=self.config.buffer_strides)
        self._contiguous: Deque[bool] = deque(maxlen=self.config.buffer_strides)
        self._last_index: Optional[int] = None
        self._new = 0
        self._running = None
        if profile is not None:
            import torch

            # The calibration's template stands for the strides it was computed from.
            weight = float(profile.meta.get("template_strides", profile.meta.get("shots", FALLBACK_STRIDES)))
            valid = torch.from_numpy(np.asarray(profile.valid, bool))
            tmpl = torch.from_numpy(np.asarray(profile.template, np.float32))
            self._running = RunningTemplate(tmpl.double() * weight * valid.double()[:, None], valid.double() * weight)

    def learn(self, rec: CycleRecord, walker: str) -> None:
        """Buffer one cycle of ``walker`` and, every ``every_strides`` new strides, run one update (this thread)."""
        import torch

        profile = self.profile_of(walker)
        if profile is None:  # not calibrated (or unusable): nothing to refine
            self.stats["skipped"] += 1
            return
        if walker != self._walker or profile is not self._profile:
            self._reset(walker, profile)  # another walker, or a new calibration: start from it
        why = check_cycle(rec, self.quality, self.personalizer.channels)
        if why is None and rec.mode in GAIT_MODES and rec.mode != profile.meta.get("mode", "walking"):
            why = f"mode {rec.mode}, the profile is for {profile.meta.get('mode', 'walking')}"
        if why is not None:
            self._last_index = None
            self.stats["skipped"] += 1
            return
        norm = np.nan_to_num(self.personalizer.normalize(rec.cycle), nan=0.0, posinf=0.0, neginf=0.0)
        valid = np.asarray(rec.valid, bool)
        norm = np.where(valid[:, None], norm, 0.0).astype(np.float32)
        self._strides.append(norm)
        self._valid.append(valid)
        self._contiguous.append(self._last_index is not None and rec.index == self._last_index + 1)
        self._last_index = rec.index
        self._running.add(torch.from_numpy(norm), torch.from_numpy(valid))
        self._new += 1
        self.stats["strides"] += 1
        if self._new < self.config.every_strides or len(self._strides) < self.config.holdout_strides + 3:
            return
        self._new = 0
        self.update(walker, profile)

    def update(self, walker: str, profile: Profile) -> None:
        import torch

        from metagait_edge.personalization.continual import ModelState, propose_update

        self.update_threads.append(threading.current_thread().name)
        t0 = time.perf_counter()
        p = self.personalizer
        x = torch.from_numpy(np.stack(self._strides))
        valid = torch.from_numpy(np.stack(self._valid))
        contiguous = torch.as_tensor(list(self._contiguous))
        contiguous[0] = False  # the oldest buffered stride's predecessor has left the buffer
        current = ModelState(p.params_from(profile.weights), torch.from_numpy(np.asarray(profile.template, np.float32)))
        h = self.config.holdout_strides
        before = slice(max(0, len(x) - h - FALLBACK_STRIDES), len(x) - h)
        from metagait_edge.personalization.inputs import template_from_support

        fallback_template = template_from_support(x[before], valid[before])
        decision = propose_update(p.maml.model, current, p.base, fallback_template, self._running, x, valid,
                                  contiguous, self.config)
        self.update_ms.append(1e3 * (time.perf_counter() - t0))
        if not decision.accepted:
            self.stats["rejected"] += 1
            log.info("continual update for %s rejected: %s", walker, decision.reason)
            return
        weights = {k: v.numpy() for k, v in decision.state.params.items()}
        updates = int(profile.meta.get("continual_updates", 0)) + 1
        strides = self._running.strides
        new = Profile(walker, weights, decision.state.template.numpy(), np.asarray(profile.valid, bool), meta={
            **{k: v for k, v in profile.meta.items() if k != "saved"}, "continual_updates": updates,
            "template_strides": strides, "continual_loss_before": decision.loss_current,
            "continual_loss_after": decision.loss_candidate, "continual_kind": decision.kind,
        })
        self.store.save(new)  # atomic; raises (and the profile stays) if the disk refuses
        committed = self.store.load(walker)
        self._profile = committed
        self.commit(committed)
        self.stats["accepted"] += 1
        log.info("continual update %d for %s accepted (%s): held-out loss %.4f -> %.4f", updates, walker,
                 decision.kind, decision.loss_current, decision.loss_candidate)


def continual_learner(runtime) -> Optional[ContinualLearner]:
    """The learner of a ``Runtime`` (None when ``continual.enabled`` is false); it stops with the runtime."""
    config = runtime.config.continual
    if not config.enabled:
        return None

    def profile_of(walker: str) -> Optional[Profile]:
        entry = runtime._profiles.get(walker)
        return entry[0] if entry is not None else None

    def commit(profile: Profile) -> None:
        runtime._profiles[profile.walker] = (profile, runtime.personalizer.generator(profile.weights))

    return ContinualLearner(runtime.personalizer, runtime.store, config, runtime.config.calibration, profile_of,
                            commit, stop=runtime._stop, threads=runtime._threads)
