"""PNG strips of synthetic walkers for eyeballing: every view, and the three conditions."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from metagait_edge.synth.body import Walk
from metagait_edge.synth.identity import Identity
from metagait_edge.synth.render import Defects


def _label(tile: np.ndarray, text: str, width: int = 70) -> np.ndarray:
    import cv2

    pad = np.full((tile.shape[0], width), 40, dtype=np.uint8)
    cv2.putText(pad, text, (4, tile.shape[0] // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 255, 1, cv2.LINE_AA)
    return np.concatenate([pad, tile], 1)


def _row(frames: np.ndarray, n: int, crop: tuple[int, int, int, int] | None = None) -> np.ndarray:
    idx = np.linspace(0, len(frames) - 1, n).round().astype(int)
    tiles = []
    for i in idx:
        f = frames[i]
        if crop is not None:
            y0, y1, x0, x1 = crop
            f = f[y0:y1, x0:x1]
        tiles.append(np.pad(f, 1, constant_values=90))
    return np.concatenate(tiles, 1)


def strip_views(identity: Identity, views, n_frames: int = 28, n_cols: int = 10, seed: int = 0,
                condition: str = "nm", defects: Defects | None = None, walk: Walk | None = None) -> np.ndarray:
    """Rows = views, columns = pretreated 64x64 frames spread over about one gait cycle."""
    from metagait_edge.synth.dataset import render_walker

    rows = []
    for v in views:
        r = render_walker(identity, v, n_frames, condition=condition, seed=seed, walk=walk, defects=defects)
        rows.append(_label(_row(r.silhouettes, n_cols), f"{int(v):03d}"))
    return np.concatenate(rows, 0)


def write_png(path: str | os.PathLike, img: np.ndarray) -> None:
    import cv2

    from metagait_edge.atomic import atomic_write_bytes

    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed")
    atomic_write_bytes(Path(path), buf.tobytes())


def strip_conditions(identities: list[Identity], view: int = 90, n_frames: int = 28, n_cols: int = 10,
                     seed: int = 0) -> np.ndarray:
    """Rows = (identity, condition) for NM, BG (backpack / bag at the hip / hand bag) and CL."""
    from metagait_edge.synth.dataset import render_walker

    rows = []
    for k, ident in enumerate(identities):
        for cond, bag in (("nm", "shoulder"), ("bg", "backpack"), ("bg", "shoulder"), ("bg", "hand"), ("cl", "shoulder")):
            walk = Walk(n_frames=n_frames, condition=cond, bag=bag, bag_side=1, phase0=0.0)
            r = render_walker(ident, view, n_frames, seed=seed, walk=walk, defects=Defects.none())
            label = f"{k}:{cond}" + (f"-{bag[:4]}" if cond == "bg" else "")
            rows.append(_label(_row(r.silhouettes, n_cols), label, width=90))
    return np.concatenate(rows, 0)


def write_doc_images(out_dir: str | os.PathLike, seed: int = 0) -> list[Path]:
    """The strips in docs/img: all 11 views (NM, with and without defects) and the conditions."""
    from metagait_edge.synth.dataset import identity_for
    from metagait_edge.synth.render import CASIA_B_VIEWS

    out_dir = Path(out_dir)
    a, b = identity_for(seed, 1), identity_for(seed, 2)
    walk = Walk(n_frames=28, phase0=0.0)
    images = {
        "synth_views_nm.png": strip_views(a, CASIA_B_VIEWS, seed=seed, walk=walk, defects=Defects.none()),
        "synth_views_nm_defects.png": strip_views(b, CASIA_B_VIEWS, seed=seed, walk=walk),
        "synth_conditions.png": np.concatenate(
            [strip_conditions([a, b], view=90, seed=seed), strip_conditions([a], view=36, seed=seed)], 0),
    }
    paths = []
    for name, img in images.items():
        write_png(out_dir / name, img)
        paths.append(out_dir / name)
    return paths
