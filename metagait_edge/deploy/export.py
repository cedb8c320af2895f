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
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from metagait_edge.atomic import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    import onnx
    import torch
    from torch import nn

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_OPSET = 17
MIN_OPSET = 17
RECOGNITION_INPUT = "silhouettes"
RECOGNITION_OUTPUT = "embeddings"
RECOGNITION_FRAMES = 30
RECOGNITION_MIN_FRAMES = 3
TCN_INPUT = "cycles"
TCN_OUTPUT = "output"
CYCLE_LENGTH = 101
MODEL_KINDS = ("recognition", "tcn")

# ONNX metadata_props keys written by this module (read back by the backends and the engine builder).
META_KIND = "metagait_edge.model"
META_REFITTABLE = "metagait_edge.refittable_weights"
META_AXES = "metagait_edge.axes"

# ONNX operators the TensorRT 10 ONNX parser imports (onnx-tensorrt 10.x ``docs/operators.md``), limited
# to the ones a vision / sequence model like ours may plausibly emit. A graph with any other operator is
# refused here, on the workstation, instead of failing on the Jetson at engine-build time.
TRT10_ONNX_OPS = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh",
    "AveragePool", "BatchNormalization", "Cast", "Ceil", "Celu", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace",
    "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "Flatten",
    "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool",
    "GlobalMaxPool", "Greater", "GreaterOrEqual", "GroupNormalization", "GRU", "HardSigmoid", "HardSwish",
    "Identity", "If", "InstanceNormalization", "IsInf", "IsNaN", "LayerNormalization", "LeakyRelu", "Less",
    "LessOrEqual", "Log", "LogSoftmax", "Loop", "LpNormalization", "LpPool", "LRN", "LSTM", "MatMul", "Max",
    "MaxPool", "Mean", "Min", "Mod", "Mul", "Neg", "Not", "OneHot", "Or", "Pad", "Pow", "PRelu",
    "QuantizeLinear", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
    "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape",
    "Resize", "ReverseSequence", "RNN", "Round", "ScatterElements", "ScatterND", "Selu", "Shape", "Sigmoid",
    "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split",
    "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu",
    "Unsqueeze", "Where", "Xor",
})
# Tensor element types TensorRT 10 has no kernels for (onnx.TensorProto enum names).
TRT10_UNSUPPORTED_TYPES = frozenset({"DOUBLE", "STRING", "COMPLEX64", "COMPLEX128", "UINT16", "UINT32", "UINT64"})


class ExportError(ValueError):
    """An exported graph fails a deployment check; the message names the model, node or initializer."""


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
                mta_descriptor_channels=8, mta_gate_hidden=8, mhn_hidden=16, mtp_hidden=8)
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


def onnx_weights(
    params: Mapping[str, Any], shapes: Mapping[str, Sequence[int]], *, where: str = "model"
) -> Dict[str, np.ndarray]:
    """Named weights (fast weights, a state dict, folded or not) as float32 arrays in ONNX layout.

    ``shapes`` maps refittable initializer names to their ONNX shapes (:func:`refittable_shapes`). Every
    given weight must be one of them (after weight-norm folding) with the same number of elements; the
    result may be a subset (a partial update, e.g. the ANIL head only).
    """
    from metagait_edge.models.tcn import _WN_G, _WN_V

    arrays: Dict[str, np.ndarray] = {}
    pairs: Dict[str, Dict[str, np.ndarray]] = {}
    for name, value in params.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        value = np.asarray(value, dtype=np.float32)
        if name.endswith(_WN_G) or name.endswith(_WN_V):
            base = name[: -len(_WN_G)]
            pairs.setdefault(base, {})["g" if name.endswith(_WN_G) else "v"] = value
        else:
            arrays[name] = value
    for base, gv in pairs.items():
        if set(gv) != {"g", "v"}:
            missing = base + (_WN_V if "g" in gv else _WN_G)
            raise KeyError(f"{where}: weight-norm pair of {base}.weight is incomplete: {missing} is missing")
        v = gv["v"].astype(np.float64)
        norm = np.sqrt((v.reshape(v.shape[0], -1) ** 2).sum(axis=1)).reshape(gv["g"].shape)
        arrays[base + ".weight"] = (gv["g"] * v / norm).astype(np.float32)
    out: Dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if name not in shapes:
            raise KeyError(f"{where}: {name!r} is not a refittable weight; known: {sorted(shapes)[:8]}...")
        shape = tuple(int(s) for s in shapes[name])
        if value.size != int(np.prod(shape)):
            raise ValueError(f"{where}: weight {name!r} has {value.size} values {value.shape}, the graph needs {shape}")
        out[name] = np.ascontiguousarray(value.reshape(shape))
    return out


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
    in_channels = _tcn_input_channels(model)
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


def _tcn_input_channels(model: "nn.Module") -> int:
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


# ----------------------------------------------------------------------------------------------------
# Checks


def _as_proto(model: Union["onnx.ModelProto", PathLike]) -> "onnx.ModelProto":
    import onnx

    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        return onnx.load(str(path))
    return model


def check_onnx(
    model: Union["onnx.ModelProto", PathLike],
    allowed_ops: Iterable[str] = TRT10_ONNX_OPS,
    *,
    where: str = "model",
) -> List[str]:
    """``onnx.checker`` (full, with shape inference), opset, operator allow-list and tensor types.

    Returns the sorted operator types used; raises :class:`ExportError` naming offending nodes.
    """
    import onnx

    proto = _as_proto(model)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{where}: onnx.checker failed: {exc}") from exc
    opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    if opsets.get("ai.onnx", 0) < MIN_OPSET:
        raise ExportError(f"{where}: opset {opsets.get('ai.onnx')} < {MIN_OPSET}")
    allowed = set(allowed_ops)
    bad = [(n.name or "<unnamed>", n.op_type, n.domain) for n in _all_nodes(proto.graph)
           if n.op_type not in allowed or (n.domain not in ("", "ai.onnx"))]
    if bad:
        listed = ", ".join(f"{name} ({op}{'@' + dom if dom else ''})" for name, op, dom in bad[:10])
        raise ExportError(f"{where}: {len(bad)} node(s) use operators TensorRT 10 cannot import: {listed}")
    inferred = onnx.shape_inference.infer_shapes(proto)
    type_names = {v: k for k, v in onnx.TensorProto.DataType.items()}
    tensors = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    bad_types = sorted({(v.name, type_names.get(v.type.tensor_type.elem_type, "?")) for v in tensors
                        if type_names.get(v.type.tensor_type.elem_type) in TRT10_UNSUPPORTED_TYPES})
    bad_types += sorted((i.name, type_names.get(i.data_type, "?")) for i in proto.graph.initializer
                        if type_names.get(i.data_type) in TRT10_UNSUPPORTED_TYPES)
    if bad_types:
        raise ExportError(f"{where}: tensors of types TensorRT 10 lacks: {bad_types[:10]}")
    return sorted({n.op_type for n in _all_nodes(proto.graph)})


def _all_nodes(graph) -> Iterable[Any]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from _all_nodes(attr.g)
            for g in attr.graphs:
                yield from _all_nodes(g)


def refittable_names(model: Union["onnx.ModelProto", PathLike]) -> List[str]:
    """The refittable weight names recorded at export (``metadata_props``)."""
    proto = _as_proto(model)
    for p in proto.metadata_props:
        if p.key == META_REFITTABLE:
            return list(json.loads(p.value))
    raise ExportError("ONNX model has no metagait_edge refittable-weights metadata: export it with metagait_edge.deploy")


def refittable_shapes(model: Union["onnx.ModelProto", PathLike]) -> Dict[str, Tuple[int, ...]]:
    proto = _as_proto(model)
    inits = {i.name: tuple(int(d) for d in i.dims) for i in proto.graph.initializer}
    return {n: inits[n] for n in refittable_names(proto) if n in inits}


def model_kind(model: Union["onnx.ModelProto", PathLike]) -> Optional[str]:
    proto = _as_proto(model)
    for p in proto.metadata_props:
        if p.key == META_KIND:
            return p.value
    return None


def initializer_arrays(model: Union["onnx.ModelProto", PathLike]) -> Dict[str, np.ndarray]:
    from onnx import numpy_helper

    proto = _as_proto(model)
    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}


def graph_fingerprint(model: Union["onnx.ModelProto", PathLike]) -> str:
    """SHA-256 of the graph with every initializer's values blanked (names, types, shapes kept).

    Two exports with equal fingerprints differ in weight values only: the condition for refitting an
    engine built from one with the weights of the other.
    """
    import onnx

    proto = onnx.ModelProto()
    proto.CopyFrom(_as_proto(model))
    for init in proto.graph.initializer:
        dims, dtype, name = list(init.dims), init.data_type, init.name
        init.Clear()
        init.name, init.data_type = name, dtype
        init.dims.extend(dims)
    del proto.metadata_props[:]
    return hashlib.sha256(proto.graph.SerializeToString(deterministic=True)).hexdigest()


def with_weights(model: Union["onnx.ModelProto", PathLike], weights: Mapping[str, np.ndarray]) -> "onnx.ModelProto":
    """A copy of an exported model whose initializers ``weights`` (ONNX names and shapes) are replaced."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.ModelProto()
    proto.CopyFrom(_as_proto(model))
    inits = {i.name: i for i in proto.graph.initializer}
    for name, value in weights.items():
        if name not in inits:
            raise KeyError(f"with_weights: {name!r} is not an initializer of the model")
        value = np.asarray(value, dtype=np.float32)
        if tuple(inits[name].dims) != value.shape:
            raise ValueError(f"with_weights: {name!r} has shape {value.shape}, the model {tuple(inits[name].dims)}")
        inits[name].CopyFrom(numpy_helper.from_array(value, name=name))
    return proto


def file_sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------
# Parity and golden data

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
        c_in = _tcn_input_channels(model)
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


def save_golden(directory: PathLike, name: str, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray],
                *, atol: float, rtol: float) -> Path:
    """``<dir>/<name>.golden.npz`` with ``in:<tensor>``, ``out:<tensor>`` arrays and the tolerances.

    The same file feeds ``metagait-edge build-engine --golden`` on the Jetson; :mod:`.golden` converts it
    to polygraphy's ``--load-inputs`` / ``--load-outputs`` JSON where polygraphy is installed.
    """
    import io

    arrays = {f"in:{k}": np.asarray(v) for k, v in inputs.items()}
    arrays.update({f"out:{k}": np.asarray(v) for k, v in outputs.items()})
    arrays["atol"] = np.float64(atol)
    arrays["rtol"] = np.float64(rtol)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path = Path(directory) / f"{name}.golden.npz"
    atomic_write_bytes(path, buf.getvalue())
    return path


@dataclass
class Golden:
    inputs: Dict[str, np.ndarray]
    outputs: Dict[str, np.ndarray]
    atol: float
    rtol: float


def load_golden(path: PathLike) -> Golden:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"golden file not found: {path}")
    with np.load(path) as data:
        keys = list(data.keys())
        inputs = {k[3:]: data[k] for k in keys if k.startswith("in:")}
        outputs = {k[4:]: data[k] for k in keys if k.startswith("out:")}
        if not inputs or not outputs or "atol" not in keys:
            raise ValueError(f"{path}: not a golden file (needs in:*, out:*, atol, rtol arrays; has {keys})")
        return Golden(inputs, outputs, float(data["atol"]), float(data["rtol"]))


def compare(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], atol: float, rtol: float,
            where: str = "outputs") -> Dict[str, float]:
    """Max abs error per output; raises ``AssertionError`` naming the output beyond tolerance."""
    errors = {}
    for name, ref in want.items():
        if name not in got:
            raise AssertionError(f"{where}: output {name!r} missing (got {sorted(got)})")
        val = np.asarray(got[name])
        if val.shape != ref.shape:
            raise AssertionError(f"{where}: output {name!r} has shape {val.shape}, expected {ref.shape}")
        err = np.abs(val.astype(np.float64) - ref)
        errors[name] = float(err.max()) if err.size else 0.0
        bad = err > atol + rtol * np.abs(ref)
        if bad.any():
            raise AssertionError(f"{where}: output {name!r}: {int(bad.sum())} of {bad.size} values beyond "
                                 f"atol {atol} + rtol {rtol}; max abs error {errors[name]:.3g}")
    return errors


__all__ = [
    "CYCLE_LENGTH", "DEFAULT_OPSET", "ExportError", "ExportReport", "FP32_ATOL", "FP32_RTOL", "Golden",
    "MODEL_KINDS", "RECOGNITION_FRAMES", "RECOGNITION_INPUT", "RECOGNITION_OUTPUT", "TCN_INPUT", "TCN_OUTPUT",
    "TRT10_ONNX_OPS", "check_onnx", "compare", "deploy_tcn_module", "edge_metagait_config", "example_inputs", "export_recognition",
    "export_tcn", "file_sha256", "graph_fingerprint", "initializer_arrays", "load_golden", "model_kind",
    "onnx_weights", "refittable_names", "refittable_shapes", "save_golden", "torch_reference", "with_weights",
]
