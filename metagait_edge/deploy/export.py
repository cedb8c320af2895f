"""ONNX export of the two deployed networks, with the checks deployment relies on.

* **Recognition** (``MetaGait`` in ``"inference"`` mode): input ``silhouettes [batch, frames, H, W]``
  float32 in 0..1, output ``embeddings [batch, parts, dim]``. The batch axis is dynamic; the frame axis
  is dynamic too (traced at ``RECOGNITION_FRAMES`` = 30, the runtime's window) and valid for any
  ``frames >= 3`` (LTA's temporal stride); TensorRT profiles use 3..90 frames, 30 optimal.
* **Personalization** (``CycleModel`` or a bare ``TCN``): input ``cycles [batch, 3C, 101]``, output
  ``output [batch, C, 101]``. Batch is dynamic, the 101 samples of a time-normalised cycle are fixed.

The personalization graph must be *refittable*: after the on-device 5-shot calibration the same graph
runs with adapted weights, and TensorRT's refitter and ONNX Runtime's initializer override find those
weights by name. So the export

* folds weight norm (``models.tcn.load_folded_params``): initializers carry the stable state-dict names
  (``tcn.blocks.0.conv1.conv.weight``), never ``parametrizations...original0/1``;
* stores every weight in the shape its consuming operator reads (FiLM vectors as ``[1, C, 1]``), so
  constant folding has nothing to fold into anonymous ``onnx::Mul_123`` constants;
* traces with distinct random values in every weight and writes the real values afterwards: the exporter
  merges initializers with equal values (e.g. freshly initialised FiLM scales, all ones), which would give
  the base and the adapted model different graphs. By construction the graph is then independent of the
  weight values, which :func:`graph_fingerprint` lets tests and deployments verify.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Union

import numpy as np

from metagait_edge.atomic import atomic_write_bytes
from metagait_edge.deploy.onnx_graph import (
    META_AXES, META_KIND, META_REFITTABLE, MIN_OPSET, ExportError, PathLike, check_onnx,
)

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import torch
    from torch import nn

DEFAULT_OPSET = 17
RECOGNITION_INPUT = "silhouettes"
RECOGNITION_OUTPUT = "embeddings"
RECOGNITION_FRAMES = 30
RECOGNITION_MIN_FRAMES = 3
TCN_INPUT = "cycles"
TCN_OUTPUT = "output"
CYCLE_LENGTH = 101
MODEL_KINDS = ("recognition", "tcn")

@dataclass
class ExportReport:
    path: Path
    kind: str
    opset: int
    inputs: Dict[str, List[Union[int, str]]]
    outputs: Dict[str, List[Union[int, str]]]
    ops: List[str]
    refittable: List[str]
    sha256: str
    nodes: int
    initializers: int
    notes: List[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.path}: {self.kind} model, opset {self.opset}, {self.nodes} nodes, {self.initializers} "
            f"initializers ({len(self.refittable)} refittable), inputs {self.inputs}, outputs {self.outputs}, "
            f"sha256 {self.sha256[:16]}"
        )


def edge_metagait_config(**overrides):
    """The edge-size MetaGait: 32x22 silhouettes (half of 64x44 per side), channels 8/16/32, 16 strips.

    About 1/4 of the ``cpu`` preset's input pixels and half its widths; recognises a 30-frame window at
    well over 4 Hz on one CPU core (``benchmarks/bench_inference.py``, docs/benchmarks/inference.md).
    """
    from metagait_edge.models.metagait import MetaGaitConfig

    base = dict(channels=(8, 16, 32), input_height=32, input_width=22, local_parts=8, strip_bins=(16,),
                mta_descriptor_channels=8, mta_gate_hidden=8, mhn_hidden=16)
    base.update(overrides)
    return MetaGaitConfig(**base)


# ----------------------------------------------------------------------------------------------------
# Deployable modules


def _film_for_export(film: "nn.Module") -> "nn.Module":
    import torch
    from torch import nn

    class _DeployFiLM(nn.Module):
        """FiLM with its vectors stored as ``[1, C, 1]``: the Mul/Add read the initializers directly."""

        def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
            super().__init__()
            self.scale = nn.Parameter(scale.detach().reshape(1, -1, 1).clone())
            self.shift = nn.Parameter(shift.detach().reshape(1, -1, 1).clone())

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            return h * self.scale + self.shift

    return _DeployFiLM(film.scale, film.shift)


def deploy_tcn_module(model: "nn.Module", params: Optional[Mapping[str, Any]] = None) -> "nn.Module":
    """An eval-mode, weight-norm-folded copy of a ``CycleModel`` / ``TCN`` in its ONNX layout.

    ``params`` (e.g. MAML fast weights, parametrised or folded names; a subset is merged over the
    model's own) replaces the model's weights. State-dict names are the stable names of
    ``fold_weight_norm_params``; only FiLM vectors change shape (``[C]`` -> ``[1, C, 1]``).
    """
    import torch

    from metagait_edge.models.tcn import FiLM, fold_weight_norm_params, load_folded_params

    own = {n: p.detach() for n, p in model.named_parameters()}
    if params:
        given = {n: torch.as_tensor(np.asarray(v.detach().cpu() if hasattr(v, "detach") else v)) for n, v in params.items()}
        folded_own = fold_weight_norm_params(own)
        folded_given = fold_weight_norm_params(given)
        unknown = sorted(set(folded_given) - set(folded_own))
        if unknown:
            raise KeyError(f"weights {unknown} are not parameters of {type(model).__name__}")
        own = {**folded_own, **folded_given}
    folded = load_folded_params(model, own).eval()
    for name, module in list(folded.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, FiLM):
                setattr(module, child_name, _film_for_export(child))
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded


# ----------------------------------------------------------------------------------------------------
# Export


def _check_opset(opset: int) -> None:
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old: TensorRT 10 deployment needs opset >= {MIN_OPSET}")


def _torch_export(module, args, path: Path, opset: int, input_names, output_names, dynamic_axes) -> bytes:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.export.tmp")
    with warnings.catch_warnings():
        # The TorchScript exporter warns that it is deprecated and about shape-dependent Python values
        # (circular padding): the graph is verified afterwards, the warnings only add noise.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(tmp), dynamo=False, opset_version=opset, do_constant_folding=True,
            keep_initializers_as_inputs=False, input_names=list(input_names), output_names=list(output_names),
            dynamic_axes=dynamic_axes,
        )
    try:
        data = tmp.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
    return data


def _set_metadata(model: "onnx.ModelProto", values: Mapping[str, str]) -> None:
    keep = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _io_shapes(values) -> Dict[str, List[Union[int, str]]]:
    out = {}
    for v in values:
        dims = v.type.tensor_type.shape.dim
        out[v.name] = [d.dim_param if d.dim_param else int(d.dim_value) for d in dims]
    return out


def _finish(model: "onnx.ModelProto", path: Path, kind: str, opset: int, refittable: List[str], notes) -> ExportReport:
    ops = check_onnx(model, where=str(path))
    data = model.SerializeToString()
    atomic_write_bytes(path, data)
    return ExportReport(
        path=path, kind=kind, opset=opset, inputs=_io_shapes(model.graph.input),
        outputs=_io_shapes(model.graph.output), ops=ops, refittable=refittable,
        sha256=hashlib.sha256(data).hexdigest(), nodes=len(model.graph.node),
        initializers=len(model.graph.initializer), notes=list(notes),
    )


def export_tcn(
    model: "nn.Module",
    path: PathLike,
    params: Optional[Mapping[str, Any]] = None,
    *,
    opset: int = DEFAULT_OPSET,
    length: int = CYCLE_LENGTH,
) -> ExportReport:
    """Export a ``CycleModel`` (or ``TCN``) with weight norm folded and refittable named initializers.

    ``params`` are the weights to export (default: the model's own), e.g. fast weights after calibration.
    The graph is the same for any weights; only initializer values differ.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    _check_opset(opset)
    path = Path(path)
    module = deploy_tcn_module(model, params)
    real = {n: p.detach().cpu().numpy().astype(np.float32) for n, p in module.named_parameters()}
    in_channels = tcn_input_channels(model)
    # Distinct random values while tracing, so the exporter cannot merge equal-valued initializers.
    gen = torch.Generator().manual_seed(12345)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=gen) * 0.2 + 0.9)
    example = torch.randn(2, in_channels, length, generator=gen)
    data = _torch_export(
        module, (example,), path, opset, [TCN_INPUT], [TCN_OUTPUT],
        {TCN_INPUT: {0: "batch"}, TCN_OUTPUT: {0: "batch"}},
    )
    proto = onnx.load_from_string(data)
    inits = {i.name: i for i in proto.graph.initializer}
    missing = [n for n in real if n not in inits]
    if missing:
        raise ExportError(
            f"{path}: the exporter renamed or folded weights {missing}; they would not be refittable"
        )
    for name, value in real.items():
        init = inits[name]
        if tuple(init.dims) != value.shape:
            raise ExportError(f"{path}: initializer {name} has shape {tuple(init.dims)}, weight {value.shape}")
        init.CopyFrom(numpy_helper.from_array(value, name=name))
    # Shape inference loses the fixed cycle length through the padding's Shape/Slice ops; state it.
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    if len(out_dims) == 3:
        out_dims[2].Clear()
        out_dims[2].dim_value = length
    _set_metadata(proto, {
        META_KIND: "tcn",
        META_REFITTABLE: json.dumps(sorted(real)),
        META_AXES: json.dumps({TCN_INPUT: ["batch", in_channels, length]}),
    })
    return _finish(proto, path, "tcn", opset, sorted(real), [f"cycle length fixed at {length} samples"])


def tcn_input_channels(model: "nn.Module") -> int:
    cfg = getattr(model, "config", None)
    if hasattr(cfg, "channels") and hasattr(model, "tcn"):  # CycleModel: [prev, template, mask] stacks
        return 3 * int(cfg.channels)
    if hasattr(cfg, "in_channels"):
        if getattr(cfg, "mask_input", False):
            raise ExportError("export_tcn: a TCN with mask_input=True takes a second input; export a CycleModel")
        return int(cfg.in_channels)
    raise ExportError(f"export_tcn: cannot tell the input channels of {type(model).__name__}")


def export_recognition(
    model: "nn.Module",
    path: PathLike,
    *,
    opset: int = DEFAULT_OPSET,
    frames: int = RECOGNITION_FRAMES,
    dynamic_frames: bool = True,
) -> ExportReport:
    """Export MetaGait's inference graph (``silhouettes -> embeddings``), dynamic batch (and frames)."""
    import onnx
    import torch

    _check_opset(opset)
    if frames < RECOGNITION_MIN_FRAMES:
        raise ValueError(f"frames must be >= {RECOGNITION_MIN_FRAMES} (LTA's temporal stride), got {frames}")
    path = Path(path)
    module = copy.deepcopy(model).eval()
    module.set_mode("inference")
    cfg = module.config
    gen = torch.Generator().manual_seed(0)
    example = torch.rand(2, frames, cfg.input_height, cfg.input_width, generator=gen)
    axes = {0: "batch", 1: "frames"} if dynamic_frames else {0: "batch"}
    data = _torch_export(
        module, (example,), path, opset, [RECOGNITION_INPUT], [RECOGNITION_OUTPUT],
        {RECOGNITION_INPUT: axes, RECOGNITION_OUTPUT: {0: "batch"}},
    )
    proto = onnx.load_from_string(data)
    names = {i.name for i in proto.graph.initializer}
    # Recognition weights are not refitted on the device; record which ones kept their names anyway.
    refittable = sorted(n for n, _ in module.named_parameters() if n in names)
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    if len(out_dims) == 3:  # [batch, parts, dim]: parts lost its value through Einsum shape inference
        out_dims[1].Clear()
        out_dims[1].dim_value = cfg.num_parts
    frames_axis = "frames" if dynamic_frames else frames
    _set_metadata(proto, {
        META_KIND: "recognition",
        META_REFITTABLE: json.dumps(refittable),
        META_AXES: json.dumps({RECOGNITION_INPUT: ["batch", frames_axis, cfg.input_height, cfg.input_width]}),
    })
    notes = [f"frames {'dynamic (>= 3, traced at %d)' % frames if dynamic_frames else 'fixed at %d' % frames}"]
    return _finish(proto, path, "recognition", opset, refittable, notes)
