"""Inference backends behind one interface: PyTorch eager, ONNX Runtime and TensorRT.

Every backend ``load()``s a model, ``run()``s a batch (numpy in, numpy out, outputs by name), swaps in
named weights after the on-device calibration (``swap_weights``: MAML fast weights with parametrised or
folded names, e.g. ``tcn.blocks.0.conv1.conv.parametrizations.weight.original1``) and ``describe()``s
itself. :func:`create_backend` picks one from a :class:`BackendConfig`: ``kind: auto`` takes TensorRT
where it and a CUDA GPU exist, else ONNX Runtime (the CPU default), else PyTorch.

How the weight swap works per backend:

* torch: a fresh folded copy of the source model carries the merged weights (same as ``export``);
* onnxruntime: the session is re-created from an in-memory copy of the model whose named initializers
  are replaced (the ONNX file on disk is never modified; see ``_make_session`` for why not
  ``SessionOptions.add_initializer``);
* tensorrt: ``trt.Refitter.set_named_weights`` with the ONNX initializer names (``tensorrt_backend``).
"""

from __future__ import annotations

import abc
import copy
import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Mapping, Optional, Sequence, Union

import numpy as np

from metagait_edge.deploy.export import MODEL_KINDS, RECOGNITION_INPUT, RECOGNITION_OUTPUT, TCN_INPUT, TCN_OUTPUT

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

BACKEND_KINDS = ("torch", "onnxruntime", "tensorrt")
# ``auto`` takes the first available of these.
AUTO_ORDER = ("tensorrt", "onnxruntime", "torch")

Inputs = Union[np.ndarray, Mapping[str, np.ndarray]]


@dataclass
class BackendConfig:
    """Which backend runs which model.

    ``model``: ``recognition`` (MetaGait) or ``tcn`` (the personalization CycleModel). ``onnx``: the
    exported graph (ONNX Runtime, TensorRT); without it the factory exports the given module into a
    temporary folder. ``threads``: CPU threads (torch and ONNX Runtime). ``precision``, ``max_batch``,
    ``engine_cache``, ``calibration`` (npz files for INT8) and ``timing_cache``: TensorRT only.
    """

    kind: Literal["auto", "torch", "onnxruntime", "tensorrt"] = "auto"
    model: Literal["recognition", "tcn"] = "tcn"
    onnx: Optional[Path] = None
    threads: int = 1
    precision: Literal["fp32", "fp16", "int8"] = "fp16"
    max_batch: int = 8
    engine_cache: Optional[Path] = None
    timing_cache: Optional[Path] = None
    calibration: List[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in ("auto",) + BACKEND_KINDS:
            raise ValueError(f"backend kind must be auto or one of {BACKEND_KINDS}, got {self.kind!r}")
        if self.model not in MODEL_KINDS:
            raise ValueError(f"backend model must be one of {MODEL_KINDS}, got {self.model!r}")
        if self.threads < 1:
            raise ValueError(f"backend threads must be >= 1, got {self.threads}")
        if self.max_batch < 1:
            raise ValueError(f"backend max_batch must be >= 1, got {self.max_batch}")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (missing package or GPU); the message says which."""


def io_names(model: str) -> tuple[str, str]:
    if model == "recognition":
        return RECOGNITION_INPUT, RECOGNITION_OUTPUT
    if model == "tcn":
        return TCN_INPUT, TCN_OUTPUT
    raise ValueError(f"unknown model kind {model!r}; expected one of {MODEL_KINDS}")


class InferenceBackend(abc.ABC):
    """One model on one runtime. ``run`` takes ``[batch, ...]`` float32 arrays, returns outputs by name."""

    name: str = "?"

    def __init__(self, model: str):
        self.model = model
        self.input_name, self.output_name = io_names(model)

    @abc.abstractmethod
    def load(self) -> "InferenceBackend":
        """Prepare to run (build sessions, engines); returns ``self``. Idempotent."""

    @abc.abstractmethod
    def _run(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        ...

    def run(self, inputs: Inputs) -> Dict[str, np.ndarray]:
        if isinstance(inputs, Mapping):
            unknown = sorted(set(inputs) - {self.input_name})
            if unknown or self.input_name not in inputs:
                raise KeyError(f"{self.name} backend ({self.model}) takes one input {self.input_name!r}, got {sorted(inputs)}")
            x = inputs[self.input_name]
        else:
            x = inputs
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        if x.ndim < 3:
            raise ValueError(f"{self.name} backend ({self.model}): input {self.input_name} must be batched "
                             f"[batch, ...], got shape {x.shape}")
        return self._run(x)

    @abc.abstractmethod
    def swap_weights(self, weights: Mapping[str, Any]) -> None:
        """Run from now on with these named weights (a subset is merged over the current ones)."""

    @abc.abstractmethod
    def describe(self) -> Dict[str, Any]:
        """What runs where: backend, model, device, precision, threads, weights version."""


# ----------------------------------------------------------------------------------------------------
# PyTorch


class TorchBackend(InferenceBackend):
    """PyTorch eager on the CPU (or ``device``); the reference the other backends are checked against."""

    name = "torch"

    def __init__(self, module: "nn.Module", model: str, *, threads: int = 1, device: str = "cpu"):
        super().__init__(model)
        self._source = module
        self.threads = threads
        self.device = device
        self._module = None
        self._weights: Optional[Dict[str, Any]] = None  # folded names for the TCN, state-dict names else
        self.swaps = 0

    def load(self) -> "TorchBackend":
        if self._module is None:
            self._module = self._build()
        return self

    def _build(self):
        import torch

        from metagait_edge.deploy.export import deploy_tcn_module

        if self.model == "tcn":
            module = deploy_tcn_module(self._source, self._weights)
        else:
            module = copy.deepcopy(self._source).eval()
            module.set_mode("inference")
            if self._weights:  # a subset merged over the model's own weights: every key is loaded
                module.load_state_dict({**module.state_dict(), **{k: torch.as_tensor(v) for k, v in self._weights.items()}})
        return module.to(self.device).eval()

    def _run(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        import torch

        self.load()
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        with torch.inference_mode():
            out = self._module(torch.from_numpy(x).to(self.device))
        return {self.output_name: out[self.output_name].detach().cpu().numpy()}

    def swap_weights(self, weights: Mapping[str, Any]) -> None:
        import torch

        given = {k: torch.as_tensor(np.asarray(v.detach().cpu() if hasattr(v, "detach") else v)) for k, v in weights.items()}
        if self.model == "tcn":
            from metagait_edge.models.tcn import fold_weight_norm_params

            given = fold_weight_norm_params(given)
            known = set(fold_weight_norm_params({n: p.detach() for n, p in self._source.named_parameters()}))
        else:
            known = set(self._source.state_dict())
        unknown = sorted(set(given) - known)
        if unknown:
            raise KeyError(f"torch backend ({self.model}): {unknown} are not weights of the model")
        self._weights = {**(self._weights or {}), **given}
        self._module = self._build()
        self.swaps += 1

    def describe(self) -> Dict[str, Any]:
        import torch

        return {"backend": self.name, "model": self.model, "device": self.device, "precision": "fp32",
                "threads": self.threads, "torch": torch.__version__, "weight_swaps": self.swaps}


# ----------------------------------------------------------------------------------------------------
# ONNX Runtime


class OnnxRuntimeBackend(InferenceBackend):
    """ONNX Runtime on the CPU execution provider (the CPU default)."""

    name = "onnxruntime"

    def __init__(self, onnx_path: Union[str, Path], model: str, *, threads: int = 1,
                 providers: Sequence[str] = ("CPUExecutionProvider",)):
        super().__init__(model)
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"onnxruntime backend: ONNX model not found: {self.path}")
        self.threads = threads
        self.providers = list(providers)
        self._session = None
        self._overrides: Dict[str, np.ndarray] = {}
        self._shapes: Optional[Dict[str, tuple]] = None
        self.swaps = 0

    def load(self) -> "OnnxRuntimeBackend":
        if self._session is None:
            self._session = self._make_session()
        return self

    def _make_session(self):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self._overrides:
            # Not SessionOptions.add_initializer: with graph optimizations on, ONNX Runtime 1.32 fuses
            # Conv + Mul/Add (FiLM) using the file's initializer values, so overridden FiLM weights are
            # silently ignored (measured: 0.1 max error). A modified in-memory copy of the model is exact.
            from metagait_edge.deploy.onnx_graph import with_weights

            source = with_weights(self.path, self._overrides).SerializeToString()
        else:
            source = str(self.path)
        session = ort.InferenceSession(source, sess_options=so, providers=self.providers)
        inputs = [i.name for i in session.get_inputs()]
        if inputs != [self.input_name]:
            raise ValueError(f"{self.path}: inputs {inputs}, expected [{self.input_name!r}] for a {self.model} model")
        return session

    def _run(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        self.load()
        (out,) = self._session.run([self.output_name], {self.input_name: x})
        return {self.output_name: out}

    def refittable_shapes(self) -> Dict[str, tuple]:
        if self._shapes is None:
            from metagait_edge.deploy.onnx_graph import refittable_shapes

            self._shapes = refittable_shapes(self.path)
        return self._shapes

    def swap_weights(self, weights: Mapping[str, Any]) -> None:
        from metagait_edge.deploy.onnx_graph import onnx_weights

        arrays = onnx_weights(weights, self.refittable_shapes(), where=str(self.path))
        self._overrides = {**self._overrides, **arrays}
        self._session = self._make_session()
        self.swaps += 1

    def describe(self) -> Dict[str, Any]:
        import onnxruntime as ort

        return {"backend": self.name, "model": self.model, "onnx": str(self.path), "device": "cpu",
                "providers": self.providers, "precision": "fp32", "threads": self.threads,
                "onnxruntime": ort.__version__, "weight_swaps": self.swaps}


# ----------------------------------------------------------------------------------------------------
# Selection


def tensorrt_available() -> tuple[bool, str]:
    """(available, reason): TensorRT needs the ``tensorrt`` package and a CUDA GPU."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "the tensorrt Python package is not installed (JetPack ships it; see docs/deploy.md)"
    try:
        import torch
    except ImportError:
        return False, "torch is not installed (the TensorRT backend uses torch CUDA buffers)"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible to torch"
    return True, "tensorrt and a CUDA GPU are available"


def available_backends() -> Dict[str, str]:
    """Backend kind -> why it can or cannot run here (``"ok"`` when it can)."""
    out = {"torch": "ok" if importlib.util.find_spec("torch") else "torch is not installed",
           "onnxruntime": "ok" if importlib.util.find_spec("onnxruntime") else "onnxruntime is not installed"}
    ok, reason = tensorrt_available()
    out["tensorrt"] = "ok" if ok else reason
    return out


def resolve_kind(requested: str, availability: Mapping[str, str], *, have_module: bool = True,
                 have_onnx: bool = True) -> str:
    """The backend kind to use: ``requested`` if it can run, or the first of ``AUTO_ORDER`` for ``auto``.

    The torch backend needs the PyTorch module; ONNX Runtime and TensorRT need an ONNX file or a module
    to export one from.
    """
    def usable(kind: str) -> Optional[str]:
        if availability.get(kind) != "ok":
            return availability.get(kind, "unknown backend")
        if kind == "torch" and not have_module:
            return "the torch backend needs the PyTorch model (a checkpoint), not only an ONNX file"
        if kind != "torch" and not (have_onnx or have_module):
            return f"the {kind} backend needs an ONNX file"
        return None

    if requested == "auto":
        reasons = {}
        for kind in AUTO_ORDER:
            why = usable(kind)
            if why is None:
                return kind
            reasons[kind] = why
        raise BackendUnavailable(f"no inference backend can run here: {reasons}")
    if requested not in BACKEND_KINDS:
        raise ValueError(f"unknown backend {requested!r}; expected auto or one of {BACKEND_KINDS}")
    why = usable(requested)
    if why is not None:
        raise BackendUnavailable(f"backend {requested!r} cannot run here: {why}")
    return requested


def create_backend(config: BackendConfig, module: Optional["nn.Module"] = None) -> InferenceBackend:
    """A loaded backend for ``config``; ``module`` is the PyTorch model (needed by torch, or to export)."""
    kind = resolve_kind(config.kind, available_backends(), have_module=module is not None,
                        have_onnx=config.onnx is not None)
    if kind == "torch":
        return TorchBackend(module, config.model, threads=config.threads).load()
    onnx_path = Path(config.onnx) if config.onnx is not None else _export_temp(module, config.model)
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(onnx_path, config.model, threads=config.threads).load()
    from metagait_edge.deploy.tensorrt_backend import TensorRTBackend

    return TensorRTBackend.from_config(onnx_path, config).load()


def runtime_kind(requested: str, have_onnx_file: bool) -> str:
    """The backend for a runtime model: ``requested`` (or the best for ``auto``) where it can run, counting
    ONNX Runtime and TensorRT as unable to run when there is no ONNX file and no ``onnx`` package to export."""
    availability = dict(available_backends())
    if not have_onnx_file and importlib.util.find_spec("onnx") is None:
        for kind in ("onnxruntime", "tensorrt"):
            if availability[kind] == "ok":
                availability[kind] = "no ONNX file given and the onnx package (to export one) is not installed"
    return resolve_kind(requested, availability)


def cached_onnx(module: "nn.Module", model: str) -> Path:
    """``module`` exported to ONNX once per set of weights, into ``$METAGAIT_CACHE/onnx`` (atomic rename)."""
    from metagait_edge.paths import cache_dir

    digest = hashlib.sha256(model.encode())
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().numpy().tobytes())
    path = cache_dir() / "onnx" / f"{model}-{digest.hexdigest()[:16]}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        _export(module, model, tmp)
        os.replace(tmp, path)
    return path


def _export_temp(module: "nn.Module", model: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="metagait-edge-onnx-")) / f"{model}.onnx"
    _export(module, model, path)
    return path


def _export(module: "nn.Module", model: str, path: Path) -> None:
    from metagait_edge.deploy.export import export_recognition, export_tcn

    (export_tcn if model == "tcn" else export_recognition)(module, path)


__all__ = [
    "AUTO_ORDER", "BACKEND_KINDS", "BackendConfig", "BackendUnavailable", "InferenceBackend",
    "OnnxRuntimeBackend", "TorchBackend", "available_backends", "cached_onnx", "create_backend", "io_names",
    "resolve_kind", "runtime_kind", "tensorrt_available",
]
