"""Walker profile store: one folder per walker with the adapted weights and their metadata.

Layout (``<root>/<walker>/``)::

    weights-<id>.safetensors   adapted fast weights + the personal template (tensor ``__template__``) and, after
                               continual updates that learnt one, the per-phase residual (``__residual__``)
    profile.json               metadata; names the weights file and its SHA-256: the commit point

A save writes the new weights file atomically (temp file, fsync, rename), then ``profile.json``
atomically, then removes older weights files. A crash (even kill -9) or a full disk at any point leaves
either the old profile or the new one loadable, never a mix: ``profile.json`` only ever names a complete,
fsynced weights file, and the old weights stay until the new ``profile.json`` is on disk.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from metagait_edge.atomic import atomic_write_text, atomic_write_with
from metagait_edge.hashing import file_sha256

FORMAT = "metagait-edge-walker-profile"
VERSION = 1
TEMPLATE_KEY = "__template__"
RESIDUAL_KEY = "__residual__"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ProfileError(ValueError):
    """A profile is missing or unreadable; the message names the walker and the file."""


def default_root() -> Path:
    from metagait_edge.paths import cache_dir

    return cache_dir() / "walkers"


def check_walker_name(walker: str) -> str:
    if not isinstance(walker, str) or not _NAME.match(walker):
        raise ProfileError(f"walker name {walker!r} must be 1-64 characters of letters, digits, '_', '-', '.'")
    return walker


@dataclass
class Profile:
    walker: str
    weights: Dict[str, np.ndarray]  # parameter name -> float32 array (adapted fast weights)
    template: np.ndarray  # float32 [C, 101] normalized personal template (mean of the support cycles)
    valid: np.ndarray  # bool [C]
    meta: Dict[str, Any] = field(default_factory=dict)  # losses, shots, base checkpoint, created, ...
    # float32 [C, 101] normalized, added to the generated cycle (continual personalization); None: none
    residual: Optional[np.ndarray] = None


class ProfileStore:
    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    def folder(self, walker: str) -> Path:
        return self.root / check_walker_name(walker)

    def walkers(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "profile.json").is_file())

    def exists(self, walker: str) -> bool:
        return (self.folder(walker) / "profile.json").is_file()

    def save(self, profile: Profile) -> Path:
        """Commit ``profile`` atomically (see the module docstring); returns the profile.json path."""
        from safetensors.numpy import save_file

        started = time.time()
        folder = self.folder(profile.walker)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in profile.weights.items()}
        for key in (TEMPLATE_KEY, RESIDUAL_KEY):
            if key in tensors:
                raise ProfileError(f"walker {profile.walker!r}: parameter name {key!r} is reserved")
        tensors[TEMPLATE_KEY] = np.ascontiguousarray(profile.template, dtype=np.float32)
        if profile.residual is not None:
            tensors[RESIDUAL_KEY] = np.ascontiguousarray(profile.residual, dtype=np.float32)
        tensors["__valid__"] = np.asarray(profile.valid, dtype=np.float32)
        name = f"weights-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.safetensors"
        wpath = folder / name
        try:
            atomic_write_with(wpath, lambda tmp: save_file(tensors, str(tmp), metadata={"walker": profile.walker}))
        except OSError:
            raise
        except Exception as exc:  # safetensors reports I/O failures (e.g. a full disk) as its own error type
            code = errno.ENOSPC if "No space left" in str(exc) else errno.EIO
            raise OSError(code, f"cannot write {wpath}: {exc}") from exc
        meta = {
            "format": FORMAT, "version": VERSION, "walker": profile.walker, "weights": name,
            "weights_sha256": file_sha256(wpath), "saved": time.strftime("%Y-%m-%dT%H:%M:%S"), **profile.meta,
        }
        try:
            atomic_write_text(folder / "profile.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
        except BaseException:
            wpath.unlink(missing_ok=True)  # not committed: do not leave an orphan behind
            raise
        for old in folder.glob("weights-*.safetensors"):
            if old.name != name:
                old.unlink(missing_ok=True)
        # Temporaries of writers that died (kill -9) before this save began: ours (.<name>.<random>.tmp) and
        # safetensors' own (.tmp<random>, Rust's tempfile naming).
        for tmp in {*folder.glob(".*.tmp"), *folder.glob(".tmp*")}:
            try:
                if tmp.stat().st_mtime < started:
                    tmp.unlink()
            except FileNotFoundError:
                pass
        return folder / "profile.json"

    def load(self, walker: str, attempts: int = 3) -> Profile:
        """The walker's committed profile. A save running at the same time (another process calibrating, a
        continual update) can replace ``profile.json`` and delete the weights it named between our two reads:
        when the weights are missing or mismatched *and* ``profile.json`` changed meanwhile, read again."""
        from safetensors.numpy import load_file

        folder = self.folder(walker)
        jpath = folder / "profile.json"
        for attempt in range(attempts):
            if not jpath.is_file():
                raise ProfileError(f"walker {walker!r} has no profile ({jpath} does not exist); run `metagait-edge calibrate`")
            text = jpath.read_bytes()
            try:
                meta = json.loads(text.decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ProfileError(f"{jpath}: invalid JSON: {exc}") from None
            if meta.get("format") != FORMAT or meta.get("version") != VERSION:
                raise ProfileError(f"{jpath}: not a version-{VERSION} walker profile")
            wpath = folder / str(meta.get("weights", ""))
            problem = None
            if not wpath.is_file():
                problem = f"{jpath}: weights file {wpath.name} is missing"
            elif file_sha256(wpath) != meta.get("weights_sha256"):
                problem = f"{wpath}: content does not match the SHA-256 in {jpath.name}"
            else:
                try:
                    tensors = load_file(str(wpath))
                except FileNotFoundError:
                    problem = f"{jpath}: weights file {wpath.name} is missing"
            if problem is None:
                break
            if attempt + 1 == attempts or not jpath.is_file() or jpath.read_bytes() == text:
                raise ProfileError(problem)  # not a concurrent save: the profile itself is broken
        if TEMPLATE_KEY not in tensors or "__valid__" not in tensors:
            raise ProfileError(f"{wpath}: lacks the personal template")
        template = tensors.pop(TEMPLATE_KEY)
        valid = tensors.pop("__valid__") > 0.5
        residual = tensors.pop(RESIDUAL_KEY, None)
        extra = {k: v for k, v in meta.items() if k not in ("format", "version", "walker", "weights", "weights_sha256")}
        return Profile(walker=walker, weights=tensors, template=template, valid=valid, meta=extra, residual=residual)
