"""The one loader of recognition checkpoints: MetaGait weights that load completely, or an error.

A checkpoint is ``<x>.safetensors`` + ``<x>.json`` (``metagait_edge.checkpoint``) whose config is a
``MetaGaitConfig`` (or a recognition config holding one under ``model``). A state dict saved from a wrapper
that holds MetaGait as ``.model`` has every key prefixed ``model.``; the prefix is stripped. Any weight the
model lacks or has in excess is an error naming the keys: a partial checkpoint must never run on
partly random weights.

Identification needs more than weights: the open-set threshold fitted on the checkpoint's validation
identities (``metagait-edge calibrate-threshold``, :mod:`metagait_edge.recognition.calibration`), stored in the
sidecar under ``extra.open_set`` together with the fingerprint of the weights it was fitted for. The loader
attaches it as ``model.open_set`` (None when absent or fitted for other weights, ``model.open_set_problem``
says which); ``for_identification=True`` refuses a checkpoint without a valid one. Evaluation loads without.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping, Optional, Union

WRAPPER_PREFIX = "model."
OPEN_SET_KEY = "open_set"  # the sidecar's extra.<key> holding the calibrated threshold
CALIBRATE_HINT = "metagait-edge calibrate-threshold --checkpoint {path}"


def strip_wrapper_prefix(state: Mapping[str, Any]) -> dict:
    """``state`` without the ``model.`` prefix when every key carries it (a wrapper's state dict)."""
    if state and all(k.startswith(WRAPPER_PREFIX) for k in state):
        return {k[len(WRAPPER_PREFIX):]: v for k, v in state.items()}
    return dict(state)


def _listed(keys: list) -> str:
    return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")


def load_complete_state(model, state: Mapping[str, Any], where: str) -> None:
    """Load ``state`` into ``model``, refusing missing or unexpected keys and wrong shapes by name."""
    from metagait_edge.checkpoint import CheckpointError

    own, given = set(model.state_dict()), set(state)
    missing, unexpected = sorted(own - given), sorted(given - own)
    if missing or unexpected:
        parts = ([f"{len(missing)} weight(s) missing: {_listed(missing)}"] if missing else []) + (
            [f"{len(unexpected)} unexpected weight(s): {_listed(unexpected)}"] if unexpected else [])
        raise CheckpointError(f"{where}: does not fit {type(model).__name__}: {'; '.join(parts)}")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # same names, other shapes
        raise CheckpointError(f"{where}: weights do not fit {type(model).__name__}: {exc}") from exc


def model_fingerprint(model) -> str:
    """SHA-256 of a model's weights (names, dtypes, shapes, values): which model made an embedding."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _open_set(ck, fingerprint: str):
    """(OpenSetThreshold or None, why not) from a checkpoint's sidecar."""
    from metagait_edge.recognition.gallery import GalleryError, OpenSetThreshold

    raw = (ck.extra or {}).get(OPEN_SET_KEY)
    if raw is None:
        return None, f"{ck.path}: no calibrated open-set threshold in its sidecar"
    try:
        record = OpenSetThreshold.from_dict(raw, str(ck.path))
    except GalleryError as exc:
        return None, str(exc)
    if record.model_fingerprint != fingerprint:
        return None, (f"{ck.path}: the open-set threshold in its sidecar was fitted for other weights "
                      f"({record.model_fingerprint[:16]}, these are {fingerprint[:16]})")
    return record, ""


def require_open_set(model):
    """``model.open_set``, or CheckpointError saying why identification cannot run and what to do."""
    from metagait_edge.checkpoint import CheckpointError

    record = getattr(model, "open_set", None)
    if record is None:
        where = getattr(model, "source", "the recognition model")
        problem = getattr(model, "open_set_problem", "") or f"{where}: no calibrated open-set threshold"
        raise CheckpointError(f"{problem}: identification refused (an uncalibrated model cannot tell an enrolled "
                              f"walker from a stranger); fit one with `{CALIBRATE_HINT.format(path=where)}`")
    return record


def load_recognition_checkpoint(path: Union[str, "os.PathLike[str]"], map_location: str = "cpu", *,
                                for_identification: bool = False):
    """MetaGait (eval mode) with every weight of the checkpoint at ``path``.

    Attached: ``model.source`` (the file), ``model.fingerprint`` (:func:`model_fingerprint`),
    ``model.open_set`` (the calibrated threshold or None; ``model.open_set_problem`` says why None) and
    ``model.checkpoint_config`` (the sidecar's config). ``for_identification``: refuse a checkpoint without a
    calibrated threshold for these weights (CheckpointError naming the command that fits one).
    """
    from metagait_edge.checkpoint import CheckpointError, load_checkpoint
    from metagait_edge.config import ConfigError, from_dict
    from metagait_edge.models.metagait import MetaGait, MetaGaitConfig

    ck = load_checkpoint(path, expected_model_class="MetaGait", map_location=map_location)
    raw = ck.config.get("model", ck.config) if isinstance(ck.config, dict) else ck.config
    try:
        cfg = from_dict(MetaGaitConfig, raw)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{ck.path}: config is not a MetaGait model config: {exc}") from exc
    model = MetaGait(cfg)
    load_complete_state(model, strip_wrapper_prefix(ck.state_dict), str(ck.path))
    model.source = str(ck.path)
    model.checkpoint_config = ck.config
    model.fingerprint = model_fingerprint(model)
    model.open_set, model.open_set_problem = _open_set(ck, model.fingerprint)
    if for_identification:
        require_open_set(model)
    return model.eval()


def write_open_set(path: Union[str, "os.PathLike[str]"], record: Optional[Any]) -> None:
    """Store ``record`` (an OpenSetThreshold; None removes it) in the sidecar of the checkpoint at ``path``,
    atomically; the weights and every other sidecar field stay as they are."""
    from metagait_edge.atomic import atomic_write_text
    from metagait_edge.checkpoint import load_checkpoint, sidecar_path

    load_checkpoint(path)  # the pair is consistent (weights hash) before its sidecar is rewritten
    spath = sidecar_path(path)
    meta = json.loads(spath.read_text(encoding="utf-8"))
    extra = dict(meta.get("extra") or {})
    if record is None:
        extra.pop(OPEN_SET_KEY, None)
    else:
        extra[OPEN_SET_KEY] = record.as_dict()
    meta["extra"] = extra
    atomic_write_text(spath, json.dumps(meta, indent=2) + "\n")
