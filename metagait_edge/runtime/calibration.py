"""On-device few-shot calibration and the personalization model the runtime runs.

``Personalizer`` wraps the meta-trained CycleModel (``personalization.model``) with its normalizer:
``generate(prev_cycle, template, valid, params)`` gives the next cycle (physical units, [C, 101]) from the
previous one; ``adapt(support)`` is the MAML inner loop on K support cycles. ``load_personalizer()`` loads
the shipped default checkpoint (``resources/checkpoints/personalization/seed0/fold0/generation``) when present,
else a randomly initialized model of the default configuration (same code path after loading).

Calibration (``calibrate``): collect ``shots`` + 1 valid cycles that pass the quality checks (duration,
amplitude, consistency, no gaps), adapt on the first ``shots`` (off the control thread: the caller's
thread), validate on the held-out last cycle against the model the walker would get without this
calibration (their previous profile, else the unadapted model with the population template), and commit
the profile (``profiles.ProfileStore``, atomic) only if the held-out loss improves. Otherwise the previous
profile stays and the outcome says why.
"""

from __future__ import annotations

import logging
import math
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from metagait_edge.runtime.config import CalibrationConfig

log = logging.getLogger(__name__)

SHIPPED_PERSONALIZATION = Path(__file__).resolve().parents[1] / "resources" / "checkpoints" / "personalization" / "seed0" / "fold0"
ANGLE_CHANNELS = ("hip_r", "knee_r", "ankle_r", "hip_l", "knee_l", "ankle_l")


# ------------------------------------------------------------------------------------ personalizer
def fallback_normalizer(channels: Sequence[str]):
    """Rough HuGaDB-like scales for a model without a checkpoint (acc ~0.5 g, gyro ~100 deg/s, angles ~20 deg)."""
    from metagait_edge.data.normalization import ChannelNormalizer

    mean = np.zeros(len(channels), np.float32)
    std = np.array([0.5 if c.startswith("acc") else 100.0 if c.startswith("gyro") else 20.0 for c in channels], np.float32)
    return ChannelNormalizer(tuple(channels), mean, std, np.zeros(len(channels), np.int64), ())


class Personalizer:
    def __init__(self, maml, normalizer, channels: Sequence[str], source: str) -> None:
        import torch

        from metagait_edge.meta.maml import model_params

        self.maml = maml.eval()
        self.normalizer = normalizer
        self.channels = list(channels)
        self.source = source
        missing = [c for c in ANGLE_CHANNELS if c not in self.channels]
        if missing:
            raise ValueError(f"personalization model {source}: channels lack joint angles {missing}")
        self.angle_index = [self.channels.index(c) for c in ANGLE_CHANNELS]
        self.base = model_params(self.maml.model, detach=True)
        self._torch = torch

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    def normalize(self, cycles: np.ndarray) -> np.ndarray:
        return self.normalizer.apply(cycles)

    def params_from(self, weights: Dict[str, np.ndarray]) -> dict:
        torch = self._torch
        unknown = sorted(set(weights) - set(self.base))
        if unknown:
            raise ValueError(f"profile weights {unknown[:3]} do not belong to this model ({self.source})")
        out = dict(self.base)
        for k, v in weights.items():
            t = torch.from_numpy(np.asarray(v, np.float32))
            if t.shape != out[k].shape:
                raise ValueError(f"profile weight {k!r} has shape {tuple(t.shape)}, model expects {tuple(out[k].shape)}")
            out[k] = t
        return out

    def generate(self, prev: np.ndarray, template: Optional[np.ndarray], valid: np.ndarray,
                 params: Optional[dict] = None) -> np.ndarray:
        """Next cycle [C, 101] in physical units from the previous one (physical); template normalized."""
        torch = self._torch
        from metagait_edge.personalization.inputs import generation_input

        prev_n = torch.from_numpy(self.normalize(prev))[None]
        tmpl = torch.zeros_like(prev_n) if template is None else torch.from_numpy(np.asarray(template, np.float32))[None]
        v = torch.from_numpy(np.asarray(valid, bool))[None]
        with torch.no_grad():
            out = self.maml.forward_with(params or self.base, generation_input(prev_n, tmpl, v))["output"][0]
        return self.normalizer.invert(out.numpy())

    def support_and_query(self, cycles: np.ndarray, valid: np.ndarray, shots: int):
        """MAML support (first ``shots`` cycles) and query (the next one) batches from physical cycles."""
        torch = self._torch
        from metagait_edge.personalization.episodes import CycleTensors, query_batch, support_batch
        from metagait_edge.personalization.inputs import MaskingConfig, channel_sensors
        from metagait_edge.personalization.tasks import Task

        data = CycleTensors(x=torch.from_numpy(self.normalize(cycles)), valid=torch.from_numpy(np.asarray(valid, bool)),
                            channel_to_sensor=channel_sensors(self.channels))
        task = Task(subject=0, condition="walking", support=np.arange(shots), query=np.array([shots]),
                    query_prev=np.array([shots - 1]), recording="device", query_recording="device")
        return (support_batch(data, task, "generation", MaskingConfig()),
                query_batch(data, task, "generation", MaskingConfig()), data)

    def adapt(self, support) -> dict:
        return self.maml.adapt(support.x, support.y, support.mask, differentiable=False)

    def loss(self, params: dict, batch) -> float:
        torch = self._torch
        from metagait_edge.metrics.masked import masked_mse

        with torch.no_grad():
            return float(masked_mse(self.maml.forward_with(params, batch.x)["output"], batch.y, batch.mask))


def load_personalizer(path: str | Path | None = None, seed: int = 0) -> Personalizer:
    """The personalization model: ``path`` is a fold folder (with ``generation/``) or a problem folder
    holding ``maml``/``pooled`` checkpoints; None: the shipped default, else a random-init default model."""
    import torch

    from metagait_edge.data.cycles import cycle_channels
    from metagait_edge.meta.maml import MAML
    from metagait_edge.personalization.config import PersonalizationConfig
    from metagait_edge.personalization.model import CycleModel, CycleModelConfig

    folder = Path(path) if path is not None else SHIPPED_PERSONALIZATION
    if (folder / "maml.safetensors").is_file():
        folder = folder.parent
    if (folder / "generation" / "maml.safetensors").is_file():
        from metagait_edge.personalization.experiment import load_problem, stored_config

        models = load_problem(stored_config(folder / "generation"), folder, "generation")
        return Personalizer(models.maml, models.normalizer, models.channels, str(folder / "generation"))
    if path is not None:
        raise FileNotFoundError(f"no personalization checkpoint (generation/maml.safetensors) under {folder}")
    config = PersonalizationConfig()
    channels = cycle_channels()
    torch.manual_seed(seed)
    maml = MAML(CycleModel(CycleModelConfig("generation", len(channels), config.tcn)), config.maml)
    return Personalizer(maml, fallback_normalizer(channels), channels, "random-init (no shipped checkpoint)")


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


@dataclass
class CalibrationOutcome:
    success: bool
    error_before: float  # held-out masked MSE (normalized units) of the model used so far
    error_after: float  # same, after adaptation
    reason: str = ""
    cycles_used: int = 0
    rejected: Dict[str, int] = field(default_factory=dict)  # reason -> cycles rejected
    adapt_s: float = 0.0
    wall_s: float = 0.0
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
              timeout_s: Optional[float] = None, previous=None, on_commit: Optional[Callable] = None) -> CalibrationOutcome:
    """Collect, adapt, validate, commit. ``cycles`` delivers ``CycleRecord``s as the gait worker detects them."""
    from metagait_edge.runtime.profiles import Profile, check_walker_name

    check_walker_name(walker)
    shots = shots or config.shots
    need = shots + 1
    timeout_s = config.timeout_s if timeout_s is None else timeout_s
    t0 = time.monotonic()
    accepted: List[CycleRecord] = []
    rejected: Dict[str, int] = {}
    last_index = None
    feedback(0, shots)

    def fail(reason: str, before=math.nan, after=math.nan) -> CalibrationOutcome:
        log.warning("calibration of %s: %s", walker, reason)
        return CalibrationOutcome(False, before, after, reason, len(accepted), rejected, 0.0, time.monotonic() - t0)

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
            # Support cycles must be consecutive (generation predicts each from the one before).
            accepted = []
            why = None
        if why is not None:
            key = why.split(" ")[0]
            rejected[key] = rejected.get(key, 0) + 1
            accepted, last_index = [], None
            log.info("calibration of %s: cycle %d rejected: %s", walker, rec.index, why)
            feedback(0, shots)
            continue
        accepted.append(rec)
        last_index = rec.index
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
        base_params, base_template = personalizer.base, torch.zeros_like(template)
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
        "cycle_s": [r.duration_s for r in accepted[:need]],
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
    return CalibrationOutcome(True, before, after, "", need, rejected, adapt_s, time.monotonic() - t0, rmse_b, rmse_a)
