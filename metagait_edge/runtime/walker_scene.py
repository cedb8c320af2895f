"""Camera scenes with several synthetic walkers and their ground-truth masks (tests and benchmarks).

Each walker is rendered side-on by the synthetic renderer (``synth.dataset.render_walker``) on its own path
(``x0``: pelvis position at the middle frame, metres) and painted in clothes over one static background:
skin-coloured head, a shirt and trousers with shading, so that a person model sees a person and not a
flat blob. Walkers nearer the camera (listed later) hide those behind. The scene starts empty for
``lead_in`` frames, as a fixed camera sees walkers walk into view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from metagait_edge.runtime.virtual_walker import textured_background


@dataclass(frozen=True)
class SceneWalker:
    height_cm: float = 175.0
    weight_kg: float = 70.0
    sex: str = "M"
    cadence_spm: float = 105.0
    x0: float = 0.0  # pelvis x at the middle rendered frame, metres (0: image centre)
    shirt_bgr: Tuple[int, int, int] = (170, 90, 40)
    trousers_bgr: Tuple[int, int, int] = (60, 50, 40)
    seed: int = 0
    view_deg: float = 90.0  # 90: walks right to left; 270: left to right


@dataclass
class RenderedScene:
    frames: np.ndarray  # uint8 [T, H, W, 3] BGR
    masks: np.ndarray  # uint8 [N, T, H, W] visible ground-truth mask of each walker (0/255)


_SKIN_BGR = np.array([120, 160, 210], np.float32)


def _paint(frame: np.ndarray, mask: np.ndarray, walker: SceneWalker, rng: np.random.Generator) -> None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    height = bottom - top
    y = np.arange(top, bottom, dtype=np.float32)[:, None, None]
    colour = np.where(y < top + 0.13 * height, _SKIN_BGR,
                      np.where(y < top + 0.5 * height, np.float32(walker.shirt_bgr), np.float32(walker.trousers_bgr)))
    x = (np.arange(left, right, dtype=np.float32) - (left + right - 1) / 2) / max(1.0, (right - left) / 2)
    shade = (1.0 - 0.25 * np.clip(np.abs(x), 0, 1) ** 2)[None, :, None]  # a rounded body, not a flat cut-out
    region = frame[top:bottom, left:right]
    person = colour * shade + rng.normal(0, 6, size=region.shape).astype(np.float32)
    on = (mask[top:bottom, left:right] > 127)[..., None]
    region[:] = np.where(on, np.clip(person, 0, 255), region)


def render_scene(walkers: Sequence[SceneWalker], n_frames: int = 60, lead_in: int = 30, size=(480, 240),
                 background_seed: int = 7, noise_sigma: float = 4.0, seed: int = 0,
                 occluder: Optional[Tuple[int, int, int, int]] = None,
                 plain_background: Optional[Tuple[int, int, int]] = None) -> RenderedScene:
    """Render ``walkers`` together into one scene of ``lead_in + n_frames`` frames at ``size`` (width, height).

    ``occluder``: a static object (x0, y0, x1, y1 pixels) in front of every walker, e.g. a bench hiding legs.
    ``plain_background``: one BGR colour instead of the textured scene (a colour key then finds the walkers).
    """
    from metagait_edge.synth.body import Walk
    from metagait_edge.synth.dataset import render_walker
    from metagait_edge.synth.identity import identity_from_subject
    from metagait_edge.synth.render import Defects

    if not walkers:
        raise ValueError("render_scene needs at least one walker")
    w, h = size
    rendered: List[np.ndarray] = []
    for k, walker in enumerate(walkers):
        ident = identity_from_subject(walker.height_cm, walker.weight_kg, walker.sex, walker.cadence_spm)
        walk = Walk(n_frames=n_frames, x0=walker.x0, phase0=0.37 * k)
        r = render_walker(ident, walker.view_deg, n_frames, seed=walker.seed, walk=walk, defects=Defects.none(),
                          image_size=(w, h), name=f"scene walker {k}")
        rendered.append(np.concatenate([np.zeros((lead_in, h, w), np.uint8), r.masks]))
    visible = np.stack(rendered)
    for k in range(len(walkers)):  # a nearer walker (later in the list) hides the ones behind
        for nearer in rendered[k + 1:]:
            visible[k][nearer > 127] = 0
    if occluder is not None:
        visible[:, :, occluder[1]:occluder[3], occluder[0]:occluder[2]] = 0
    rng = np.random.default_rng(seed)
    if plain_background is not None:
        background = np.full((h, w, 3), plain_background, np.float32)
    else:
        background = textured_background((w, h), background_seed).astype(np.float32)
    frames = np.empty((lead_in + n_frames, h, w, 3), np.uint8)
    for t in range(len(frames)):
        frame = background.copy()
        for k, walker in enumerate(walkers):
            _paint(frame, rendered[k][t], walker, rng)
        if occluder is not None:
            frame[occluder[1]:occluder[3], occluder[0]:occluder[2]] = (90, 110, 120)
        frame += rng.normal(0, noise_sigma, size=frame.shape).astype(np.float32)
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return RenderedScene(frames, visible)
