"""A small causal network: the last ``window`` IMU samples -> phase per leg on the circle + mode logits.

Outputs per window: ``(cos, sin)`` of the right leg's phase, the same for the left leg, and one logit per
locomotion mode (``dataset.MODES``). Phase = ``atan2(sin, cos)`` in percent; the vector's length is a
confidence (near 0 where the network cannot tell the phase). Every input sample of a window precedes or is
the current one, so running it per sample is causal. Weights are safetensors with a JSON sidecar
(``metagait_edge.checkpoint``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from metagait_edge.phase.dataset import MODES, N_INPUTS


@dataclass
class PhaseNetConfig:
    window: int = 64
    in_channels: int = N_INPUTS
    mix_channels: int = 24
    width: int = 32
    hidden: int = 64
    n_modes: int = len(MODES)
    n_conv: int = 3  # stride-2 convolutions after the 1x1 mix: kernel 5 for the first two, 3 after
    # False (the first shipped nets): the convolutions start at the window's oldest sample, so a stride that
    # does not divide evenly leaves the newest samples unseen (the 64-sample net never sees its last 3).
    # True: the network reads the newest ``used_length`` samples, every one of which reaches the output.
    right_aligned: bool = False


def conv_kernels(n_conv: int) -> list[int]:
    return [5 if i < 2 else 3 for i in range(n_conv)]


def used_length(config: PhaseNetConfig) -> int:
    """Samples of the window the network reads: all of it, or (right-aligned) the largest length <= window
    at which every stride-2 convolution consumes its whole input, newest sample included."""
    if not config.right_aligned:
        return config.window
    for n in range(config.window, 0, -1):
        length, ok = n, True
        for k in conv_kernels(config.n_conv):
            if length < k or (length - k) % 2:
                ok = False
                break
            length = (length - k) // 2 + 1
        if ok:
            return n
    raise ValueError(f"window {config.window} is too short for {config.n_conv} convolutions")


class PhaseNet(nn.Module):
    def __init__(self, config: PhaseNetConfig = PhaseNetConfig()):
        super().__init__()
        self.config = config
        c = config
        layers: list[nn.Module] = [nn.Conv1d(c.in_channels, c.mix_channels, 1), nn.ReLU()]
        for i, k in enumerate(conv_kernels(c.n_conv)):
            layers += [nn.Conv1d(c.mix_channels if i == 0 else c.width, c.width, k, stride=2), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.used = used_length(c)
        with torch.no_grad():
            n = self.features(torch.zeros(1, c.in_channels, self.used)).numel()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(n, c.hidden), nn.ReLU(), nn.Linear(c.hidden, 4 + c.n_modes))
        # Trained on windows mirrored left <-> right (``train.leg_swap_prob`` > 0; ``load_phase_net`` reads it from
        # the sidecar): its outputs are then averaged with those for the mirrored window (``mirror_average``).
        self.mirror_trained = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, window, C] (time last row = now) -> [B, 4 + n_modes]."""
        return self.head(self.features(x[:, x.shape[1] - self.used:].transpose(1, 2)))


def decode(out: np.ndarray) -> dict:
    """Network outputs [N, 4 + M] -> phase % [N, 2], phase confidence [N, 2], mode probabilities [N, M]."""
    out = np.asarray(out, dtype=np.float64)
    cs = out[:, :4].reshape(-1, 2, 2)
    phase = np.mod(np.degrees(np.arctan2(cs[..., 1], cs[..., 0])) / 3.6, 100.0)
    conf = np.clip(np.hypot(cs[..., 0], cs[..., 1]), 0.0, 1.0)
    logits = out[:, 4:]
    p = np.exp(logits - logits.max(1, keepdims=True))
    return {"phase": phase, "confidence": conf, "mode_prob": p / p.sum(1, keepdims=True)}


def phase_targets(phase_pct: np.ndarray) -> np.ndarray:
    """(cos, sin) of phases in percent; NaN stays NaN."""
    a = 2 * math.pi * np.asarray(phase_pct) / 100.0
    return np.stack([np.cos(a), np.sin(a)], axis=-1)


def unmirrored_order(n_outputs: int) -> list[int]:
    """Column order that puts the outputs for a mirrored window back in the original legs' order: the legs'
    (cos, sin) swapped; the mode logits do not depend on the side."""
    return [2, 3, 0, 1] + list(range(4, n_outputs))


def unmirror_outputs(out: np.ndarray) -> np.ndarray:
    """Outputs for a mirrored window [..., 4 + M] -> the same in the original legs' order."""
    return out[..., unmirrored_order(out.shape[-1])]


def mirror_average(out: np.ndarray, mirrored_out: np.ndarray) -> np.ndarray:
    """The mean of the outputs for a window and for its mirror image (legs swapped back): a two-member ensemble
    for one network trained with leg swap. The legs' (cos, sin) vectors average on the circle, so where the two
    passes disagree the vector shortens and the confidence (its length) drops; the mode logits average too.
    Chosen on every fold's validation walkers (training/configs/phase.yaml)."""
    return 0.5 * (out + unmirror_outputs(mirrored_out))


def uses_mirror(model: PhaseNet, mirror: bool | None) -> bool:
    """``mirror`` None: average with the mirrored window where the weights were trained mirrored."""
    return model.mirror_trained if mirror is None else bool(mirror)


def members(model: PhaseNet | Sequence[PhaseNet]) -> list[PhaseNet]:
    """One net or an ensemble (the nets of one fold trained with other seeds, ``load_phase_ensemble``) as a list."""
    return [model] if isinstance(model, PhaseNet) else list(model)


@torch.no_grad()
def predict_recording(model: PhaseNet | Sequence[PhaseNet], x: np.ndarray, batch: int = 512,
                      mirror: bool | None = None) -> np.ndarray:
    """Causal outputs at every row of one recording's features ``x`` [T, C] -> [T, 4 + M]; ``mirror``: see
    ``uses_mirror``. An ensemble's outputs are the mean of its members' (each mirror-averaged as it was trained).
    ``batch`` windows at a time: 512 (9 MB of windows) ran a 3000-row recording 4.5x faster than 4096 (80 MB, a
    fresh allocation and its page faults every batch) on the 2-vCPU VM."""
    from metagait_edge.phase.dataset import mirror_features, windows

    nets = members(model)
    if len(nets) > 1:
        return np.mean([predict_recording(m, x, batch, mirror) for m in nets], axis=0)
    model = nets[0].eval()
    w = model.config.window
    if uses_mirror(model, mirror):
        return mirror_average(predict_recording(model, x, batch, mirror=False),
                              predict_recording(model, mirror_features(x), batch, mirror=False))
    outs = []
    for a in range(0, len(x), batch):
        ends = np.arange(a, min(a + batch, len(x)))
        outs.append(model(torch.from_numpy(windows(x, ends, w))).numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 4 + model.config.n_modes), np.float32)


class NumpyPhaseNet:
    """``PhaseNet``'s forward pass for one window in numpy (float32): each convolution is one matrix product
    over strided views, without torch's per-call overhead (about 10x faster per sample on one core)."""

    def __init__(self, model: PhaseNet):
        self.config = model.config
        self.used = model.used
        convs = [m for m in model.features if isinstance(m, nn.Conv1d)]
        lins = [m for m in model.head if isinstance(m, nn.Linear)]
        # Conv1d weight [out, in, k] -> [k * in, out] matching windows laid out as [time, k, in].
        self.convs = [(c.weight.detach().numpy().transpose(2, 1, 0).reshape(-1, c.out_channels).copy(),
                       c.bias.detach().numpy().copy(), c.kernel_size[0], c.stride[0]) for c in convs]
        # Flatten of [C, L] is channel-major; our activations are [L, C]: permute the first linear layer.
        w0 = lins[0].weight.detach().numpy()
        c_last = convs[-1].out_channels
        length = w0.shape[1] // c_last
        w0 = w0.reshape(-1, c_last, length).transpose(0, 2, 1).reshape(w0.shape[0], -1)
        self.lins = [(w0.T.copy(), lins[0].bias.detach().numpy().copy())] + [
            (m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in lins[1:]]

    def __call__(self, window: np.ndarray) -> np.ndarray:
        """window [T, C] float32 -> outputs [4 + M]."""
        h = np.ascontiguousarray(window[len(window) - self.used:], dtype=np.float32)
        for w, b, k, stride in self.convs:
            n_out = (len(h) - k) // stride + 1
            v = np.lib.stride_tricks.as_strided(
                h, (n_out, k * h.shape[1]), (h.strides[0] * stride, h.strides[1]), writeable=False)
            h = np.maximum(v @ w + b, 0.0)
        h = h.reshape(-1)
        for i, (w, b) in enumerate(self.lins):
            h = h @ w + b
            if i < len(self.lins) - 1:
                h = np.maximum(h, 0.0)
        return h


class CachedPhaseNet:
    """A right-aligned ``PhaseNet`` (or an ensemble of them) one sample at a time: each layer computes only its
    output for the newest sample and keeps a short history of its outputs. Right-aligned, a stride-2 layer's output
    at the newest sample depends only on its input at that sample and every other one before it (dilation doubling
    per layer), never on where the window starts, so the cached outputs equal the full forward pass's (same weights,
    float32): per sample 1 + n_conv small matrix products instead of the whole window's convolutions.

    An ensemble's members share every call: each layer's weights are stacked [members, in, out] and one compiled
    call (``phase.kernel.cached_step``) computes every member for every stream (no zero blocks: at the IMU's pace
    the weights are read from a cold cache every sample, so their size is most of the cost). Each layer's input
    history lives in a doubled ring (each row written twice), so the rows a layer reads are contiguous. The first
    sample repeats back in time, as ``windows`` pads in training."""

    def __init__(self, model: PhaseNet | Sequence[PhaseNet], streams: int = 1):
        nets = members(model)
        if not all(m.config.right_aligned for m in nets):
            raise ValueError("CachedPhaseNet needs a right-aligned PhaseNet (NumpyPhaseNet runs the others)")
        if any(m.config != nets[0].config for m in nets):
            raise ValueError("the members of an ensemble must share one architecture")
        numpy_nets = [NumpyPhaseNet(m) for m in nets]
        self.n_members = len(nets)  # outputs [streams, members x (4 + M)]: each member's side by side
        self.streams = int(streams)  # independent inputs run side by side (the window and its mirror image)
        stack = lambda arrays: np.ascontiguousarray(np.stack(arrays))  # noqa: E731
        self.layers, d = [], 1
        for j, (_, _, k, stride) in enumerate(numpy_nets[0].convs):
            self.layers.append((stack([n.convs[j][0] for n in numpy_nets]),
                                stack([n.convs[j][1][None] for n in numpy_nets]), k, d))
            d *= stride
        self.lins = [(stack([n.lins[m][0] for n in numpy_nets]), stack([n.lins[m][1][None] for n in numpy_nets]))
                     for m in range(len(numpy_nets[0].lins))]
        self.head_len = self.lins[0][0].shape[1] // self.layers[-1][0].shape[2]
        spans = [(k - 1) * dil + 1 for _, _, k, dil in self.layers] + [(self.head_len - 1) * d + 1]
        widths = [nets[0].config.in_channels] + [w.shape[2] for w, _, _, _ in self.layers]
        reads = [(k, dil) for _, _, k, dil in self.layers] + [(self.head_len, d)]
        # ring rows [members, streams, channels]; the network's input is shared by the members (one row per stream)
        self.rings = [(np.zeros((2 * n, 1 if j == 0 else self.n_members, self.streams, c), np.float32), n, k, dil)
                      for j, (n, c, (k, dil)) in enumerate(zip(spans, widths, reads))]
        def outs(ws):  # each layer's output buffer [members, streams, out], written in place by the kernel
            return tuple(np.zeros((self.n_members, self.streams, w.shape[2]), np.float32) for w in ws)

        # the compiled step's arguments (phase.kernel.cached_step): tuples of same-typed arrays
        self._args = (tuple(r for r, _, _, _ in self.rings),
                      *(np.array(v, np.int64) for v in zip(*[(n, k, dil) for _, n, k, dil in self.rings])),
                      tuple(w for w, _, _, _ in self.layers), tuple(b for _, b, _, _ in self.layers),
                      outs([w for w, _, _, _ in self.layers]),
                      tuple(w for w, _ in self.lins), tuple(b for _, b in self.lins), outs([w for w, _ in self.lins]),
                      np.zeros(max(k * c for (_, _, k, _), c in zip(self.rings, widths)), np.float32))
        self._in = np.zeros((1, self.streams, widths[0]), np.float32)
        self._out = np.zeros((self.streams, self.n_members * self.lins[-1][0].shape[2]), np.float32)
        from metagait_edge.phase.kernel import cached_step, estimate

        self._step, self._estimate = cached_step, estimate
        self._t = 0

    def reset(self) -> None:
        self._t = 0

    def estimate(self, row: np.ndarray, mirror_src: np.ndarray, mirror_sign: np.ndarray, order: np.ndarray,
                 result: np.ndarray) -> None:
        """One feature row [C] -> ``result`` decoded (``phase.kernel.estimate``: with two streams the second is the
        row's mirror image), in one compiled call."""
        row = np.ascontiguousarray(row, dtype=np.float32)
        if row.shape != self._in.shape[2:]:  # the compiled step does not check its indices
            raise ValueError(f"a feature row must have shape {self._in.shape[2:]}, got {row.shape}")
        self._estimate(row, mirror_src, mirror_sign, order, self._in, *self._args, self._t, self._out, result)
        self._t += 1

    def push(self, rows: np.ndarray) -> np.ndarray:
        """The newest feature row of each stream [streams, C] -> the outputs [streams, members x (4 + M)] for the
        windows ending at them (one stream: a row [C] -> [members x (4 + M)])."""
        self._in[0] = np.asarray(rows, dtype=np.float32).reshape(self.streams, -1)
        self._step(self._in, *self._args, self._t, self._out)
        self._t += 1
        return self._out[0].copy() if np.ndim(rows) == 1 else self._out.copy()


class StreamingPhaseEstimator:
    """Per-sample use: ``push(features_row) -> dict`` with phase, confidence and mode for the newest sample
    (numpy, then Python floats; the same outputs as ``predict_recording`` on the same window, mirror average and
    ensemble mean included: ``mirror`` as in ``uses_mirror``). A right-aligned network (or ensemble) runs cached
    per layer (``CachedPhaseNet``: the members side by side, the window and its mirror image as two streams, all in
    one set of matrix products); the first shipped layout runs its whole window each sample (``NumpyPhaseNet``)
    from a doubled ring (each row written twice), so every window is a contiguous view: a sample costs no window
    copy."""

    def __init__(self, model: PhaseNet | Sequence[PhaseNet], mirror: bool | None = None):
        from metagait_edge.phase.dataset import mirror_map

        self.models = [m.eval() for m in members(model)]
        self.model = self.models[0]
        choices = {uses_mirror(m, mirror) for m in self.models}
        if len(choices) > 1:
            raise ValueError("the members of an ensemble disagree on the mirror average (trained with and without "
                             "leg swap)")
        self.mirror = choices.pop()
        streams = 2 if self.mirror else 1
        self._src, self._sign = mirror_map()
        self._n_out = 4 + self.model.config.n_modes
        self._order = np.array(unmirrored_order(self._n_out), np.int64)
        self._result = np.zeros(self._n_out, np.float64)  # decoded: phase %, confidence per leg; mode probabilities
        self._rows = np.zeros((streams, self.model.config.in_channels), np.float32)  # [the row, its mirror image]
        self.cached = CachedPhaseNet(self.models, streams) if self.model.config.right_aligned else None
        # the whole-window pass, only for the first layout (the cached net holds its own copy of the weights)
        self.nets = [] if self.cached is not None else [NumpyPhaseNet(m) for m in self.models]
        from metagait_edge.phase.kernel import combine_decode  # numba: imported when an estimator is built

        self._combine_decode = combine_decode  # the first layout's mean and decoding (the cached net's own call)
        self.window = self.model.config.window
        self._ring = np.zeros((streams, 2 * self.window, self.model.config.in_channels), dtype=np.float32)
        self._i = 0  # where the next row goes (and again at + window)
        self._n = 0
        self.push(np.zeros(self.model.config.in_channels, np.float32))  # compiles (or loads) the compiled path now,
        self.reset()  # never on the first real sample

    def reset(self) -> None:
        self._n = self._i = 0
        if self.cached is not None:
            self.cached.reset()

    def push(self, row: np.ndarray) -> dict:
        result = self._result
        if self.cached is not None:  # one compiled call: mirror, network, mean, decode (phase.kernel.estimate)
            self.cached.estimate(row, self._src, self._sign, self._order, result)
        else:
            rows = self._rows
            rows[0] = row
            if self.mirror:
                np.multiply(rows[0, self._src], self._sign, out=rows[1])
            w, i = self.window, self._i
            if self._n == 0:
                self._ring[:] = rows[:, None]  # the first sample repeats back in time, as in training
            else:
                self._ring[:, i] = self._ring[:, i + w] = rows
            self._n += 1
            self._i = (i + 1) % w
            # the last w rows, oldest first; the members' outputs side by side, as the cached net gives them
            out = np.stack([np.concatenate([net(ring[i + 1:i + 1 + w]) for net in self.nets]) for ring in self._ring])
            self._combine_decode(out, len(self.models), self._order, result)
        v = result.tolist()  # Python floats from here on: cheaper than numpy on 2 + 2 + M numbers
        return {"phase": (v[0], v[1]), "confidence": (v[2], v[3]), "mode_prob": tuple(v[4:])}


RESOURCE_DIR = Path(__file__).resolve().parent.parent / "resources" / "phase"


def load_phase_net(path: str | Path) -> PhaseNet:
    """A ``PhaseNet`` of the architecture its sidecar names (typed: an unknown key is an error, a missing one
    takes its default, i.e. the first shipped architecture), weights loaded strictly with their checksum."""
    from metagait_edge.checkpoint import CheckpointError, load_checkpoint, load_state
    from metagait_edge.config import ConfigError, from_dict

    ckpt = load_checkpoint(path, expected_model_class="PhaseNet")  # the sidecar read once, checksum verified
    try:
        config = from_dict(PhaseNetConfig, ckpt.config)
    except (TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{ckpt.path}: no PhaseNet config: {exc}") from None
    model = PhaseNet(config)
    load_state(model, ckpt)
    model.mirror_trained = float((ckpt.extra or {}).get("train_config", {}).get("leg_swap_prob", 0.0)) > 0.0
    return model.eval()


def precompile() -> None:
    """Compile (or load) the per-sample path for the shipped weights' layout now (``phase.kernel``, cached on
    disk): ``make venv`` runs it so that a first ``metagait-edge run`` or ROS 2 node does not spend its start-up
    compiling (about 8 s on the 2-vCPU VM, longer on a Jetson)."""
    StreamingPhaseEstimator(load_phase_ensemble(RESOURCE_DIR / "all"))


def member_paths(path: str | Path) -> list[Path]:
    """The checkpoints of one ensemble: ``path`` itself (e.g. ``resources/phase/fold0``) and the nets trained for it
    with other seeds beside it (``fold0.seed1``, ``fold0.seed2``, ...: ``training/train_phase.py --seed N``), in seed
    order."""
    import re

    path = Path(path)
    found = []
    for sidecar in path.parent.glob(f"{path.name}.seed*.json"):
        m = re.fullmatch(re.escape(path.name) + r"\.seed(\d+)\.json", sidecar.name)
        if m:
            found.append((int(m.group(1)), sidecar.with_suffix("")))
    return [path] + [p for _, p in sorted(found)]


def load_phase_ensemble(path: str | Path) -> list[PhaseNet]:
    """Every member of the ensemble at ``path`` (``member_paths``), each loaded strictly (``load_phase_net``); they
    must share one architecture and one training with or without leg swap (the mirror average)."""
    from metagait_edge.checkpoint import CheckpointError

    paths = member_paths(path)
    nets = [load_phase_net(p) for p in paths]
    for p, m in zip(paths[1:], nets[1:]):
        if m.config != nets[0].config or m.mirror_trained != nets[0].mirror_trained:
            raise CheckpointError(f"{p}: an ensemble member of {path} with another architecture or leg-swap training "
                                  f"({m.config}, mirror {m.mirror_trained}) than {nets[0].config}, mirror "
                                  f"{nets[0].mirror_trained}")
    return nets
