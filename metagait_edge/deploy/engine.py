"""TensorRT 10 engines: build from ONNX, cache, INT8 calibration, timing cache, refit.

TensorRT is imported inside the functions that need it, never at module import, so the pure parts
(cache keys, optimization profiles, calibration data loading) work and are tested everywhere.

* **Cache.** An engine is only valid for the exact ONNX graph + weights, TensorRT version, GPU and
  build settings it was built with. :func:`engine_cache_key` hashes all of them; :class:`EngineCache`
  stores ``<key>.engine`` with a JSON sidecar, so any change (new checkpoint, JetPack upgrade, other
  Jetson module, fp16 -> int8) misses the cache and triggers a rebuild.
* **Profiles.** Dynamic axes get one optimization profile: batch 1..``max_batch`` (optimum 1, the
  real-time case) and, for recognition, frames 3..90 (optimum 30, the runtime's window).
* **INT8.** :func:`make_entropy_calibrator` feeds ``IInt8EntropyCalibrator2`` with real data: silhouette
  windows or gait-cycle model inputs from npz files (:func:`load_calibration_batches`). (Implicit INT8
  calibration is deprecated in TensorRT 10 in favour of explicit Q/DQ, but still supported through 10.x.)
* **Refit.** The personalization engine is built with ``BuilderFlag.REFIT``; after the on-device
  calibration :func:`refit_engine` writes the adapted weights with ``Refitter.set_named_weights`` under
  their ONNX initializer names, or :func:`refit_from_onnx` reads them from an adapted ONNX export with
  ``OnnxParserRefitter``. No rebuild (minutes on a Jetson) is needed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Literal, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from metagait_edge.atomic import atomic_write_bytes, atomic_write_text
from metagait_edge.deploy.export import RECOGNITION_INPUT, RECOGNITION_MIN_FRAMES

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
Shape = Tuple[int, ...]
Profile = Dict[str, Tuple[Shape, Shape, Shape]]  # input name -> (min, opt, max)

RECOGNITION_MAX_FRAMES = 90
RECOGNITION_OPT_FRAMES = 30


@dataclass
class EngineSpec:
    """How to build an engine. ``refit``: keep weights refittable (the personalization TCN)."""

    precision: Literal["fp32", "fp16", "int8"] = "fp16"
    max_batch: int = 8
    refit: bool = False
    workspace_mb: int = 1024
    profiles: Optional[Profile] = None  # default: from the model's input shape (default_profile)
    calibration_sha256: str = ""  # set from the calibration data for int8

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")


# ----------------------------------------------------------------------------------------------------
# Pure parts: keys, cache, profiles, calibration data


def engine_cache_key(
    model_sha256: str,
    trt_version: str,
    gpu_name: str,
    precision: str,
    *,
    refit: bool = False,
    profiles: Optional[Profile] = None,
    calibration_sha256: str = "",
    compute_capability: str = "",
) -> str:
    """A stable hex key: any change of model bytes, TensorRT version, GPU, precision or build settings
    gives another key. The human-readable parts lead so a cache folder can be read at a glance."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if not model_sha256 or not trt_version or not gpu_name:
        raise ValueError("engine_cache_key needs the model hash, the TensorRT version and the GPU name")
    payload = json.dumps({
        "model": model_sha256, "trt": trt_version, "gpu": gpu_name, "cc": compute_capability,
        "precision": precision, "refit": bool(refit), "calibration": calibration_sha256 if precision == "int8" else "",
        "profiles": {k: [list(s) for s in v] for k, v in sorted((profiles or {}).items())},
    }, sort_keys=True)
    digest = hashlib.sha256(payload.encode()).hexdigest()[:24]
    gpu = "".join(ch if ch.isalnum() else "-" for ch in gpu_name).strip("-").lower()[:32]
    return f"{precision}-trt{trt_version}-{gpu}-{digest}"


@dataclass
class CachedEngine:
    path: Path
    key: str
    meta: Dict[str, Any] = field(default_factory=dict)

    def read(self) -> bytes:
        return self.path.read_bytes()


class EngineCache:
    """``<root>/<key>.engine`` plus ``<key>.json`` (what it was built from, when, how long it took)."""

    def __init__(self, root: Union[str, Path]):
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        return self.root / f"{key}.engine"

    def lookup(self, key: str) -> Optional[CachedEngine]:
        path = self.path_for(key)
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            return None  # a sidecar is written last: an engine without one is an interrupted store
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError:
            log.warning("engine cache: unreadable sidecar %s; rebuilding", meta_path)
            return None
        if meta.get("key") != key or meta.get("size") != path.stat().st_size:
            log.warning("engine cache: %s does not match its sidecar; rebuilding", path)
            return None
        return CachedEngine(path, key, meta)

    def store(self, key: str, engine: bytes, meta: Mapping[str, Any]) -> CachedEngine:
        path = self.path_for(key)
        atomic_write_bytes(path, engine)
        full = {**dict(meta), "key": key, "size": len(engine)}
        atomic_write_text(path.with_suffix(".json"), json.dumps(full, indent=2, sort_keys=True) + "\n")
        return CachedEngine(path, key, full)

    def entries(self) -> List[CachedEngine]:
        out = []
        for p in sorted(self.root.glob("*.engine")):
            hit = self.lookup(p.stem)
            if hit is not None:
                out.append(hit)
        return out


def default_profile(input_name: str, input_shape: Sequence[Union[int, str]], max_batch: int) -> Profile:
    """One optimization profile for an exported model's input (``ExportReport.inputs`` / ONNX dims).

    Batch 1..max_batch, optimum 1; a dynamic ``frames`` axis 3..90, optimum 30. Every other axis must
    be static.
    """
    lo: List[int] = []
    opt: List[int] = []
    hi: List[int] = []
    for axis, dim in enumerate(input_shape):
        if isinstance(dim, int) and dim > 0:
            lo.append(dim), opt.append(dim), hi.append(dim)
        elif axis == 0:
            lo.append(1), opt.append(1), hi.append(max_batch)
        elif axis == 1 and input_name == RECOGNITION_INPUT:
            lo.append(RECOGNITION_MIN_FRAMES), opt.append(RECOGNITION_OPT_FRAMES), hi.append(RECOGNITION_MAX_FRAMES)
        else:
            raise ValueError(f"input {input_name!r} axis {axis} ({dim!r}) is dynamic; only batch "
                             f"(and frames of {RECOGNITION_INPUT!r}) may be")
    return {input_name: (tuple(lo), tuple(opt), tuple(hi))}


def onnx_input_profile(onnx_path: Union[str, Path], max_batch: int) -> Profile:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    profile: Profile = {}
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_param if d.dim_param else int(d.dim_value) for d in inp.type.tensor_type.shape.dim]
        profile.update(default_profile(inp.name, dims, max_batch))
    return profile


def load_calibration_batches(
    paths: Iterable[Union[str, Path]],
    input_name: str,
    sample_shape: Sequence[int],
    batch_size: int = 8,
    max_batches: Optional[int] = None,
) -> List[np.ndarray]:
    """Real calibration data as float32 batches ``[batch_size, *sample_shape]``.

    Each npz file holds an array under ``input_name`` (``silhouettes [N, T, H, W]`` in 0..1, uint8 0..255
    is scaled; or ``cycles [N, 3C, 101]``, the personalization model's input) with ``N`` samples. A short
    last batch is dropped (TensorRT calibrates with a fixed batch size). Errors name file and key.
    """
    samples: List[np.ndarray] = []
    sample_shape = tuple(int(s) for s in sample_shape)
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("INT8 calibration needs at least one npz file with real data")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"calibration file not found: {path}")
        with np.load(path) as data:
            if input_name not in data:
                raise KeyError(f"{path}: no array {input_name!r} (has {sorted(data.keys())})")
            arr = data[input_name]
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim == len(sample_shape):
            arr = arr[None]
        if tuple(arr.shape[1:]) != sample_shape:
            raise ValueError(f"{path}: {input_name} has samples of shape {tuple(arr.shape[1:])}, the engine "
                             f"calibrates with {sample_shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{path}: {input_name} contains NaN or infinite values")
        samples.extend(arr)
    n = len(samples) // batch_size
    if n == 0:
        raise ValueError(f"calibration needs at least {batch_size} samples, got {len(samples)} from {len(paths)} file(s)")
    if max_batches is not None:
        n = min(n, max_batches)
    return [np.stack(samples[i * batch_size:(i + 1) * batch_size]) for i in range(n)]


def calibration_sha256(batches: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256()
    for b in batches:
        h.update(str(b.shape).encode())
        h.update(np.ascontiguousarray(b, dtype=np.float32).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------
# TensorRT parts (need tensorrt, and for calibration / inference a CUDA GPU through torch)


def trt_logger(verbose: bool = False):
    import tensorrt as trt

    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


def gpu_identity() -> Tuple[str, str]:
    """(GPU name, compute capability) of CUDA device 0, e.g. ('Orin', '8.7')."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU: TensorRT engines are built on the device that runs them")
    major, minor = torch.cuda.get_device_capability(0)
    return torch.cuda.get_device_name(0), f"{major}.{minor}"


def make_entropy_calibrator(batches: Sequence[np.ndarray], input_name: str, cache_file: Optional[Path] = None):
    """An ``IInt8EntropyCalibrator2`` feeding ``batches`` (float32, fixed batch size) from GPU memory."""
    import tensorrt as trt
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self._batches = list(batches)
            self._index = 0
            self._device = None  # one GPU buffer, reused: TensorRT reads it before asking for the next

        def get_batch_size(self) -> int:
            return int(self._batches[0].shape[0])

        def get_batch(self, names, *args):
            if self._index >= len(self._batches):
                return None
            host = torch.from_numpy(np.ascontiguousarray(self._batches[self._index], dtype=np.float32))
            self._index += 1
            if self._device is None or self._device.shape != host.shape:
                self._device = torch.empty(host.shape, dtype=torch.float32, device="cuda")
            self._device.copy_(host)
            torch.cuda.synchronize()
            return [int(self._device.data_ptr()) if n == input_name else 0 for n in names]

        def read_calibration_cache(self):
            if cache_file is not None and Path(cache_file).is_file():
                return Path(cache_file).read_bytes()
            return None

        def write_calibration_cache(self, cache) -> None:
            if cache_file is not None:
                atomic_write_bytes(cache_file, bytes(cache))

    return EntropyCalibrator()


def build_engine(
    onnx_path: Union[str, Path],
    spec: EngineSpec,
    *,
    calibration: Optional[Sequence[np.ndarray]] = None,
    timing_cache: Optional[Union[str, Path]] = None,
    verbose: bool = False,
) -> bytes:
    """Parse ``onnx_path`` with ``trt.OnnxParser`` and build a serialized engine (TensorRT 10 API)."""
    import tensorrt as trt

    logger = trt_logger(verbose)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mb << 20)
    if spec.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 layers fall back to fp16 where faster or unsupported
    if spec.refit:
        config.set_flag(trt.BuilderFlag.REFIT)
    profiles = spec.profiles or onnx_input_profile(onnx_path, spec.max_batch)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        if name not in profiles:
            raise ValueError(f"{onnx_path}: no optimization profile for input {name!r}")
        lo, opt, hi = profiles[name]
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    if spec.precision == "int8":
        if not calibration:
            raise ValueError("int8 engines need calibration batches (load_calibration_batches)")
        config.set_flag(trt.BuilderFlag.INT8)
        input_name = network.get_input(0).name
        cal_shape = tuple(calibration[0].shape)
        config.set_calibration_profile(_fixed_profile(builder, input_name, cal_shape))
        config.int8_calibrator = make_entropy_calibrator(calibration, input_name)
    cache = None
    if timing_cache is not None:
        # Kernel timings are reused across builds (of any model) on the same GPU + TensorRT version.
        blob = Path(timing_cache).read_bytes() if Path(timing_cache).is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{onnx_path}: TensorRT engine build failed (see the TensorRT log above)")
    log.info("built %s engine from %s in %.1f s", spec.precision, onnx_path, time.perf_counter() - t0)
    if cache is not None:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _fixed_profile(builder, name: str, shape: Shape):
    p = builder.create_optimization_profile()
    p.set_shape(name, shape, shape, shape)
    return p


@dataclass
class EngineResult:
    engine: bytes
    key: str
    path: Path
    built: bool
    seconds: float


def get_engine(
    onnx_path: Union[str, Path],
    spec: EngineSpec,
    cache_dir: Union[str, Path],
    *,
    calibration: Optional[Sequence[np.ndarray]] = None,
    timing_cache: Optional[Union[str, Path]] = None,
    force: bool = False,
) -> EngineResult:
    """The engine for ``onnx_path`` + ``spec`` on this GPU: from the cache, or built and cached."""
    import tensorrt as trt

    from metagait_edge.hashing import file_sha256

    onnx_path = Path(onnx_path)
    gpu, cc = gpu_identity()
    if spec.precision == "int8" and calibration:
        spec = EngineSpec(**{**asdict(spec), "calibration_sha256": calibration_sha256(calibration)})
    profiles = spec.profiles or onnx_input_profile(onnx_path, spec.max_batch)
    key = engine_cache_key(file_sha256(onnx_path), trt.__version__, gpu, spec.precision, refit=spec.refit,
                           profiles=profiles, calibration_sha256=spec.calibration_sha256, compute_capability=cc)
    cache = EngineCache(cache_dir)
    hit = None if force else cache.lookup(key)
    if hit is not None:
        return EngineResult(hit.read(), key, hit.path, False, 0.0)
    t0 = time.perf_counter()
    engine = build_engine(onnx_path, spec, calibration=calibration, timing_cache=timing_cache)
    seconds = time.perf_counter() - t0
    stored = cache.store(key, engine, {
        "onnx": str(onnx_path), "onnx_sha256": file_sha256(onnx_path), "tensorrt": trt.__version__, "gpu": gpu,
        "compute_capability": cc, "precision": spec.precision, "refit": spec.refit,
        "profiles": {k: [list(s) for s in v] for k, v in profiles.items()}, "build_seconds": round(seconds, 1),
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return EngineResult(engine, key, stored.path, True, seconds)


def deserialize(engine: bytes, logger=None):
    import tensorrt as trt

    runtime = trt.Runtime(logger or trt_logger())
    cuda_engine = runtime.deserialize_cuda_engine(engine)
    if cuda_engine is None:
        raise RuntimeError("TensorRT could not deserialize the engine (built by another TensorRT version or GPU?)")
    return cuda_engine


def refittable_engine_weights(cuda_engine, logger=None) -> List[str]:
    import tensorrt as trt

    return list(trt.Refitter(cuda_engine, logger or trt_logger()).get_all_weights())


def refit_engine(
    cuda_engine,
    weights: Mapping[str, np.ndarray],
    logger=None,
    *,
    current: Optional[Mapping[str, np.ndarray]] = None,
    strict_names: bool = True,
) -> List[str]:
    """Write named weights (ONNX initializer names, ONNX shapes, float32) into a REFIT engine in place.

    TensorRT may need more weights than a partial update gives (weights it fused into one kernel with
    the changed ones, ``get_missing_weights``); those come from ``current`` (all current weights by
    name). With ``strict_names`` a name the engine does not know is an error: a misnamed weight would
    silently keep its old value. Returns the names set. Never refit while the engine runs inference.
    """
    import tensorrt as trt

    refitter = trt.Refitter(cuda_engine, logger or trt_logger())
    known = set(refitter.get_all_weights())
    unknown = sorted(set(weights) - known)
    if unknown and strict_names:
        raise KeyError(f"the engine has no refittable weights named {unknown[:8]} (built without REFIT, or "
                       f"constant-folded by TensorRT?)")
    keep_alive = []  # trt.Weights borrows the numpy memory until refit_cuda_engine returns

    def put(name: str, value) -> None:
        array = np.ascontiguousarray(value, dtype=np.float32)
        keep_alive.append(array)
        if not refitter.set_named_weights(name, trt.Weights(array)):
            raise RuntimeError(f"TensorRT refused weights {name!r} of shape {array.shape}")

    done = []
    for name, value in weights.items():
        if name in known:
            put(name, value)
            done.append(name)
    missing = list(refitter.get_missing_weights())
    if missing:
        lacking = [n for n in missing if current is None or n not in current]
        if lacking:
            raise RuntimeError(f"refit incomplete: TensorRT also needs weights {lacking[:8]}")
        for name in missing:
            put(name, current[name])
    if not refitter.refit_cuda_engine():
        raise RuntimeError("TensorRT refit_cuda_engine failed (see the TensorRT log)")
    return done


def refit_from_onnx(cuda_engine, onnx_path: Union[str, Path], logger=None) -> None:
    """Refit every weight from an ONNX export of the same graph (e.g. the adapted model)."""
    import tensorrt as trt

    logger = logger or trt_logger()
    refitter = trt.Refitter(cuda_engine, logger)
    parser_refitter = trt.OnnxParserRefitter(refitter, logger)
    if not parser_refitter.refit_from_file(str(onnx_path)):
        errors = "; ".join(str(parser_refitter.get_error(i)) for i in range(parser_refitter.num_errors))
        raise RuntimeError(f"{onnx_path}: OnnxParserRefitter failed: {errors}")
    if not refitter.refit_cuda_engine():
        raise RuntimeError(f"{onnx_path}: TensorRT refit_cuda_engine failed")


__all__ = [
    "CachedEngine", "EngineCache", "EngineResult", "EngineSpec", "PRECISIONS", "build_engine",
    "calibration_sha256", "default_profile", "deserialize", "engine_cache_key", "get_engine", "gpu_identity",
    "load_calibration_batches", "make_entropy_calibrator", "onnx_input_profile", "refit_engine",
    "refit_from_onnx", "refittable_engine_weights",
]
