"""TensorRT 10 inference backend (Jetson Orin / any CUDA GPU).

``tensorrt`` is imported only inside methods, never at module import. I/O buffers are torch CUDA
tensors (JetPack's torch wheel has CUDA), so no pycuda / cuda-python is needed. The engine comes from
:func:`metagait_edge.deploy.engine.get_engine` (cached by model hash, TensorRT version, GPU, precision).
``swap_weights`` refits a REFIT engine in place with ``Refitter.set_named_weights`` under the ONNX
initializer names; engines of the personalization TCN are always built refittable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from metagait_edge.deploy.backends import BackendConfig, BackendUnavailable, InferenceBackend, tensorrt_available


class TensorRTBackend(InferenceBackend):
    name = "tensorrt"

    def __init__(
        self,
        onnx_path: Union[str, Path],
        model: str,
        *,
        precision: str = "fp16",
        max_batch: int = 8,
        cache_dir: Optional[Union[str, Path]] = None,
        timing_cache: Optional[Union[str, Path]] = None,
        calibration_files: Sequence[Union[str, Path]] = (),
        refit: Optional[bool] = None,
        force_build: bool = False,
    ):
        super().__init__(model)
        ok, reason = tensorrt_available()
        if not ok:
            raise BackendUnavailable(f"tensorrt backend: {reason}")
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"tensorrt backend: ONNX model not found: {self.path}")
        self.precision = precision
        self.max_batch = max_batch
        self.refit = (model == "tcn") if refit is None else refit
        from metagait_edge.paths import cache_dir as default_cache

        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache() / "engines"
        self.timing_cache = Path(timing_cache) if timing_cache is not None else self.cache_dir / "timing.cache"
        self.calibration_files = [Path(p) for p in calibration_files]
        self.force_build = force_build
        self._engine = None
        self._context = None
        self._stream = None
        self._result = None
        self._weights: Optional[Dict[str, np.ndarray]] = None
        self.swaps = 0

    @classmethod
    def from_config(cls, onnx_path: Union[str, Path], config: BackendConfig) -> "TensorRTBackend":
        return cls(onnx_path, config.model, precision=config.precision, max_batch=config.max_batch,
                   cache_dir=config.engine_cache, timing_cache=config.timing_cache,
                   calibration_files=config.calibration)

    def load(self) -> "TensorRTBackend":
        if self._context is not None:
            return self
        import torch

        from metagait_edge.deploy import engine as E
        from metagait_edge.deploy.onnx_graph import initializer_arrays, refittable_names

        spec = E.EngineSpec(precision=self.precision, max_batch=self.max_batch, refit=self.refit)
        calibration = None
        if self.precision == "int8":
            profile = E.onnx_input_profile(self.path, self.max_batch)
            _, opt, _ = profile[self.input_name]
            calibration = E.load_calibration_batches(self.calibration_files, self.input_name, opt[1:],
                                                     batch_size=min(8, self.max_batch))
        self.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        self._result = E.get_engine(self.path, spec, self.cache_dir, calibration=calibration,
                                    timing_cache=self.timing_cache, force=self.force_build)
        self._engine = E.deserialize(self._result.engine)
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream()
        if self.refit:
            names = set(refittable_names(self.path))
            self._weights = {k: v for k, v in initializer_arrays(self.path).items() if k in names}
        return self

    def _run(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        import torch

        self.load()
        if x.shape[0] > self.max_batch:
            raise ValueError(f"tensorrt backend: batch {x.shape[0]} > the engine's max_batch {self.max_batch}")
        ctx = self._context
        inp = torch.from_numpy(x).to("cuda", non_blocking=False)
        if not ctx.set_input_shape(self.input_name, tuple(inp.shape)):
            raise ValueError(f"tensorrt backend: input shape {tuple(inp.shape)} is outside the engine's profile")
        ctx.set_tensor_address(self.input_name, int(inp.data_ptr()))
        out_shape = tuple(ctx.get_tensor_shape(self.output_name))
        out = torch.empty(out_shape, dtype=torch.float32, device="cuda")
        ctx.set_tensor_address(self.output_name, int(out.data_ptr()))
        self._stream.wait_stream(torch.cuda.current_stream())  # the input copy ran on the current stream
        with torch.cuda.stream(self._stream):
            if not ctx.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("tensorrt backend: execute_async_v3 failed")
        self._stream.synchronize()
        return {self.output_name: out.cpu().numpy()}

    def swap_weights(self, weights: Mapping[str, Any]) -> None:
        from metagait_edge.deploy import engine as E
        from metagait_edge.deploy.onnx_graph import onnx_weights, refittable_shapes

        self.load()
        if not self.refit:
            raise RuntimeError(f"tensorrt backend: the {self.model} engine was built without REFIT; "
                               f"weights cannot be swapped")
        arrays = onnx_weights(weights, refittable_shapes(self.path), where=str(self.path))
        self._stream.synchronize()
        E.refit_engine(self._engine, arrays, current=self._weights)
        self._weights = {**(self._weights or {}), **arrays}
        self.swaps += 1

    def engine_weight_names(self) -> List[str]:
        from metagait_edge.deploy import engine as E

        self.load()
        return E.refittable_engine_weights(self._engine)

    def describe(self) -> Dict[str, Any]:
        import tensorrt as trt

        from metagait_edge.deploy.engine import gpu_identity

        gpu, cc = gpu_identity()
        out = {"backend": self.name, "model": self.model, "onnx": str(self.path), "device": gpu,
               "compute_capability": cc, "precision": self.precision, "refit": self.refit,
               "max_batch": self.max_batch, "tensorrt": trt.__version__, "weight_swaps": self.swaps}
        if self._result is not None:
            out.update(engine=str(self._result.path), engine_key=self._result.key, engine_built_now=self._result.built)
        return out


__all__ = ["TensorRTBackend"]
