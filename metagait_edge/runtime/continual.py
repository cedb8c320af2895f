"""Continual personalization in the runtime: a calibrated walker's profile keeps learning as they walk.

The control thread only hands each detected cycle to :meth:`ContinualLearner.offer` (a non-blocking put into
a small queue; a full queue drops the cycle and counts it). A background thread of its own (``continual``)
checks each cycle with the calibration's quality checks and hands it to the library's learner
(``personalization.continual.Learner``, the same object the evaluation drives: growing template, bounded buffer
of recent strides, an update every ``every_strides`` strides, accepted only on held-out recent strides).
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
FALLBACK_STRIDES = 5  # how many strides a profile's template stands for when its meta does not say


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
        self._walker = walker
        self._profile = profile  # the profile object learnt from: another one means a new calibration
        self._last_index: Optional[int] = None
        self._learner = None
        if profile is not None:
            import torch

            from metagait_edge.personalization.continual import Learner, ModelState

            p = self.personalizer
            template = torch.from_numpy(np.asarray(profile.template, np.float32))
            residual = None if profile.residual is None else torch.from_numpy(np.asarray(profile.residual, np.float32))
            state = ModelState(p.params_from(profile.weights) if profile.weights else p.base, template, residual)
            # The fallback, what the walker would get without personalization: the base weights with the
            # template the learner starts from (the calibration's, or the profile's when restarted on a refined one).
            fallback = ModelState(p.base, template)
            # The calibration's template stands for the strides it was computed from.
            weight = float(profile.meta.get("template_strides", profile.meta.get("shots", FALLBACK_STRIDES)))
            self._learner = Learner(p.maml.model, state, fallback, self.config, weight,
                                    torch.from_numpy(np.asarray(profile.valid, bool)))

    @property
    def _strides(self):
        """The bounded buffer of recent strides (empty before a calibrated walker's first cycle)."""
        return self._learner.strides if self._learner is not None else ()

    def learn(self, rec: CycleRecord, walker: str) -> None:
        """Buffer one cycle of ``walker`` and, every ``every_strides`` new strides, run one update (this thread):
        the library's :class:`personalization.continual.Learner`, the one the evaluation drives."""
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
        contiguous = self._last_index is not None and rec.index == self._last_index + 1
        self._last_index = rec.index
        self.stats["strides"] += 1
        learner = self._learner
        before = learner.state
        t0 = time.perf_counter()
        decision = learner.add(torch.from_numpy(norm), torch.from_numpy(valid), contiguous)
        if decision is None:
            return
        self.update_threads.append(threading.current_thread().name)
        self.update_ms.append(1e3 * (time.perf_counter() - t0))
        if not decision.accepted:
            self.stats["rejected"] += 1
            log.info("continual update for %s rejected: %s", walker, decision.reason)
            return
        try:
            self._commit(walker, profile, decision)
        except BaseException:
            learner.state = before  # rollback: the learner goes on from what the runtime still uses
            raise

    def _commit(self, walker: str, profile: Profile, decision) -> None:
        weights = {k: v.numpy() for k, v in decision.state.params.items()}
        updates = int(profile.meta.get("continual_updates", 0)) + 1
        residual = None if decision.state.residual is None else decision.state.residual.numpy()
        new = Profile(walker, weights, decision.state.template.numpy(), np.asarray(profile.valid, bool), residual=residual,
                      meta={
            **{k: v for k, v in profile.meta.items() if k != "saved"}, "continual_updates": updates,
            "template_strides": self._learner.running.strides, "continual_loss_before": decision.loss_current,
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
