"""Exported ONNX graphs as deployment sees them: checks for TensorRT 10, metadata, weights by name.

:func:`check_onnx` refuses, on the workstation, a graph the Jetson's TensorRT could not import;
:func:`refittable_names` / :func:`refittable_shapes` / :func:`model_kind` read what the exporter recorded;
:func:`onnx_weights` and :func:`with_weights` put named (calibrated) weights in the graph's layout, and
:func:`graph_fingerprint` tells two exports that differ in weight values only.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import onnx

PathLike = Union[str, "os.PathLike[str]"]

MIN_OPSET = 17

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
