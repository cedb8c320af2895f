"""Checkpoints: safetensors weights plus a JSON sidecar that says what they are.

``model.safetensors`` holds only tensors (loaded with ``safetensors``, never unpickled);
``model.json`` beside it holds the model config, the normalisation statistics of the training data, a
fingerprint of that data, the git commit of the code, the creation time, the model class and metrics,
plus the SHA-256 of the weights file so a sidecar can never silently describe other weights. Both are
written atomically, weights first, so a crash leaves either the old pair or the new one.

``load_checkpoint(path, expected_config=...)`` refuses a checkpoint whose config differs from the one
the caller is about to build, naming every differing key.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from metagait_edge.atomic import atomic_write_text, atomic_write_with
from metagait_edge.config import from_dict, to_dict
from metagait_edge.hashing import file_sha256

FORMAT_VERSION = 1
PathLike = Union[str, "os.PathLike[str]"]


class CheckpointError(ValueError):
    """A checkpoint is missing, inconsistent or does not match what the caller expects."""


@dataclass
class Checkpoint:
    path: Path
    state_dict: Dict[str, Tensor]
    config: Dict[str, Any]
    normalization: Dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    git_commit: str = "unknown"
    created: str = ""
    model_class: str = ""
    metrics: Dict[str, Any] = field(default_factory=dict)
    extra: Dict[str, Any] = field(default_factory=dict)


def weights_path(path: PathLike) -> Path:
    """``x`` or ``x.safetensors`` -> ``x.safetensors``."""
    path = Path(path)
    return path if path.suffix == ".safetensors" else path.with_name(path.name + ".safetensors")


def sidecar_path(path: PathLike) -> Path:
    return weights_path(path).with_suffix(".json")


def git_commit(cwd: Optional[PathLike] = None) -> str:
    """The git commit of the source tree (of this package by default), ``"-dirty"`` appended when its tracked
    files differ from that commit, or ``"unknown"``.

    Read once per process and folder: an hour-long training run records the code it started with, not a
    commit made while it ran. Training entry points call it first thing for that reason.
    """
    return _revision(Path(cwd).resolve() if cwd is not None else Path(__file__).resolve().parent)


def short_commit(length: int = 10) -> str:
    """``git_commit()`` shortened for reports, keeping its ``-dirty`` mark."""
    commit = git_commit()
    return commit[:length] + ("-dirty" if commit.endswith("-dirty") else "")


@functools.lru_cache(maxsize=None)
def _revision(cwd: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".").strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if len(commit) != 40:
        return "unknown"
    return commit + ("-dirty" if changed else "")


def _jsonable(value: Any, where: str) -> Any:
    """Configs, arrays and tensors as plain JSON values (arrays become nested lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = to_dict(value)
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(f"{where}: cannot store {type(value).__name__} in a checkpoint sidecar")


def save_checkpoint(
    path: PathLike,
    model: Union[nn.Module, Mapping[str, Tensor]],
    config: Any,
    *,
    normalization: Optional[Mapping[str, Any]] = None,
    data_fingerprint: str = "",
    metrics: Optional[Mapping[str, Any]] = None,
    extra: Optional[Mapping[str, Any]] = None,
    model_class: Optional[str] = None,
) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json``; returns the weights path.

    ``model`` is a module (its ``state_dict`` is saved) or a ready state dict; ``config`` a config
    dataclass or mapping.
    """
    wpath = weights_path(path)
    if isinstance(model, nn.Module):
        state = model.state_dict()
        model_class = model_class or type(model).__name__
    else:
        state = dict(model)
    # safetensors rejects shared or non-contiguous storage; copies are cheap at our model sizes.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    # Everything that can fail on bad input is checked before the weights file is replaced.
    meta = {
        "format_version": FORMAT_VERSION,
        "weights_file": wpath.name,
        "weights_sha256": "",
        "model_class": model_class or "",
        "config": _jsonable(config, "config"),
        "normalization": _jsonable(dict(normalization or {}), "normalization"),
        "data_fingerprint": str(data_fingerprint),
        "git_commit": git_commit(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "metrics": _jsonable(dict(metrics or {}), "metrics"),
        "extra": _jsonable(dict(extra or {}), "extra"),
    }
    atomic_write_with(wpath, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    meta["weights_sha256"] = file_sha256(wpath)
    atomic_write_text(sidecar_path(wpath), json.dumps(meta, indent=2, sort_keys=False, allow_nan=True) + "\n")
    return wpath


def config_differences(stored: Any, expected: Any, where: str = "config") -> List[str]:
    """Dotted keys where two (JSON-normalised) configs differ, with both values."""
    if isinstance(stored, dict) and isinstance(expected, dict):
        diffs: List[str] = []
        for key in sorted(set(stored) | set(expected)):
            if key not in stored:
                diffs.append(f"{where}.{key}: missing in checkpoint (expected {expected[key]!r})")
            elif key not in expected:
                diffs.append(f"{where}.{key}: {stored[key]!r} in checkpoint, not in expected config")
            else:
                diffs.extend(config_differences(stored[key], expected[key], f"{where}.{key}"))
        return diffs
    if stored != expected:
        return [f"{where}: checkpoint has {stored!r}, expected {expected!r}"]
    return []


def _stored_as(expected_config: Any, stored: Any, wpath: Path) -> Any:
    """The stored config read as the expected config's dataclass: a setting added after the checkpoint was
    written takes its default (defaults of new settings keep the behaviour that existed before them)."""
    if not (dataclasses.is_dataclass(expected_config) and isinstance(stored, dict)):
        return stored
    try:
        return _jsonable(from_dict(type(expected_config), stored), "config")
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{wpath}: stored config does not fit {type(expected_config).__name__}: {exc}") from None


def load_checkpoint(
    path: PathLike,
    expected_config: Any = None,
    *,
    expected_model_class: Optional[str] = None,
    map_location: Union[str, torch.device] = "cpu",
    verify_hash: bool = True,
) -> Checkpoint:
    """Read a checkpoint pair; with ``expected_config`` refuse one trained with a different config."""
    wpath = weights_path(path)
    spath = sidecar_path(wpath)
    if not wpath.is_file():
        raise CheckpointError(f"checkpoint weights not found: {wpath}")
    if not spath.is_file():
        raise CheckpointError(f"checkpoint sidecar not found: {spath} (weights {wpath} have no metadata)")
    try:
        meta = json.loads(spath.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{spath}: invalid JSON: {exc}") from exc
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{spath}: unsupported format_version {meta.get('format_version')!r}")
    if verify_hash and meta.get("weights_sha256") != file_sha256(wpath):
        raise CheckpointError(f"{wpath}: weights do not match the SHA-256 recorded in {spath.name}")
    stored_class = meta.get("model_class") or ""
    if expected_model_class is not None and stored_class and stored_class != expected_model_class:
        raise CheckpointError(
            f"{wpath}: checkpoint holds a {meta.get('model_class')!r}, expected {expected_model_class!r}"
        )
    if expected_config is not None:
        diffs = config_differences(_stored_as(expected_config, meta.get("config"), wpath),
                                   _jsonable(expected_config, "config"))
        if diffs:
            raise CheckpointError(f"{wpath}: config does not match the expected one: " + "; ".join(diffs))
    device = str(map_location) if isinstance(map_location, torch.device) else map_location
    state = load_file(str(wpath), device=device)
    return Checkpoint(
        path=wpath,
        state_dict=state,
        config=meta.get("config") or {},
        normalization=meta.get("normalization") or {},
        data_fingerprint=meta.get("data_fingerprint", ""),
        git_commit=meta.get("git_commit", "unknown"),
        created=meta.get("created", ""),
        model_class=meta.get("model_class", ""),
        metrics=meta.get("metrics") or {},
        extra=meta.get("extra") or {},
    )


def load_into(model: nn.Module, path: PathLike, expected_config: Any = None) -> Checkpoint:
    """Load every weight of a checkpoint into ``model`` (its class name and, if given, config must match)."""
    return load_state(model, load_checkpoint(path, expected_config, expected_model_class=type(model).__name__))


def load_state(model: nn.Module, ckpt: Checkpoint) -> Checkpoint:
    """Every weight of a loaded checkpoint into ``model``, strictly (a model built from ``ckpt.config``)."""
    try:
        model.load_state_dict(ckpt.state_dict)
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt.path}: weights do not fit {type(model).__name__}: {exc}") from exc
    return ckpt
