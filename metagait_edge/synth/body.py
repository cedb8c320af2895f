"""An articulated 3-D walker: gait kinematics and posed primitives of an ``identity.Identity``.

The body is a set of tapered capsules (limbs, neck, feet), ellipsoids (head, torso, pelvis, hands) and
convex point clouds (bag, coat hem), posed every frame by sagittal joint-angle curves. The curves are
smooth periodic functions of gait phase: Fourier series (6 harmonics) fitted to normative adult walking
curves (hip, knee and ankle flexion after Winter's and Perry's normative data; pelvic rotation,
obliquity and tilt; shoulder and elbow flexion for the arm swing). Phase 0 is heel strike of the
limb in question; the left limb runs half a cycle behind the right (plus the identity's asymmetry).

World frame: x forward (walking direction), y left, z up, metres. The stance foot is kept on the ground
by lifting the pelvis so that the lowest foot point touches z = 0 every frame, which also produces the
natural double-frequency vertical bounce of the body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from metagait_edge.synth.identity import Identity

# --------------------------------------------------------------------------------------------------
# Normative curves: (percent of gait cycle, degrees). Positive = flexion (hip, knee, shoulder, elbow),
# dorsiflexion (ankle), forward rotation of the ipsilateral side (pelvis rotation), ipsilateral side up
# (obliquity), anterior tilt (pelvic tilt).

NORMATIVE_KEYPOINTS: dict[str, list[tuple[float, float]]] = {
    "hip": [(0, 30), (10, 27), (20, 18), (30, 9), (40, 0), (50, -8), (55, -10), (60, -6), (65, 2),
            (70, 12), (75, 20), (80, 27), (85, 31), (90, 33), (95, 32)],
    "knee": [(0, 4), (5, 10), (12, 17), (18, 16), (25, 11), (32, 6), (40, 4), (45, 5), (50, 9), (55, 17),
             (60, 32), (65, 47), (70, 58), (73, 61), (77, 59), (82, 48), (88, 30), (93, 14), (97, 6)],
    "ankle": [(0, 0), (5, -5), (10, -3), (20, 4), (30, 8), (40, 10), (47, 10), (52, 6), (57, -2), (62, -14),
              (65, -17), (70, -12), (75, -5), (80, 0), (88, 2), (95, 1)],
    "shoulder": [(0, -16), (10, -14), (25, -4), (40, 8), (50, 12), (60, 10), (75, 0), (90, -12)],
    "elbow": [(0, 14), (25, 22), (50, 34), (75, 26)],
    "pelvis_rotation": [(0, 5), (25, 0), (50, -5), (75, 0)],
    "pelvis_obliquity": [(0, 0), (15, -4), (30, -1), (50, 0), (65, 4), (80, 1)],
    "pelvis_tilt": [(0, 0), (12, 1.5), (25, 0), (37, -1.5), (50, 0), (62, 1.5), (75, 0), (87, -1.5)],
}
N_HARMONICS = 6


@lru_cache(maxsize=None)
def fourier_coefficients(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a0, a[k], b[k]) of the ``N_HARMONICS``-term Fourier series fitted to a normative curve."""
    pts = NORMATIVE_KEYPOINTS[name]
    x = np.array([p[0] for p in pts] + [pts[0][0] + 100.0]) / 100.0
    y = np.array([p[1] for p in pts] + [pts[0][1]], dtype=np.float64)
    grid = np.arange(256) / 256.0
    dense = np.interp(grid, x, y)  # periodic piecewise-linear, then truncated: smooth and periodic
    spec = np.fft.rfft(dense) / len(grid)
    k = np.arange(1, N_HARMONICS + 1)
    return np.real(spec[0]), 2 * np.real(spec[k]), -2 * np.imag(spec[k])


def gait_curve(name: str, phase: np.ndarray) -> np.ndarray:
    """Degrees of the normative curve ``name`` at gait phase (cycles; any real number, period 1)."""
    a0, a, b = fourier_coefficients(name)
    phase = np.asarray(phase, dtype=np.float64)
    k = np.arange(1, N_HARMONICS + 1)
    ang = 2 * np.pi * phase[..., None] * k
    return a0 + (np.cos(ang) * a).sum(-1) + (np.sin(ang) * b).sum(-1)


# Winter's segment proportions (fraction of body height).
_THIGH, _SHANK, _ANKLE_H, _FOOT = 0.245, 0.246, 0.039, 0.152
_UPPER_ARM, _FOREARM, _HAND = 0.186, 0.146, 0.108
_SHOULDER_W, _HIP_W = 0.259, 0.191
_TRUNK = 0.288  # hip joint to shoulder line



# --------------------------------------------------------------------------------------------------
# A walk (one sequence) and the posed body

CONDITIONS = ("nm", "bg", "cl")
BAG_KINDS = ("backpack", "shoulder", "hand")


@dataclass(frozen=True)
class Walk:
    n_frames: int = 60
    fps: float = 25.0
    condition: str = "nm"
    bag: str = "shoulder"  # for condition "bg": backpack, shoulder (bag at the hip) or hand
    bag_side: int = 1  # +1 left, -1 right
    phase0: float = 0.0  # gait phase of the right limb at frame 0 (cycles)
    x0: float = 0.0  # pelvis x at the middle frame (metres)
    coat_length: float = 1.0  # multiplier on the hem depth below the hips
    bag_size: float = 1.0

    def __post_init__(self) -> None:
        if self.condition not in CONDITIONS:
            raise ValueError(f"condition {self.condition!r} not in {CONDITIONS}")
        if self.bag not in BAG_KINDS:
            raise ValueError(f"bag {self.bag!r} not in {BAG_KINDS}")
        if self.n_frames < 1:
            raise ValueError(f"n_frames must be >= 1, got {self.n_frames}")


@dataclass
class Primitives:
    """Posed geometry of T frames in world coordinates."""

    cap_a: np.ndarray  # [T, C, 3] capsule end points
    cap_b: np.ndarray  # [T, C, 3]
    cap_ra: np.ndarray  # [C] radii at a
    cap_rb: np.ndarray  # [C] radii at b
    ell_center: np.ndarray  # [T, E, 3]
    ell_axes: np.ndarray  # [T, E, 3, 3]: columns are the semi-axis vectors
    hulls: list[np.ndarray] = field(default_factory=list)  # each [T, K, 3]: filled convex hull
    names: list[str] = field(default_factory=list)  # capsule names then ellipsoid names

    @property
    def n_frames(self) -> int:
        return self.cap_a.shape[0]


def _rot_y(theta: np.ndarray) -> np.ndarray:
    """[..., 3, 3] rotation about +y by theta (rad): positive pitches +z toward +x (forward lean)."""
    c, s = np.cos(theta), np.sin(theta)
    z, o = np.zeros_like(theta), np.ones_like(theta)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rot_z(theta: np.ndarray) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    z, o = np.zeros_like(theta), np.ones_like(theta)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _sagittal(angle_rad: np.ndarray, length: float | np.ndarray) -> np.ndarray:
    """A segment hanging down, swung forward by ``angle``: length * (sin a, 0, -cos a)."""
    return np.stack([np.sin(angle_rad), np.zeros_like(angle_rad), -np.cos(angle_rad)], -1) * np.asarray(length)[..., None]


def _mv(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.einsum("...ij,...j->...i", m, v)


@dataclass(frozen=True)
class Segments:
    thigh: float
    shank: float
    ankle_h: float
    foot: float
    upper_arm: float
    forearm: float
    trunk: float
    shoulder_w: float
    hip_w: float
    head_h: float


def segments(ident: Identity) -> Segments:
    h = ident.height
    leg = ident.leg_scale
    r = ident.thigh_shank_ratio
    # Keep total height: what legs gain the trunk loses (the head scales separately).
    trunk = _TRUNK * h * ident.torso_scale * (1 - 0.5 * (leg - 1))
    return Segments(
        thigh=_THIGH * h * leg * r / ((r + 1) / 2), shank=_SHANK * h * leg / ((r + 1) / 2),
        ankle_h=_ANKLE_H * h, foot=_FOOT * h * ident.foot_scale, upper_arm=_UPPER_ARM * h * ident.arm_scale,
        forearm=_FOREARM * h * ident.arm_scale, trunk=trunk, shoulder_w=_SHOULDER_W * h * ident.shoulder_width,
        hip_w=_HIP_W * h * ident.hip_width, head_h=0.13 * h * ident.head_scale,
    )


def joint_angles(ident: Identity, walk: Walk, phase_right: np.ndarray) -> dict[str, np.ndarray]:
    """Degrees per limb over frames; keys like ``hip_r``, ``knee_l``, ``shoulder_r``, ``pelvis_rotation``."""
    out: dict[str, np.ndarray] = {}
    phase_left = phase_right - 0.5 - ident.step_timing_asym
    bag_hand = walk.condition == "bg" and walk.bag in ("hand", "shoulder")
    for side, ph, sgn in (("r", phase_right, 1.0), ("l", phase_left, -1.0)):
        hip_amp = ident.stride_scale * (1 + 0.5 * sgn * ident.hip_amp_asym)
        hip = gait_curve("hip", ph)
        hip_mean = fourier_coefficients("hip")[0]
        out[f"hip_{side}"] = hip_mean + (hip - hip_mean) * hip_amp
        knee = gait_curve("knee", ph)
        out[f"knee_{side}"] = knee * np.where(knee > 20, ident.knee_scale, 1.0) * (0.9 + 0.1 * ident.stride_scale)
        out[f"ankle_{side}"] = gait_curve("ankle", ph)
        swing = ident.arm_swing * (1 + 0.5 * sgn * ident.arm_swing_asym)
        side_sign = -1 if side == "r" else 1  # +1 left: matches Walk.bag_side
        if bag_hand and walk.bag_side == side_sign:
            swing *= 0.15 if walk.bag == "hand" else 0.4  # a held or strapped bag damps that arm
        if walk.condition == "cl":
            swing *= 0.85
        sh = gait_curve("shoulder", ph)
        out[f"shoulder_{side}"] = -2.0 + (sh + 2.0) * swing
        el = gait_curve("elbow", ph)
        out[f"elbow_{side}"] = 14 + (el - 14) * min(1.0, swing) + ident.elbow_flex
        if bag_hand and walk.bag_side == side_sign and walk.bag == "hand":
            out[f"elbow_{side}"] = np.full_like(el, 6.0)
    out["pelvis_rotation"] = gait_curve("pelvis_rotation", phase_right) * ident.pelvis_rotation_scale
    out["pelvis_obliquity"] = gait_curve("pelvis_obliquity", phase_right)
    out["pelvis_tilt"] = gait_curve("pelvis_tilt", phase_right)
    return out


def _leg(hip: np.ndarray, a_hip: np.ndarray, a_knee: np.ndarray, a_ankle: np.ndarray, seg: Segments, scale: float):
    th, sh, ft = seg.thigh * scale, seg.shank * scale, seg.foot
    knee = hip + _sagittal(a_hip, th)
    s = a_hip - a_knee
    ankle = knee + _sagittal(s, sh)
    f = s + a_ankle
    c, si = np.cos(f), np.sin(f)
    ah = seg.ankle_h * 0.75

    def foot_point(fx: float, fz: float) -> np.ndarray:
        return ankle + np.stack([fx * c - fz * si, np.zeros_like(f), fx * si + fz * c], -1)

    heel = foot_point(-0.2 * ft, -ah)
    toe = foot_point(0.72 * ft, -ah)
    return knee, ankle, heel, toe


def stance_speed(ident: Identity) -> float:
    """Forward speed (m/s) that keeps the stance foot from sliding, from the leg kinematics."""
    walk = Walk(n_frames=2)
    ph = np.linspace(0.0, 1.0, 201)
    ang = joint_angles(ident, walk, ph)
    seg = segments(ident)
    _, ankle, _, _ = _leg(np.zeros((len(ph), 3)), np.radians(ang["hip_r"]), np.radians(ang["knee_r"]),
                          np.radians(ang["ankle_r"]), seg, 1.0)
    i0, i1 = 4, 100  # about loading response to toe-off of the right limb (2%..50%)
    cycle_s = 120.0 / ident.cadence_spm
    return float((ankle[i0, 0] - ankle[i1, 0]) / ((ph[i1] - ph[i0]) * cycle_s))


def pose(ident: Identity, walk: Walk) -> Primitives:
    """Posed primitives for every frame of ``walk``."""
    T = walk.n_frames
    t = np.arange(T) / walk.fps
    cycle_s = 120.0 / ident.cadence_spm
    phase = walk.phase0 + t / cycle_s
    ang = {k: np.radians(v) for k, v in joint_angles(ident, walk, phase).items()}
    seg = segments(ident)
    h, g, lg = ident.height, ident.limb_girth, ident.limb_girth
    coat = walk.condition == "cl"
    cg = 0.012 * h if coat else 0.0  # coat adds cloth thickness around trunk and arms

    # Pelvis frame: rotation about z (transverse) and obliquity; positions relative to the pelvis centre.
    rot = ang["pelvis_rotation"]
    obl = ang["pelvis_obliquity"]
    R_pel = _rot_z(rot)
    half_hip = seg.hip_w / 2
    half_joint = 0.27 * seg.hip_w  # hip joint centres sit well inside the bitrochanteric breadth
    hip_r = _mv(R_pel, np.stack([np.zeros(T), np.full(T, -half_joint), half_joint * np.sin(obl)], -1))
    hip_l = _mv(R_pel, np.stack([np.zeros(T), np.full(T, half_joint), -half_joint * np.sin(obl)], -1))
    leg_r = 1 + ident.leg_length_asym / 2
    leg_l = 1 - ident.leg_length_asym / 2
    knee_r, ankle_r, heel_r, toe_r = _leg(hip_r, ang["hip_r"], ang["knee_r"], ang["ankle_r"], seg, leg_r)
    knee_l, ankle_l, heel_l, toe_l = _leg(hip_l, ang["hip_l"], ang["knee_l"], ang["ankle_l"], seg, leg_l)
    r_heel, r_toe = 0.028 * h, 0.018 * h
    lowest = np.minimum.reduce([heel_r[:, 2] - r_heel, toe_r[:, 2] - r_toe, heel_l[:, 2] - r_heel, toe_l[:, 2] - r_toe])
    speed = stance_speed(ident)
    tc = t - t[T // 2] if T > 1 else t
    offset = np.stack([walk.x0 + speed * tc, ident.lateral_sway * np.sin(2 * np.pi * phase), -lowest], -1)

    # Trunk: forward lean plus a small pitch oscillation, thorax counter-rotating against the pelvis.
    lean = np.radians(ident.trunk_lean) + ang["pelvis_tilt"] * 0.5
    R_trunk = _mv_mat(_rot_y(lean), _rot_z(-0.6 * rot))
    up = _mv(R_trunk, np.array([0.0, 0.0, 1.0]))
    pelvis_c = np.zeros((T, 3)) + np.array([0.0, 0.0, 0.03 * h])
    neck_base = _mv(R_trunk, np.array([0.0, 0.0, seg.trunk]))
    sh_drop = np.array([0.0, 0.0, -ident.shoulder_drop / 2])
    shoulder_r = neck_base + _mv(R_trunk, np.array([0.0, -seg.shoulder_w / 2 + 0.03 * h, -0.035 * h])) + sh_drop
    shoulder_l = neck_base + _mv(R_trunk, np.array([0.0, seg.shoulder_w / 2 - 0.03 * h, -0.035 * h])) - sh_drop
    head_pitch = lean + np.radians(ident.head_pitch)
    R_head = _rot_y(head_pitch)
    head_base = neck_base + up * 0.035 * h
    head_c = head_base + _mv(R_head, np.array([0.01 * h, 0.0, seg.head_h / 2]))

    def arm(shoulder, a_sh, a_el, side):
        abd = np.radians(ident.arm_abduction) * side
        d_up = np.stack([np.sin(a_sh) * np.cos(abd), np.full_like(a_sh, np.sin(abd)), -np.cos(a_sh) * np.cos(abd)], -1)
        fe = a_sh + a_el
        d_fore = np.stack([np.sin(fe) * np.cos(abd), np.full_like(a_sh, np.sin(abd) * 0.6), -np.cos(fe) * np.cos(abd)], -1)
        R_lean = _rot_y(lean * 0.5)  # arms hang from the shoulders, only partly following the lean
        elbow = shoulder + _mv(R_lean, d_up) * seg.upper_arm
        wrist = elbow + _mv(R_lean, d_fore) * seg.forearm
        hand = wrist + _mv(R_lean, d_fore) * 0.045 * h
        return elbow, wrist, hand

    elbow_r, wrist_r, hand_r = arm(shoulder_r, ang["shoulder_r"], ang["elbow_r"], -1)
    elbow_l, wrist_l, hand_l = arm(shoulder_l, ang["shoulder_l"], ang["elbow_l"], 1)

    caps = [  # name, a, b, ra, rb
        ("thigh_r", hip_r, knee_r, 0.05 * h * lg, 0.031 * h * lg),
        ("thigh_l", hip_l, knee_l, 0.05 * h * lg, 0.031 * h * lg),
        ("shank_r", knee_r, ankle_r, 0.031 * h * lg, 0.019 * h * lg),
        ("shank_l", knee_l, ankle_l, 0.031 * h * lg, 0.019 * h * lg),
        ("foot_r", heel_r, toe_r, r_heel, r_toe),
        ("foot_l", heel_l, toe_l, r_heel, r_toe),
        ("upper_arm_r", shoulder_r, elbow_r, 0.026 * h * g + cg, 0.02 * h * g + cg),
        ("upper_arm_l", shoulder_l, elbow_l, 0.026 * h * g + cg, 0.02 * h * g + cg),
        ("forearm_r", elbow_r, wrist_r, 0.02 * h * g + cg, 0.015 * h * g + 0.6 * cg),
        ("forearm_l", elbow_l, wrist_l, 0.02 * h * g + cg, 0.015 * h * g + 0.6 * cg),
        ("neck", neck_base - up * 0.02 * h, head_base + up * 0.01 * h, 0.03 * h, 0.028 * h),
        ("shoulders", shoulder_r, shoulder_l, 0.03 * h * ident.torso_girth + cg, 0.03 * h * ident.torso_girth + cg),
    ]
    tg, hg = ident.torso_girth, ident.hip_girth
    torso_c = (pelvis_c + neck_base) / 2 + up * 0.01 * h
    ells = [  # name, centre, rotation [T,3,3], semi-axes (x depth, y width, z height)
        ("head", head_c, R_head, (0.057 * h * ident.head_scale, 0.048 * h * ident.head_scale, seg.head_h / 2)),
        ("torso", torso_c, R_trunk, (0.085 * h * tg + cg, seg.shoulder_w * 0.4 * tg ** 0.5 + cg, seg.trunk * 0.56)),
        ("pelvis", pelvis_c, _mv_mat(R_pel, _rot_y(0.5 * lean)), (0.08 * h * hg + cg, half_hip * hg ** 0.5 + cg, 0.085 * h)),
        ("hand_r", hand_r, R_trunk, (0.022 * h, 0.016 * h, 0.03 * h)),
        ("hand_l", hand_l, R_trunk, (0.022 * h, 0.016 * h, 0.03 * h)),
    ]
    hulls: list[np.ndarray] = []
    if coat:
        hulls.append(_coat_hem(pelvis_c, up, R_trunk, seg, ident, walk, (knee_r + knee_l) / 2))
    if walk.condition == "bg":
        hulls.append(_bag(walk, ident, seg, neck_base, pelvis_c, R_trunk, hand_r if walk.bag_side < 0 else hand_l))

    cap_a = np.stack([c[1] for c in caps], 1) + offset[:, None]
    cap_b = np.stack([c[2] for c in caps], 1) + offset[:, None]
    ell_c = np.stack([e[1] for e in ells], 1) + offset[:, None]
    ell_ax = np.stack([np.broadcast_to(e[2], (T, 3, 3)) * np.array(e[3]) for e in ells], 1)
    return Primitives(
        cap_a=cap_a, cap_b=cap_b, cap_ra=np.array([c[3] for c in caps]), cap_rb=np.array([c[4] for c in caps]),
        ell_center=ell_c, ell_axes=ell_ax, hulls=[hh + offset[:, None] for hh in hulls],
        names=[c[0] for c in caps] + [e[0] for e in ells],
    )


def _mv_mat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("...ij,...jk->...ik", a, b)


def _ring(center: np.ndarray, R: np.ndarray, rx: float, ry: float, n: int = 14) -> np.ndarray:
    th = np.linspace(0, 2 * np.pi, n, endpoint=False)
    local = np.stack([rx * np.cos(th), ry * np.sin(th), np.zeros(n)], -1)  # [n, 3]
    return center[:, None] + np.einsum("tij,nj->tni", R, local)


def _coat_hem(pelvis_c, up, R_trunk, seg: Segments, ident: Identity, walk: Walk, knee_mid) -> np.ndarray:
    """A coat skirt: a frustum from the waist to below the hips, its hem trailing the mean knee."""
    h = ident.height
    waist = pelvis_c + up * 0.09 * h
    depth = 0.2 * h * walk.coat_length
    hem_c = pelvis_c - up * depth
    # The hem sways with the legs a little (halfway between straight down and the mean knee).
    toward_knee = knee_mid - pelvis_c
    hem_c = hem_c + 0.25 * np.stack([toward_knee[:, 0], np.zeros(len(hem_c)), np.zeros(len(hem_c))], -1)
    w = seg.hip_w / 2 + 0.05 * h * ident.hip_girth
    top = _ring(waist, R_trunk, 0.1 * h * ident.torso_girth, w)
    bottom = _ring(hem_c, R_trunk, 0.13 * h * ident.hip_girth, w * 1.25)
    return np.concatenate([top, bottom], 1)


def _bag(walk: Walk, ident: Identity, seg: Segments, neck_base, pelvis_c, R_trunk, hand) -> np.ndarray:
    h, s = ident.height, walk.bag_size
    side = walk.bag_side
    if walk.bag == "backpack":
        half = np.array([0.07, 0.15, 0.22]) * s * h / 1.75
        back = 0.085 * h * ident.torso_girth * 0.9  # the torso ellipsoid's back, a little below its widest
        center = (neck_base * 0.6 + pelvis_c * 0.4) + _mv(R_trunk, np.array([-(back + half[0]), 0.0, 0.0]))
        R = R_trunk
    elif walk.bag == "shoulder":
        center = pelvis_c + _mv(R_trunk, np.array([0.02 * h, side * (seg.hip_w / 2 + 0.075 * h), 0.0]))
        half = np.array([0.16, 0.05, 0.13]) * s * h / 1.75
        R = R_trunk
    else:  # hand: a bag hanging below the hand
        center = hand + np.array([0.0, side * 0.01 * h, -0.11 * s * h])
        half = np.array([0.17, 0.05, 0.12]) * s * h / 1.75
        R = np.broadcast_to(np.eye(3), (len(hand), 3, 3))
    corners = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], dtype=np.float64) * half
    return center[:, None] + np.einsum("tij,nj->tni", R, corners)
