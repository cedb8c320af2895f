"""Perspective camera and rasterization of posed primitives into binary masks, plus realistic defects.

Capsules project exactly at their end points (perspective) with radii scaled by focal/depth, and are
filled as the convex hull of the two end discs. Ellipsoids use the weak-perspective outline at their
centre depth (the image of the unit ball under the projected semi-axis matrix), which is exact for an
orthographic camera and within a pixel for a person 8 m away. Convex point clouds (bag, coat) are filled
as the hull of their projected points. Drawing uses OpenCV with 4 fractional bits for sub-pixel edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metagait_edge.synth.body import Primitives

CASIA_B_VIEWS = tuple(range(0, 181, 18))
IMAGE_SIZE = (320, 240)  # width, height, as CASIA-B
_SHIFT = 4
_K_CIRCLE = 16
_K_ELLIPSE = 28


@dataclass(frozen=True)
class Camera:
    """A pinhole camera looking at ``target`` from azimuth ``view_deg`` around the walking path.

    View 0 looks at the walker's front (the walker approaches), 90 at the side, 180 at the back,
    as in CASIA-B. ``focal`` is in pixels.
    """

    view_deg: float = 90.0
    distance: float = 8.0
    height: float = 1.1
    target_height: float = 0.95
    focal: float = 660.0
    width: int = IMAGE_SIZE[0]
    height_px: int = IMAGE_SIZE[1]

    def frame(self) -> tuple[np.ndarray, np.ndarray]:
        """(position [3], rotation [3, 3] world->camera with rows right, down, forward)."""
        th = np.radians(self.view_deg)
        pos = np.array([self.distance * np.cos(th), self.distance * np.sin(th), self.height])
        target = np.array([0.0, 0.0, self.target_height])
        fwd = target - pos
        fwd /= np.linalg.norm(fwd)
        right = np.cross(fwd, np.array([0.0, 0.0, 1.0]))
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        return pos, np.stack([right, down, fwd])

    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points [..., 3] -> (pixels [..., 2], depth [...])."""
        pos, R = self.frame()
        cam = np.einsum("ij,...j->...i", R, pts - pos)
        z = np.maximum(cam[..., 2], 1e-3)
        uv = cam[..., :2] / z[..., None] * self.focal
        return uv + np.array([self.width / 2.0, self.height_px / 2.0]), z


def camera_for_view(view_deg: float, image_size: tuple[int, int] = IMAGE_SIZE, distance: float = 8.0,
                    person_fraction: float = 0.5) -> Camera:
    """A CASIA-B-like camera: a 1.75 m person at ``distance`` spans ``person_fraction`` of the height."""
    w, h = image_size
    focal = person_fraction * h * distance / 1.75
    return Camera(view_deg=float(view_deg), distance=distance, focal=focal, width=w, height_px=h)


def _fixed(p: np.ndarray) -> np.ndarray:
    return np.round(p * (1 << _SHIFT)).astype(np.int32)


def _camera_arrays(cams: list[Camera]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stacked (position [T, 3], rotation [T, 3, 3], focal [T]) of per-frame cameras, vectorized."""
    th = np.radians(np.array([c.view_deg for c in cams]))
    dist = np.array([c.distance for c in cams])
    pos = np.stack([dist * np.cos(th), dist * np.sin(th), np.array([c.height for c in cams])], -1)
    target = np.stack([np.zeros(len(cams)), np.zeros(len(cams)), np.array([c.target_height for c in cams])], -1)
    fwd = target - pos
    fwd /= np.linalg.norm(fwd, axis=-1, keepdims=True)
    right = np.stack([fwd[:, 1], -fwd[:, 0], np.zeros(len(cams))], -1)  # fwd x (0, 0, 1)
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(fwd, right)
    return pos, np.stack([right, down, fwd], 1), np.array([c.focal for c in cams])


def _project(pts: np.ndarray, pos: np.ndarray, R: np.ndarray, focal: np.ndarray, center: np.ndarray):
    """Points [T, N, 3] with per-frame cameras -> (pixels [T, N, 2], depth [T, N])."""
    cam = np.einsum("tij,tnj->tni", R, pts - pos[:, None])
    z = np.maximum(cam[..., 2], 1e-3)
    uv = cam[..., :2] / z[..., None] * focal[:, None, None] + center
    return uv, z


def rasterize(prims: Primitives, cameras: Camera | list[Camera]) -> np.ndarray:
    """uint8 masks [T, H, W] (0/255). ``cameras`` may give one camera per frame (jitter)."""
    import cv2

    T = prims.n_frames
    cams = cameras if isinstance(cameras, list) else [cameras] * T
    if len(cams) != T:
        raise ValueError(f"{len(cams)} cameras for {T} frames")
    W, H = cams[0].width, cams[0].height_px
    center = np.array([W / 2.0, H / 2.0])
    pos, R, focal = _camera_arrays(cams)
    out = np.zeros((T, H, W), dtype=np.uint8)
    ang = np.linspace(0, 2 * np.pi, _K_CIRCLE, endpoint=False)
    circ = np.stack([np.cos(ang), np.sin(ang)], -1)
    ang = np.linspace(0, 2 * np.pi, _K_ELLIPSE, endpoint=False)
    ell_u = np.stack([np.cos(ang), np.sin(ang)], -1)
    # Capsules: end discs in the image plane, radius focal * r / depth.
    ua, za = _project(prims.cap_a, pos, R, focal, center)
    ub, zb = _project(prims.cap_b, pos, R, focal, center)
    ra = focal[:, None] * prims.cap_ra / za
    rb = focal[:, None] * prims.cap_rb / zb
    caps = _fixed(np.concatenate([ua[..., None, :] + ra[..., None, None] * circ,
                                  ub[..., None, :] + rb[..., None, None] * circ], -2))  # [T, C, 2K, 2]
    # Ellipsoids: outline of the projected semi-axis matrix at the centre's depth.
    uc, zc = _project(prims.ell_center, pos, R, focal, center)
    A = np.einsum("tij,tejk->teik", R[:, :2], prims.ell_axes) * (focal[:, None] / zc)[..., None, None]
    L = _chol2(np.einsum("...ij,...kj->...ik", A, A))
    ells = _fixed(uc[..., None, :] + np.einsum("...ij,kj->...ki", L, ell_u))  # [T, E, K, 2]
    hulls = [_fixed(_project(hh, pos, R, focal, center)[0]) for hh in prims.hulls]
    for t in range(T):
        img = out[t]
        # Depth order does not matter for a binary mask.
        for c in range(caps.shape[1]):
            cv2.fillConvexPoly(img, cv2.convexHull(caps[t, c]), 255, cv2.LINE_8, _SHIFT)
        for e in range(ells.shape[1]):
            cv2.fillConvexPoly(img, ells[t, e], 255, cv2.LINE_8, _SHIFT)
        for hh in hulls:
            cv2.fillConvexPoly(img, cv2.convexHull(hh[t]), 255, cv2.LINE_8, _SHIFT)
    return out


def _chol2(M: np.ndarray) -> np.ndarray:
    """Cholesky factor of stacked symmetric positive 2x2 matrices [..., 2, 2]."""
    a = np.sqrt(np.maximum(M[..., 0, 0], 1e-12))
    b = M[..., 1, 0] / a
    c = np.sqrt(np.maximum(M[..., 1, 1] - b * b, 1e-12))
    z = np.zeros_like(a)
    return np.stack([np.stack([a, z], -1), np.stack([b, c], -1)], -2)


# --------------------------------------------------------------------------------------------------
# Defects: what background subtraction does to real silhouettes


@dataclass(frozen=True)
class Defects:
    """Probabilities and strengths of silhouette defects (all zero: clean masks)."""

    edge_noise: float = 0.6  # raggedness of the outline, pixels of displacement (about)
    hole_rate: float = 0.35  # expected holes per frame (background-coloured clothes)
    hole_size: float = 0.045  # relative to the person's height in pixels
    speckle_rate: float = 0.08  # expected isolated foreground blobs per frame, beside the person
    shadow_prob: float = 0.25  # per sequence: a cast shadow blob at the feet
    dropout_prob: float = 0.02  # per frame: segmentation loses the person (empty frame)
    band_prob: float = 0.04  # per frame: a horizontal band missing (occlusion, lighting)
    scale_jitter: float = 0.02  # relative focal jitter per frame
    position_jitter: float = 0.01  # metres of camera shake per frame
    partial_prob: float = 0.3  # per sequence: the path runs partly out of the picture

    @staticmethod
    def none() -> "Defects":
        return Defects(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def jittered_cameras(cam: Camera, n: int, defects: Defects, rng: np.random.Generator) -> list[Camera] | Camera:
    if defects.scale_jitter <= 0 and defects.position_jitter <= 0:
        return cam
    from dataclasses import replace

    # A slow random walk (smoothed), not independent per-frame noise: tripods drift and auto-zoom breathes.
    def walk(scale: float) -> np.ndarray:
        x = np.cumsum(rng.standard_normal(n)) / np.sqrt(max(n, 1))
        return scale * x

    f = walk(defects.scale_jitter)
    dh = walk(defects.position_jitter)
    dv = walk(defects.position_jitter * 2)
    return [replace(cam, focal=cam.focal * (1 + f[i]), height=cam.height + dh[i],
                    view_deg=cam.view_deg + np.degrees(dv[i] / cam.distance)) for i in range(n)]


def apply_defects(masks: np.ndarray, defects: Defects, rng: np.random.Generator) -> np.ndarray:
    """Corrupt clean masks [T, H, W] in place-free fashion; returns a new uint8 array (0/255)."""
    import cv2

    out = masks.copy()
    T, H, W = out.shape
    shadow = rng.random() < defects.shadow_prob
    shadow_len = rng.uniform(0.3, 0.8)
    shadow_dir = rng.choice([-1, 1])
    for t in range(T):
        m = out[t]
        rows = np.flatnonzero(m.any(axis=1))
        if len(rows) == 0:
            continue
        cols = np.flatnonzero(m[rows[0]: rows[-1] + 1].any(axis=0))
        top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]
        ph = bottom - top + 1
        if rng.random() < defects.dropout_prob:
            m[:] = 0
            continue
        if defects.edge_noise > 0:
            # Ragged outline: blur, add low-resolution noise, re-threshold (inside the person's box only).
            pad = 6
            y0, y1, x0, x1 = max(0, top - pad), min(H, bottom + pad + 1), max(0, left - pad), min(W, right + pad + 1)
            roi = m[y0:y1, x0:x1]
            h_, w_ = roi.shape
            noise = cv2.resize(rng.standard_normal((h_ // 4 + 2, w_ // 4 + 2)).astype(np.float32), (w_, h_),
                               interpolation=cv2.INTER_LINEAR)
            blur = cv2.GaussianBlur(roi.astype(np.float32) * (1 / 255.0), (0, 0), 1.0 + defects.edge_noise)
            roi[:] = np.where(blur + 0.18 * defects.edge_noise * noise > 0.5, 255, 0).astype(np.uint8)
        if shadow:
            cx = int(rng.normal((left + right) / 2, 2)) + shadow_dir * int(ph * shadow_len * 0.25)
            cv2.ellipse(m, (cx, int(bottom)), (max(1, int(ph * shadow_len * 0.3)), max(1, int(ph * 0.025))),
                        0, 0, 360, 255, -1)
        for _ in range(rng.poisson(defects.hole_rate)):
            cy = int(rng.uniform(top + 0.15 * ph, bottom - 0.1 * ph)) if ph > 10 else int(top)
            cx = int(rng.uniform(left, right + 1))
            r = max(1, int(abs(rng.normal(defects.hole_size, defects.hole_size / 2)) * ph))
            cv2.ellipse(m, (cx, cy), (r, max(1, int(r * rng.uniform(0.4, 1.6)))), float(rng.uniform(0, 180)),
                        0, 360, 0, -1)
        for _ in range(rng.poisson(defects.speckle_rate)):
            # Beside the person, within their rows: a blob above the head would wreck the vertical crop,
            # which real pipelines avoid with morphology and largest-component filtering.
            cx = int(rng.uniform(max(0, left - ph * 0.3), min(W, right + ph * 0.3)))
            cy = int(rng.uniform(top, bottom + 1))
            cv2.circle(m, (cx, cy), int(rng.integers(1, 4)), 255, -1)
        if rng.random() < defects.band_prob:
            y0 = int(rng.uniform(top, bottom))
            m[y0: y0 + max(1, int(rng.uniform(0.03, 0.12) * ph))] = 0
    return out
