"""The one loader of recognition checkpoints: MetaGait weights that load completely, or an error.

A checkpoint is ``<x>.safetensors`` + ``<x>.json`` (``metagait_edge.checkpoint``) whose config is a
``MetaGaitConfig`` (or a recognition config holding one under ``model``). A state dict saved from a wrapper
that holds MetaGait as ``.model`` has every key prefixed ``model.``; the prefix is stripped. Any weight the
model lacks or has in excess is an error naming the keys: a partial checkpoint must never run on
partly random weights.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Union

WRAPPER_PREFIX = "model."


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


def load_recognition_checkpoint(path: Union[str, "os.PathLike[str]"], map_location: str = "cpu"):
    """MetaGait (eval mode) with every weight of the checkpoint at ``path``; ``model.source`` names the file."""
    from metagait_edge.checkpoint import CheckpointError, load_checkpoint
    from metagait_edge.config import ConfigError, from_dict
    from metagait_edge.models.metagait import MetaGait, MetaGaitConfig

    ck = load_checkpoint(path, map_location=map_location)
    raw = ck.config.get("model", ck.config) if isinstance(ck.config, dict) else ck.config
    try:
        cfg = from_dict(MetaGaitConfig, raw)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{ck.path}: config is not a MetaGait model config: {exc}") from exc
    model = MetaGait(cfg)
    load_complete_state(model, strip_wrapper_prefix(ck.state_dict), str(ck.path))
    model.source = str(ck.path)
    return model.eval()
