"""On-device few-shot calibration of the personalization model (``runtime.personalizer``).

Calibration (``calibrate``): let the walk settle (``settle_strides``), collect ``shots`` + 1 valid cycles
that pass the quality checks (duration, amplitude, consistency, no gaps), adapt on the first ``shots`` (off
the control thread: the caller's thread), validate on the held-out last cycle against the model the walker
would get without this calibration (their previous profile, else the unadapted model with the mean of their
recent cycles as template, as the runtime's uncalibrated path does), and commit the profile
(``profiles.ProfileStore``, atomic) only if the held-out loss improves. Otherwise the previous profile stays
and the outcome says why.
"""

from __future__ import annotations

import logging
import math
import queue
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from metagait_edge.phase.dataset import GAIT_MODES
from metagait_edge.runtime.config import CalibrationConfig
from metagait_edge.runtime.personalizer import (  # noqa: F401  (re-exported: the runtime's public names)
    ANGLE_CHANNELS, SHIPPED_PERSONALIZATION, Personalizer, load_personalizer,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ cycles+quality
@dataclass
class CycleRecord:
    """One detected gait cycle (IC to IC), resampled to 101 points, physical units [C, 101]."""

    cycle: np.ndarray
    valid: np.ndarray  # bool [C]
    duration_s: float
    max_gap_s: float  # largest spacing between consecutive raw samples inside the cycle
    t_end: float  # host monotonic time of the closing IC
    index: int  # running cycle number
    mode: str = "walking"  # the cycle's most frequent locomotion mode (phase_stream); "unknown" without a mode estimate


def check_cycle(rec: CycleRecord, config: CalibrationConfig, channels: Sequence[str]) -> Optional[str]:
    """None if ``rec`` may be used for calibration, else the reason it may not."""
    if not np.isfinite(rec.cycle).all():
        return "non-finite samples"
    if not config.min_cycle_s <= rec.duration_s <= config.max_cycle_s:
        return f"duration {rec.duration_s:.2f} s outside {config.min_cycle_s:.2f}..{config.max_cycle_s:.2f} s"
    if rec.max_gap_s > config.max_gap_s:
        return f"gap of {rec.max_gap_s:.3f} s in the samples > {config.max_gap_s:.3f} s"
    ch = list(channels)
    knee = rec.cycle[ch.index("knee_r")]
    if np.ptp(knee) < config.min_knee_rom_deg:
        return f"knee range {np.ptp(knee):.1f} deg < {config.min_knee_rom_deg:.1f} deg (not a walking stride)"
    gyro = rec.cycle[ch.index("gyro_rs_y")]
    if np.abs(gyro).max() < config.min_gyro_peak_dps:
        return f"shank gyro peak {np.abs(gyro).max():.0f} deg/s < {config.min_gyro_peak_dps:.0f} deg/s"
    return None


def consistent_subset(cycles_norm: np.ndarray, max_distance: float) -> np.ndarray:
    """bool [N]: cycles whose RMS distance (normalized units) to the element-wise median cycle is small."""
    med = np.median(cycles_norm, axis=0)
    d = np.sqrt(np.mean((cycles_norm - med[None]) ** 2, axis=(1, 2)))
    return d <= max_distance


def calibration_mode(cycles: Sequence[CycleRecord]) -> str:
    """The locomotion mode a profile is calibrated in: the most common estimated mode of its cycles
    ("walking" when no mode was estimated: the runtime before mode recognition, and old profiles, assume it)."""
    modes = [r.mode for r in cycles if r.mode in GAIT_MODES]
    return max(GAIT_MODES, key=modes.count) if modes else "walking"


@dataclass
class CalibrationOutcome:
    success: bool
    error_before: float  # held-out masked MSE (normalized units) of the model used so far
    error_after: float  # same, after adaptation
    reason: str = ""
    cycles_used: int = 0
    rejected: Dict[str, int] = field(default_factory=dict)  # reason -> cycles rejected
    adapt_s: float = 0.0
    wall_s: float = 0.0  # the whole calibration, mostly walking the cycles
    process_s: float = 0.0  # from the last needed cycle to the decision: adapt, validate, write the profile
    rmse_deg_before: float = math.nan  # joint-angle RMSE on the held-out cycle, degrees
    rmse_deg_after: float = math.nan


def _rmse_deg(p: Personalizer, params: dict, query, template) -> float:
    torch = p._torch
    with torch.no_grad():
        out = p.maml.forward_with(params, query.x)["output"][0].numpy()
    a = p.normalizer.invert(out)[p.angle_index]
    b = p.normalizer.invert(query.y[0].numpy())[p.angle_index]
    return float(np.sqrt(np.mean((a - b) ** 2)))


def calibrate(personalizer: Personalizer, store, walker: str, cycles: "queue.Queue[CycleRecord]",
              config: CalibrationConfig, shots: Optional[int] = None,
              feedback: Callable[[int, int], None] = lambda n, k: None, cancelled: Callable[[], bool] = lambda: False,
              timeout_s: Optional[float] = None, previous=None, on_commit: Optional[Callable] = None,
              enrollment: Optional[Callable[[np.ndarray], dict]] = None) -> CalibrationOutcome:
    """Collect, adapt, validate, commit. ``cycles`` delivers ``CycleRecord``s as the gait worker detects them;
    ``enrollment(cycles)`` adds profile metadata from the calibration strides (the wearer's IMU identity)."""
    from metagait_edge.runtime.profiles import Profile, check_walker_name

    check_walker_name(walker)
    shots = shots or config.shots
    need = shots + 1
    timeout_s = config.timeout_s if timeout_s is None else timeout_s
    t0 = time.monotonic()
    accepted: List[CycleRecord] = []
    rejected: Dict[str, int] = {}
    last_index = None
    settled = 0  # consecutive valid strides walked before collecting (the start-of-walk transient)
    feedback(0, shots)

    t_collected = math.nan

    def fail(reason: str, before=math.nan, after=math.nan) -> CalibrationOutcome:
        log.warning("calibration of %s: %s", walker, reason)
        now = time.monotonic()
        return CalibrationOutcome(False, before, after, reason, len(accepted), rejected, 0.0, now - t0,
                                  0.0 if math.isnan(t_collected) else now - t_collected)

    while True:
        if cancelled():
            return fail("cancelled")
        remaining = t0 + timeout_s - time.monotonic()
        if remaining <= 0:
            return fail(f"timeout after {timeout_s:.0f} s with {len(accepted)} of {need} valid cycles")
        try:
            rec = cycles.get(timeout=min(0.2, remaining))
        except queue.Empty:
            continue
        why = check_cycle(rec, config, personalizer.channels)
        if why is None and last_index is not None and rec.index != last_index + 1:
            # Support cycles must be consecutive (generation predicts each from the one before); a missed
            # cycle may be a stop, so the walk settles again.
            accepted, settled = [], 0
        if why is not None:
            key = why.split(" ")[0]
            rejected[key] = rejected.get(key, 0) + 1
            accepted, last_index, settled = [], None, 0
            log.info("calibration of %s: cycle %d rejected: %s", walker, rec.index, why)
            feedback(0, shots)
            continue
        last_index = rec.index
        if settled < config.settle_strides:
            settled += 1
            continue
        accepted.append(rec)
        if len(accepted) >= 3:
            norm = personalizer.normalize(np.stack([r.cycle for r in accepted]))
            ok = consistent_subset(norm, config.max_cycle_distance)
            if not ok.all():
                rejected["inconsistent"] = rejected.get("inconsistent", 0) + int((~ok).sum())
                first_bad = int(np.flatnonzero(~ok)[-1])
                accepted = accepted[first_bad + 1:]  # keep the consecutive run after the outlier
        feedback(min(len(accepted), shots), shots)
        if len(accepted) >= need:
            break

    t_collected = time.monotonic()
    cyc = np.stack([r.cycle for r in accepted[:need]])
    valid = np.stack([r.valid for r in accepted[:need]])
    support, query, data = personalizer.support_and_query(cyc, valid, shots)
    from metagait_edge.personalization.inputs import template_from_support

    torch = personalizer._torch
    template = template_from_support(data.x[:shots], data.valid[:shots])
    # Baseline: what the walker gets without this calibration.
    if previous is not None:
        base_params = personalizer.params_from(previous.weights)
        base_template = torch.from_numpy(np.asarray(previous.template, np.float32))
    else:
        # The uncalibrated runtime path: the base model with the mean of the walker's most recent cycles
        # (``Runtime._recent_template``) as template; those are exactly the support cycles here.
        base_params, base_template = personalizer.base, template
    from metagait_edge.personalization.inputs import generation_input

    q_base = type(query)(x=generation_input(data.x[shots - 1:shots], base_template[None], data.valid[shots:shots + 1]),
                         y=query.y, mask=query.mask)
    before = personalizer.loss(base_params, q_base)
    ta = time.monotonic()
    fast = personalizer.adapt(support)
    adapt_s = time.monotonic() - ta
    after = personalizer.loss(fast, query)
    rmse_b, rmse_a = _rmse_deg(personalizer, base_params, q_base, base_template), _rmse_deg(personalizer, fast, query, template)
    if not math.isfinite(after) or not after < before * (1.0 - config.min_improvement):
        out = fail(f"adaptation did not improve the held-out cycle (loss {before:.4f} -> {after:.4f}); "
                   f"previous profile kept", before, after)
        out.adapt_s, out.rmse_deg_before, out.rmse_deg_after = adapt_s, rmse_b, rmse_a
        return out
    weights = {k: v.detach().cpu().numpy() for k, v in fast.items() if k in personalizer.maml.adapt_names}
    profile = Profile(walker, weights, template.numpy(), valid[:shots].all(axis=0), meta={
        "shots": shots, "loss_before": before, "loss_after": after, "rmse_deg_before": rmse_b,
        "rmse_deg_after": rmse_a, "base_model": personalizer.source, "channels": personalizer.channels,
        "cycle_s": [r.duration_s for r in accepted[:need]], "mode": calibration_mode(accepted[:need]),
        **(enrollment(cyc) if enrollment is not None else {}),
    })
    try:
        store.save(profile)
    except OSError as exc:
        out = fail(f"could not write the profile ({exc}); previous profile kept", before, after)
        out.adapt_s, out.rmse_deg_before, out.rmse_deg_after = adapt_s, rmse_b, rmse_a
        return out
    if on_commit is not None:
        on_commit(profile)
    log.info("calibration of %s committed: held-out loss %.4f -> %.4f (%d shots, adapt %.2f s)", walker, before,
             after, shots, adapt_s)
    now = time.monotonic()
    return CalibrationOutcome(True, before, after, "", need, rejected, adapt_s, now - t0, now - t_collected, rmse_b, rmse_a)
