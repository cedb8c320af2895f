"""Parity inputs for the exported graphs: realistic synthetic inputs and the PyTorch reference outputs."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Mapping, Optional

import numpy as np

from metagait_edge.deploy.export import CYCLE_LENGTH, MODEL_KINDS, RECOGNITION_FRAMES, RECOGNITION_OUTPUT, TCN_OUTPUT, tcn_input_channels

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

# fp32 tolerances of ONNX Runtime vs PyTorch eager (different conv algorithms and summation orders).
FP32_RTOL = 1e-4
FP32_ATOL = {"recognition": 1e-4, "tcn": 1e-4}


def example_inputs(kind: str, model: "nn.Module", batch: int = 2, *, seed: int = 0, realistic: bool = True) -> np.ndarray:
    """Inputs for parity checks: ``realistic`` ones look like the runtime's, otherwise uniform noise.

    Recognition: binary-ish silhouettes of a synthetic walker (``synth.body``) when ``realistic``.
    TCN: smooth periodic cycles with a valid-channel mask, laid out like ``personalization.inputs``.
    """
    rng = np.random.default_rng(seed)
    if kind == "recognition":
        cfg = model.config
        shape = (batch, RECOGNITION_FRAMES, cfg.input_height, cfg.input_width)
        if not realistic:
            return rng.random(shape, dtype=np.float32)
        return _walker_silhouettes(shape, rng)
    if kind == "tcn":
        c_in = tcn_input_channels(model)
        if not realistic:
            return rng.standard_normal((batch, c_in, CYCLE_LENGTH)).astype(np.float32)
        return _cycle_inputs(batch, c_in // 3, rng)
    raise ValueError(f"unknown model kind {kind!r}; expected one of {MODEL_KINDS}")


def _walker_silhouettes(shape, rng) -> np.ndarray:
    """A moving two-legged figure: torso ellipse, swinging legs, soft edges (values in 0..1)."""
    b, t, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros(shape, dtype=np.float32)
    for i in range(b):
        phase0, cadence = rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.3)
        cx = w / 2 + rng.uniform(-2, 2)
        for k in range(t):
            ph = phase0 + 2 * np.pi * cadence * k
            torso = ((xx - cx) / (0.14 * w)) ** 2 + ((yy - 0.35 * h) / (0.25 * h)) ** 2 <= 1
            head = ((xx - cx) / (0.08 * w)) ** 2 + ((yy - 0.08 * h) / (0.07 * h)) ** 2 <= 1
            img = (torso | head).astype(np.float32)
            for sign in (1, -1):
                swing = sign * 0.18 * w * np.sin(ph)
                frac = np.clip((yy - 0.55 * h) / (0.45 * h), 0, 1)
                leg = (np.abs(xx - (cx + swing * frac)) <= 0.05 * w + 0.5) & (yy >= 0.55 * h)
                img = np.maximum(img, leg.astype(np.float32))
            out[i, k] = img
    return out


def _cycle_inputs(batch: int, channels: int, rng) -> np.ndarray:
    """``[prev, template, mask]`` stacks of smooth periodic cycles in normalised units."""
    s = np.linspace(0, 2 * np.pi, CYCLE_LENGTH, endpoint=False)
    out = np.zeros((batch, 3 * channels, CYCLE_LENGTH), dtype=np.float32)
    for i in range(batch):
        amp = rng.uniform(0.5, 1.5, (channels, 1))
        phase = rng.uniform(0, 2 * np.pi, (channels, 1))
        template = amp * np.sin(s + phase) + 0.3 * amp * np.sin(2 * s + 2 * phase)
        prev = template * rng.uniform(0.9, 1.1, (channels, 1)) + 0.05 * rng.standard_normal((channels, CYCLE_LENGTH))
        mask = (rng.random((channels, 1)) > 0.1).astype(np.float32) * np.ones((1, CYCLE_LENGTH))
        out[i] = np.concatenate([prev * mask, template * mask, mask], axis=0)
    return out


def torch_reference(kind: str, model: "nn.Module", x: np.ndarray, params: Optional[Mapping[str, Any]] = None) -> np.ndarray:
    """The PyTorch output the ONNX graph must reproduce (``functional_call`` with ``params`` if given)."""
    import torch

    module = copy.deepcopy(model).eval()
    if kind == "recognition":
        module.set_mode("inference")
    with torch.no_grad():
        xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
        if params:
            from torch.func import functional_call

            out = functional_call(module, {k: torch.as_tensor(v) for k, v in params.items()}, (xt,), strict=False)
        else:
            out = module(xt)
    key = RECOGNITION_OUTPUT if kind == "recognition" else TCN_OUTPUT
    return out[key].detach().cpu().numpy()
