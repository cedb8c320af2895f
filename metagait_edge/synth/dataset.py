"""Synthetic silhouette datasets in the OpenGait layout (CASIA-B protocol: 11 views, NM/BG/CL).

Every sequence is seeded from (seed, id, type[, view]) alone, so the output is byte-identical for the
same seed whatever the order or number of workers. As in CASIA-B, the 11 cameras film the SAME walk:
walk parameters come from (seed, id, type) and only the camera jitter and segmentation defects differ
per view.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from metagait_edge.data.pretreatment import DEFAULT_MIN_FOREGROUND, PretreatmentError, pretreat_frames
from metagait_edge.data.silhouettes import dumps_frames, sequence_pkl_path
from metagait_edge.atomic import atomic_write_bytes, atomic_write_text
from metagait_edge.synth.body import BAG_KINDS, Walk, pose
from metagait_edge.synth.identity import Identity, sample_identity
from metagait_edge.synth.render import IMAGE_SIZE, Camera, Defects, apply_defects, camera_for_view, jittered_cameras, rasterize

CASIA_B_TYPES = tuple([f"nm-{i:02d}" for i in range(1, 7)] + ["bg-01", "bg-02", "cl-01", "cl-02"])
CASIA_B_VIEWS = tuple(range(0, 181, 18))


@dataclass(frozen=True)
class WalkerRender:
    masks: np.ndarray  # uint8 [T, H, W] at camera resolution (0/255), defects included
    silhouettes: np.ndarray  # uint8 [T', 64, 64] pretreated (empty frames skipped)
    n_skipped: int
    walk: Walk
    camera: Camera


def render_walker(
    identity: Identity,
    view_deg: float,
    n_frames: int,
    condition: str = "nm",
    seed: int = 0,
    walk: Walk | None = None,
    defects: Defects | None = None,
    image_size: tuple[int, int] = IMAGE_SIZE,
    distance: float = 8.0,
    name: str = "synthetic walker",
) -> WalkerRender:
    """Render one walker from one view: full-resolution masks plus the same masks pretreated to 64x64.

    ``walk`` overrides the walk drawn from ``seed`` (phase, bag, path offset); ``defects`` defaults to
    the realistic ``Defects()``; pass ``Defects.none()`` for clean masks.
    """
    rng = np.random.default_rng([int(seed), int(round(view_deg * 10))])
    if walk is None:
        walk = draw_walk(np.random.default_rng(int(seed)), n_frames, condition)
    defects = Defects() if defects is None else defects
    masks = _render(identity, walk, view_deg, defects, rng, image_size, distance)
    try:
        pre = pretreat_frames(masks, name=name)
    except PretreatmentError:
        raise
    return WalkerRender(masks, pre.frames, pre.n_skipped, walk, camera_for_view(view_deg, image_size, distance))


def draw_walk(rng: np.random.Generator, n_frames: int, condition: str, bag: str | None = None,
              bag_side: int | None = None, coat_length: float | None = None, partial_prob: float = 0.3) -> Walk:
    """Walk parameters of one sequence: start phase, path offset (sometimes partly out of view), bag."""
    phase0 = float(rng.random())
    x0 = float(rng.normal(0, 0.25))
    if rng.random() < partial_prob:
        x0 += float(rng.choice([-1, 1]) * rng.uniform(0.8, 1.6))
    return Walk(
        n_frames=int(n_frames), condition=condition, phase0=phase0, x0=x0,
        bag=bag if bag is not None else str(rng.choice(BAG_KINDS)),
        bag_side=bag_side if bag_side is not None else int(rng.choice([-1, 1])),
        coat_length=coat_length if coat_length is not None else float(rng.uniform(0.8, 1.3)),
        bag_size=float(rng.uniform(0.8, 1.2)),
    )


def _render(ident: Identity, walk: Walk, view_deg: float, defects: Defects, rng: np.random.Generator,
            image_size: tuple[int, int], distance: float) -> np.ndarray:
    cam = camera_for_view(view_deg, image_size, distance)
    prims = pose(ident, walk)
    cams = jittered_cameras(cam, walk.n_frames, defects, rng)
    masks = rasterize(prims, cams)
    return apply_defects(masks, defects, rng)


def session_variation(ident: Identity, rng: np.random.Generator) -> Identity:
    """Day-to-day variation of one person's gait between sequences (cadence, stride, arm swing)."""
    return replace(
        ident,
        cadence_spm=ident.cadence_spm * (1 + 0.025 * rng.standard_normal()),
        stride_scale=ident.stride_scale * (1 + 0.03 * rng.standard_normal()),
        arm_swing=max(0.05, ident.arm_swing * (1 + 0.1 * rng.standard_normal())),
        trunk_lean=ident.trunk_lean + 1.0 * rng.standard_normal(),
    )


# --------------------------------------------------------------------------------------------------
# Whole datasets


@dataclass
class SynthConfig:
    ids: int = 20
    seed: int = 0
    first_id: int = 1
    views: list[int] = field(default_factory=lambda: list(CASIA_B_VIEWS))
    types: list[str] = field(default_factory=lambda: list(CASIA_B_TYPES))
    min_frames: int = 50
    max_frames: int = 70
    fps: float = 25.0
    image_width: int = IMAGE_SIZE[0]
    image_height: int = IMAGE_SIZE[1]
    distance: float = 8.0
    defects: bool = True
    partial_prob: float = 0.3

    def __post_init__(self) -> None:
        if self.ids < 1:
            raise ValueError(f"ids must be >= 1, got {self.ids}")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(f"need 1 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")
        for t in self.types:
            if t.split("-")[0] not in ("nm", "bg", "cl"):
                raise ValueError(f"type {t!r}: must start with nm-, bg- or cl-")
        for v in self.views:
            if not 0 <= v <= 360:
                raise ValueError(f"view {v} outside 0..360 degrees")


def id_name(num: int) -> str:
    return f"{num:03d}"


def identity_for(seed: int, id_num: int) -> Identity:
    return sample_identity(np.random.default_rng([int(seed), int(id_num), 0x1D]))


@dataclass(frozen=True)
class SequenceJob:
    id_num: int
    type: str

    def name(self) -> str:
        return f"{id_name(self.id_num)}/{self.type}"


def jobs(cfg: SynthConfig) -> list[SequenceJob]:
    return [SequenceJob(cfg.first_id + i, t) for i in range(cfg.ids) for t in cfg.types]


def render_job(cfg: SynthConfig, job: SequenceJob) -> dict[int, tuple[np.ndarray, int]]:
    """{view: (uint8 [T, 64, 64], skipped frames)} for every view of one (id, type) sequence."""
    ident = identity_for(cfg.seed, job.id_num)
    type_idx = list(CASIA_B_TYPES).index(job.type) if job.type in CASIA_B_TYPES else sum(map(ord, job.type))
    per_id = np.random.default_rng([cfg.seed, job.id_num, 0xBA6])
    bag, side, coat = str(per_id.choice(BAG_KINDS)), int(per_id.choice([-1, 1])), float(per_id.uniform(0.8, 1.3))
    rng = np.random.default_rng([cfg.seed, job.id_num, type_idx, 0x5E9])
    n = int(rng.integers(cfg.min_frames, cfg.max_frames + 1))
    walk = draw_walk(rng, n, job.type.split("-")[0], bag=bag, bag_side=side, coat_length=coat,
                     partial_prob=cfg.partial_prob if cfg.defects else 0.0)
    walk = replace(walk, fps=cfg.fps)
    seq_ident = session_variation(ident, rng)
    defects = Defects() if cfg.defects else Defects.none()
    out = {}
    for view in cfg.views:
        vrng = np.random.default_rng([cfg.seed, job.id_num, type_idx, int(view), 0x71E])
        masks = _render(seq_ident, walk, float(view), defects, vrng, (cfg.image_width, cfg.image_height), cfg.distance)
        pre = pretreat_frames(masks, name=f"synthetic sequence {job.name()}/{view:03d}",
                              min_foreground=DEFAULT_MIN_FOREGROUND)
        out[int(view)] = (pre.frames, pre.n_skipped)
    return out


def _work(args: tuple[SynthConfig, SequenceJob, str]) -> tuple[str, int, int, int, int]:
    cfg, job, out = args
    res = render_job(cfg, job)
    n_frames = skipped = nbytes = 0
    for view, (frames, sk) in res.items():
        data = dumps_frames(frames)
        atomic_write_bytes(sequence_pkl_path(out, id_name(job.id_num), job.type, f"{view:03d}"), data)
        n_frames += len(frames)
        skipped += sk
        nbytes += len(data)
    return job.name(), len(res), n_frames, skipped, nbytes


def generate(
    out: str | os.PathLike, cfg: SynthConfig, workers: int = 1,
    progress: Callable[[Iterator], Iterator] | None = None,
) -> dict:
    """Write the dataset under ``out`` and an ``identities.json``; returns a summary dict."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [(cfg, j, str(out)) for j in jobs(cfg)]
    t0 = time.perf_counter()
    if workers > 1:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # no fork: torch/cv2 threads in the parent do not survive fork
        with ctx.Pool(workers) as pool:
            it = pool.imap(_work, todo, chunksize=1)
            results = list(progress(it) if progress else it)
    else:
        it = map(_work, todo)
        results = list(progress(it) if progress else it)
    elapsed = time.perf_counter() - t0
    identities = {id_name(cfg.first_id + i): identity_for(cfg.seed, cfg.first_id + i).to_dict() for i in range(cfg.ids)}
    atomic_write_text(out / "identities.json", json.dumps({"seed": cfg.seed, "identities": identities}, indent=1, sort_keys=True))
    return {
        "root": str(out),
        "ids": cfg.ids,
        "sequences": sum(r[1] for r in results),
        "frames": sum(r[2] for r in results),
        "skipped_frames": sum(r[3] for r in results),
        "bytes": sum(r[4] for r in results),
        "seconds": elapsed,
    }


def hugadb_subjects(readme: str | os.PathLike) -> dict[int, dict]:
    """Subject table of HuGaDB's README (Table 2): {id: {"weight_kg", "height_cm", "age", "sex"}}.

    Feed a row to ``identity_from_subject`` with a cadence measured from that subject's walking files.
    """
    import re

    path = Path(readme)
    row = re.compile(r"^\|\s*(\d+)\s*\|\s*(\d+(?:\.\d+)?)\s*\|\s*(\d+(?:\.\d+)?)\s*\|\s*(\d+)\s*\|\s*([MF])\s*\|")
    out: dict[int, dict] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = row.match(line.strip())
        if m:
            out[int(m.group(1))] = {"weight_kg": float(m.group(2)), "height_cm": float(m.group(3)),
                                    "age": int(m.group(4)), "sex": m.group(5)}
    if not out:
        raise ValueError(f"{path}: no subject table rows '|id |weight (kg) |height (cm) |age |sex|' found")
    return out
