"""Who a synthetic walker is: body shape, proportions and gait style (:class:`Identity`), sampled around
the population mean (:func:`sample_identity`) or from a real subject's height, weight, sex and cadence
(:func:`identity_from_subject`). :mod:`.body` poses it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Identity:
    """Everything that makes one synthetic walker recognisable. Lengths in metres, angles in degrees."""

    height: float = 1.75
    mass: float = 70.0
    sex: str = "M"
    # Segment length multipliers on the anthropometric proportions (1 = average).
    leg_scale: float = 1.0
    thigh_shank_ratio: float = 1.0  # >1: longer thigh, shorter shank (same leg length)
    arm_scale: float = 1.0
    torso_scale: float = 1.0
    head_scale: float = 1.0
    foot_scale: float = 1.0
    # Widths and girths (multipliers).
    shoulder_width: float = 1.0
    hip_width: float = 1.0
    torso_girth: float = 1.0
    hip_girth: float = 1.0
    limb_girth: float = 1.0
    # Gait style.
    cadence_spm: float = 110.0  # steps per minute
    stride_scale: float = 1.0  # scales hip flexion excursion (longer or shorter strides)
    knee_scale: float = 1.0  # scales swing knee flexion
    arm_swing: float = 1.0  # scales shoulder flexion excursion
    elbow_flex: float = 0.0  # added to elbow flexion
    arm_abduction: float = 8.0
    trunk_lean: float = 4.0  # forward
    head_pitch: float = 5.0  # forward head posture
    pelvis_rotation_scale: float = 1.0
    lateral_sway: float = 0.02  # metres
    # Left/right asymmetries (right minus left, as fractions or degrees).
    leg_length_asym: float = 0.0  # fraction of leg length
    arm_swing_asym: float = 0.0  # fraction of arm swing
    step_timing_asym: float = 0.0  # fraction of a cycle added to the left limbs' phase lag
    hip_amp_asym: float = 0.0  # fraction of hip excursion
    shoulder_drop: float = 0.0  # metres, right shoulder lower when positive

    def to_dict(self) -> dict:
        return asdict(self)


def _clip(x: float, lo: float, hi: float) -> float:
    return float(min(hi, max(lo, x)))


def _draw_style(rng: np.random.Generator) -> dict:
    """Gait style and proportions drawn around the population mean (body size is set by the caller)."""
    n = rng.standard_normal
    return dict(
        leg_scale=_clip(1 + 0.035 * n(), 0.9, 1.1),
        thigh_shank_ratio=_clip(1 + 0.05 * n(), 0.88, 1.12),
        arm_scale=_clip(1 + 0.04 * n(), 0.88, 1.12),
        torso_scale=_clip(1 + 0.04 * n(), 0.88, 1.12),
        head_scale=_clip(1 + 0.05 * n(), 0.85, 1.15),
        foot_scale=_clip(1 + 0.05 * n(), 0.85, 1.15),
        limb_girth=_clip(1 + 0.08 * n(), 0.8, 1.25),
        stride_scale=_clip(1 + 0.1 * n(), 0.75, 1.25),
        knee_scale=_clip(1 + 0.08 * n(), 0.8, 1.2),
        arm_swing=_clip(1 + 0.35 * n(), 0.2, 2.0),
        elbow_flex=_clip(8 * n(), -12, 25),
        arm_abduction=_clip(8 + 4 * n(), 0, 20),
        trunk_lean=_clip(4 + 3.5 * n(), -4, 14),
        head_pitch=_clip(5 + 6 * n(), -8, 22),
        pelvis_rotation_scale=_clip(1 + 0.3 * n(), 0.4, 1.8),
        lateral_sway=_clip(0.02 + 0.01 * n(), 0.0, 0.05),
        leg_length_asym=_clip(0.012 * n(), -0.04, 0.04),
        arm_swing_asym=_clip(0.15 * n(), -0.5, 0.5),
        step_timing_asym=_clip(0.012 * n(), -0.04, 0.04),
        hip_amp_asym=_clip(0.06 * n(), -0.2, 0.2),
        shoulder_drop=_clip(0.008 * n(), -0.03, 0.03),
    )


def _body_from_size(height_m: float, mass_kg: float, sex: str, rng: np.random.Generator) -> dict:
    n = rng.standard_normal
    bmi = mass_kg / height_m ** 2
    girth = math.sqrt(bmi / 22.5)  # cross-section widths grow roughly with sqrt(BMI)
    male = sex.upper() == "M"
    return dict(
        shoulder_width=_clip((1.03 if male else 0.94) * (0.5 + 0.5 * girth) * (1 + 0.04 * n()), 0.8, 1.3),
        hip_width=_clip((0.98 if male else 1.07) * (0.5 + 0.5 * girth) * (1 + 0.04 * n()), 0.8, 1.35),
        torso_girth=_clip(girth * (1 + 0.06 * n()), 0.7, 1.6),
        hip_girth=_clip(girth * (0.97 if male else 1.06) * (1 + 0.06 * n()), 0.7, 1.6),
    )


def sample_identity(rng: np.random.Generator | int) -> Identity:
    """A random adult walker: sex, height, mass (via BMI), proportions, cadence and gait style."""
    rng = np.random.default_rng(rng)
    sex = "M" if rng.random() < 0.55 else "F"
    height = _clip((1.76 if sex == "M" else 1.63) + 0.07 * rng.standard_normal(), 1.45, 2.05)
    bmi = _clip(23.0 + 3.0 * rng.standard_normal(), 17.0, 36.0)
    cadence = _clip(112 - 25 * (height - 1.70) + 7 * rng.standard_normal(), 88, 135)
    return _make(height, bmi * height ** 2, sex, cadence, rng)


def _make(height: float, mass: float, sex: str, cadence: float, rng: np.random.Generator) -> Identity:
    size = _body_from_size(height, mass, sex, rng)
    style = _draw_style(rng)
    return Identity(height=float(height), mass=float(mass), sex=sex.upper(), cadence_spm=float(cadence),
                    **size, **style)


def identity_from_subject(
    height_cm: float, weight_kg: float, sex: str, cadence_spm: float, seed: int = 0
) -> Identity:
    """A walker with a real subject's height, weight, sex and measured cadence (e.g. HuGaDB's table).

    Proportions and gait style are drawn from ``seed`` around the population mean.
    """
    if not 100 <= height_cm <= 230:
        raise ValueError(f"height_cm={height_cm} outside 100..230")
    if not 25 <= weight_kg <= 250:
        raise ValueError(f"weight_kg={weight_kg} outside 25..250")
    if str(sex).upper() not in ("M", "F"):
        raise ValueError(f"sex={sex!r}: use 'M' or 'F'")
    if not 40 <= cadence_spm <= 200:
        raise ValueError(f"cadence_spm={cadence_spm} outside 40..200 steps/min")
    rng = np.random.default_rng([int(seed), int(round(height_cm * 10)), int(round(weight_kg * 10))])
    return _make(height_cm / 100.0, float(weight_kg), str(sex), float(cadence_spm), rng)
