"""Which walker's profile to run: identity answers from the camera and the worn IMUs, fused, then voted on."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Optional

import numpy as np

from metagait_edge.data.cycles import cycle_channels
from metagait_edge.hashing import file_sha256

log = logging.getLogger(__name__)


class IdentityVote:
    """Hysteresis over identity answers: switch to a walker only when two consecutive answers agree (one odd
    window must not flip the personalized model); an unknown walker (None: rejected by the gallery) drops to
    the generic model at once."""

    def __init__(self) -> None:
        self._votes: list[Optional[str]] = []

    def decide(self, walker_id: Optional[str], current: Optional[str]) -> tuple[bool, Optional[str]]:
        """(switch?, walker to run) after one more answer, given the walker running now."""
        self._votes = (self._votes + [walker_id])[-2:]
        if walker_id is None:
            return True, None
        if walker_id == current or (len(self._votes) == 2 and self._votes[0] == self._votes[1]):
            return True, walker_id
        return False, current


# ------------------------------------------------------------------------------------ camera + IMU fusion
@dataclass(frozen=True)
class Evidence:
    """One source's latest answer: ``walker_id`` None means it answered "unknown walker"."""

    source: str  # "camera" | "imu"
    walker_id: Optional[str]
    confidence: float
    reason: str = ""
    t_s: float = 0.0  # when it was observed (the runtime's clock): old evidence expires


@dataclass(frozen=True)
class FusedIdentity:
    walker_id: Optional[str]  # the walker whose profile may run; None: the generic model
    confidence: float
    reason: str  # why no walker (or "" when one is agreed)
    conflict: bool  # the sources name different walkers, or one names a walker the other rejects


def fuse_identity(camera: Optional[Evidence], imu: Optional[Evidence], single_source: bool = True) -> FusedIdentity:
    """A walker only when the evidence agrees; a lone source counts only when ``single_source`` allows it.

    A disagreement (two walkers, or a walker and an "unknown") is a conflict: the generic model runs, since
    one of the two sources is wrong and the wrong profile on a person's legs is the failure to avoid.
    """
    present = [e for e in (camera, imu) if e is not None]
    if not present:
        return FusedIdentity(None, 0.0, "no identity evidence yet", False)
    known = [e for e in present if e.walker_id]
    if not known:
        why = "; ".join(f"{e.source}: {e.reason or 'unknown walker'}" for e in present)
        return FusedIdentity(None, 0.0, f"unknown walker ({why})", False)
    if len(present) == 1:
        (e,) = present
        if single_source:
            return FusedIdentity(e.walker_id, e.confidence, "", False)
        return FusedIdentity(None, 0.0, f"only the {e.source} names {e.walker_id} and identity.single_source is off: "
                             "generic model", False)
    if len(known) == 2 and camera.walker_id == imu.walker_id:
        return FusedIdentity(camera.walker_id, min(camera.confidence, imu.confidence), "", False)
    said = ", ".join(f"{e.source} says {e.walker_id or 'unknown'}" for e in present)
    return FusedIdentity(None, 0.0, f"identity conflict ({said}): generic model", True)


class WearerIdentity:
    """The runtime's identity state: latest camera and IMU evidence, their fusion, the IMU identifier.

    The IMU side embeds every detected stride and, once ``identity.imu_strides`` strides are in, identifies
    the wearer among the walkers whose calibration enrolled their strides (``profile.meta["imu_identity"]``).
    No enrolled walker: the IMU gives no evidence at all (not "unknown"), so walkers calibrated before IMU
    enrollment keep following the camera alone.
    """

    def __init__(self, config, store=None) -> None:
        self.config = config
        self.camera: Optional[Evidence] = None
        self.imu: Optional[Evidence] = None
        self.fused = fuse_identity(None, None, config.single_source)
        self.conflicts = 0  # fused answers that were conflicts (status counters: identity_conflicts)
        self.expired = 0  # answers dropped for age (identity.evidence_max_age_s)
        self.model = self.identifier = None
        self._strides: deque = deque(maxlen=config.imu_strides)
        if config.imu:
            self._load_model(store)

    def _load_model(self, store) -> None:
        from metagait_edge.recognition.imu_identity import ImuIdentifier, ImuIdentityError, ImuIdentityModel
        from metagait_edge.resources import IMU_IDENTITY_MODEL

        path = self.config.imu_model or IMU_IDENTITY_MODEL
        try:
            self.model = ImuIdentityModel.load(path)
        except (FileNotFoundError, ImuIdentityError) as exc:
            log.warning("IMU identity off: %s", exc)
            return
        self.fingerprint = file_sha256(path)
        self.identifier = ImuIdentifier(self.model, self.config.imu_threshold)
        for walker in store.walkers() if store is not None else []:
            try:
                self.enroll_profile(store.load(walker))
            except ValueError as exc:  # an unreadable profile is reported where it is loaded for generation
                log.info("no IMU template for %s: %s", walker, exc)

    def enrollment(self, cycles: np.ndarray) -> dict:
        """Profile metadata that enrolls the calibration strides [K, 42, 101] (empty when IMU identity is off)."""
        if self.model is None:
            return {}
        emb = self.model.embed(cycles, cycle_channels())
        return {"imu_identity": {"model_sha256": self.fingerprint, "strides": emb.round(6).tolist()}}

    def enroll_profile(self, profile) -> bool:
        """Enroll a profile's calibration strides; False when it has none from this model."""
        entry = profile.meta.get("imu_identity") if self.identifier is not None else None
        if not entry or entry.get("model_sha256") != self.fingerprint:
            return False
        if profile.walker in self.identifier.walkers:
            self.identifier.gallery.remove(profile.walker)  # a new calibration replaces the old template
        self.identifier.enroll(profile.walker, np.asarray(entry["strides"], np.float32))
        return True

    def observe_camera(self, walker_id: Optional[str], confidence: float, reason: str = "",
                       now_s: float = 0.0) -> FusedIdentity:
        self.camera = Evidence("camera", walker_id, float(confidence), reason, now_s)
        return self._fuse()

    def expire(self, now_s: float) -> Optional[FusedIdentity]:
        """Drop answers older than ``identity.evidence_max_age_s`` (0: never): a walker who left the camera's
        view long ago, or strides from before a long pause, no longer vouch for whoever wears the sensors now.
        The new fused answer when something expired, else None."""
        max_age = self.config.evidence_max_age_s
        if max_age <= 0:
            return None

        def fresh(e: Optional[Evidence]) -> Optional[Evidence]:
            if e is None or now_s - e.t_s <= max_age:
                return e
            gone.append(e.source)
            log.info("%s identity evidence (%s) expired: %.1f s old > identity.evidence_max_age_s %.1f s",
                     e.source, e.walker_id or "unknown", now_s - e.t_s, max_age)
            return None

        gone: list[str] = []
        self.camera, self.imu = fresh(self.camera), fresh(self.imu)
        if not gone:
            return None
        self.expired += len(gone)
        fused = self._fuse()
        if fused.walker_id is None and self.camera is None and self.imu is None:
            sources = " and ".join(gone)
            fused = self.fused = FusedIdentity(None, 0.0, f"identity evidence expired ({sources}: no answer for over "
                                               f"{max_age:g} s): generic model", False)
        return fused

    def observe_stride(self, cycle: np.ndarray, now_s: float = 0.0) -> Optional[FusedIdentity]:
        """One detected stride [42, 101]; a fused answer once enough strides are in, else None."""
        if self.identifier is None or not self.identifier.walkers or not np.isfinite(cycle).all():
            return None
        self._strides.append(self.model.embed(cycle[None], cycle_channels())[0])
        if len(self._strides) < self._strides.maxlen:
            return None
        found = self.identifier.identify(np.stack(self._strides))
        self.imu = Evidence("imu", found.walker_id, found.confidence, found.reason, now_s)
        return self._fuse()

    def _fuse(self) -> FusedIdentity:
        self.fused = fuse_identity(self.camera, self.imu, self.config.single_source)
        self.conflicts += self.fused.conflict
        return self.fused
