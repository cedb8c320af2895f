"""The personalization model the runtime runs: the meta-trained CycleModel, its normalizer, and its backend.

``Personalizer.generate(prev_cycle, template, valid, model)`` gives the next cycle (physical units, [C, 101])
from the previous one. ``model`` is a ``CycleGenerator``: one set of weights (the base model, or a walker's
calibrated profile from ``generator(weights)``) on one inference backend: PyTorch eager, ONNX Runtime or
TensorRT (``deploy.backends``), chosen once with ``use_backend``. Adaptation (``adapt``, ``loss``) always
runs in PyTorch, because the MAML inner loop needs autograd; only the control path's per-cycle generation
moves to the faster backend (ONNX Runtime: 0.6 ms against 5.3 ms eager per cycle on the development VM,
``benchmarks/bench_control_path.py``).

``load_personalizer()`` loads the shipped default checkpoint
(``resources/checkpoints/personalization/seed0/fold0/generation``) when present, else a randomly
initialized model of the default configuration (same code path after loading).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from metagait_edge.resources import PERSONALIZATION_CHECKPOINTS

log = logging.getLogger(__name__)

SHIPPED_PERSONALIZATION = PERSONALIZATION_CHECKPOINTS / "seed0" / "fold0"
ANGLE_CHANNELS = ("hip_r", "knee_r", "ankle_r", "hip_l", "knee_l", "ankle_l")


class CycleGenerator:
    """One set of weights on one backend: ``model(x)`` maps a generation input [1, C_in, 101] to [1, C, 101]."""

    def __init__(self, backend: str, run: Callable[[np.ndarray], np.ndarray]) -> None:
        self.backend = backend
        self._run = run

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._run(x)

    def __repr__(self) -> str:
        return f"CycleGenerator(backend={self.backend!r})"


def fallback_normalizer(channels: Sequence[str]):
    """Rough HuGaDB-like scales for a model without a checkpoint (acc ~0.5 g, gyro ~100 deg/s, angles ~20 deg)."""
    from metagait_edge.data.normalization import ChannelNormalizer

    mean = np.zeros(len(channels), np.float32)
    std = np.array([0.5 if c.startswith("acc") else 100.0 if c.startswith("gyro") else 20.0 for c in channels], np.float32)
    return ChannelNormalizer(tuple(channels), mean, std, np.zeros(len(channels), np.int64), ())


class Personalizer:
    def __init__(self, maml, normalizer, channels: Sequence[str], source: str) -> None:
        import torch

        from metagait_edge.meta.maml import model_params

        self.maml = maml.eval()
        self.normalizer = normalizer
        self.channels = list(channels)
        self.source = source
        missing = [c for c in ANGLE_CHANNELS if c not in self.channels]
        if missing:
            raise ValueError(f"personalization model {source}: channels lack joint angles {missing}")
        self.angle_index = [self.channels.index(c) for c in ANGLE_CHANNELS]
        self.base = model_params(self.maml.model, detach=True)
        self._torch = torch
        self.backend = "torch"
        self._backend_config = None
        self.base_generator = self.generator()

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    def normalize(self, cycles: np.ndarray) -> np.ndarray:
        return self.normalizer.apply(cycles)

    def params_from(self, weights: Dict[str, np.ndarray]) -> dict:
        torch = self._torch
        unknown = sorted(set(weights) - set(self.base))
        if unknown:
            raise ValueError(f"profile weights {unknown[:3]} do not belong to this model ({self.source})")
        out = dict(self.base)
        for k, v in weights.items():
            t = torch.from_numpy(np.asarray(v, np.float32))
            if t.shape != out[k].shape:
                raise ValueError(f"profile weight {k!r} has shape {tuple(t.shape)}, model expects {tuple(out[k].shape)}")
            out[k] = t
        return out

    # ------------------------------------------------------------------------------ inference backends
    def use_backend(self, kind: str = "auto", onnx: Optional[Path] = None, engine_cache: Optional[Path] = None,
                    precision: str = "fp16") -> str:
        """Run generation on ``kind`` from now on (``auto``: TensorRT, else ONNX Runtime, else torch).

        ``onnx``: the exported model; None exports this model once into the cache (needs the ``onnx``
        package; ``auto`` then falls back to torch without it). Returns the backend chosen. Generators made
        before the call keep their backend.
        """
        from metagait_edge.deploy.backends import BackendConfig, cached_onnx, runtime_kind

        resolved = runtime_kind(kind, onnx is not None)
        if resolved == "torch":
            self.backend, self._backend_config = "torch", None
        else:
            path = self._checked_onnx(Path(onnx)) if onnx is not None else cached_onnx(self.maml.model, "tcn")
            self._backend_config = BackendConfig(kind=resolved, model="tcn", onnx=path, threads=1,
                                                 precision=precision, engine_cache=engine_cache)
            self.backend = resolved
        self.base_generator = self.generator()
        log.info("personalization model %s runs on %s", self.source, self.backend)
        return self.backend

    def _checked_onnx(self, path: Path) -> Path:
        """``path`` if its weights are this checkpoint's: an ONNX file exported from another model would
        silently generate another model's cycles while calibration adapts this one."""
        from metagait_edge.deploy.export import deploy_tcn_module
        from metagait_edge.deploy.onnx_graph import initializer_arrays

        if not path.is_file():
            raise FileNotFoundError(f"personalization ONNX model not found: {path}")
        onnx_values = initializer_arrays(path)
        for name, p in deploy_tcn_module(self.maml.model).named_parameters():
            got = onnx_values.get(name)
            want = p.detach().numpy()
            if got is None or got.size != want.size or not np.allclose(got.reshape(-1), want.reshape(-1), atol=1e-5):
                raise ValueError(f"{path} was not exported from the personalization checkpoint {self.source} "
                                 f"(weight {name!r} differs); re-export it with `metagait-edge export --model tcn` "
                                 f"or leave models.onnx empty to export automatically")
        return path

    def generator(self, weights: Optional[Dict[str, np.ndarray]] = None) -> CycleGenerator:
        """The base model (``weights`` None) or a walker's profile weights on the current backend.

        Building one can take tens of milliseconds (an ONNX Runtime session, a TensorRT refit): do it when
        a profile is loaded or committed, never per cycle.
        """
        torch = self._torch
        params = self.params_from(weights) if weights else self.base  # checks names and shapes first
        if self._backend_config is None:
            def run_torch(x: np.ndarray) -> np.ndarray:
                with torch.no_grad():
                    return self.maml.forward_with(params, torch.from_numpy(x))["output"].numpy()

            return CycleGenerator("torch", run_torch)
        from metagait_edge.deploy.backends import create_backend

        backend = create_backend(self._backend_config)
        if weights:
            backend.swap_weights({k: v.numpy() for k, v in params.items()})
        output = backend.output_name

        def run_backend(x: np.ndarray) -> np.ndarray:
            return backend.run(x)[output]

        return CycleGenerator(backend.name, run_backend)

    def generation_input(self, prev: np.ndarray, template: Optional[np.ndarray], valid: np.ndarray) -> np.ndarray:
        """The model input [1, C_in, 101] for the previous cycle (physical units) and a normalized template."""
        torch = self._torch
        from metagait_edge.personalization.inputs import generation_input

        prev_n = torch.from_numpy(self.normalize(prev))[None]
        tmpl = torch.zeros_like(prev_n) if template is None else torch.from_numpy(np.asarray(template, np.float32))[None]
        v = torch.from_numpy(np.asarray(valid, bool))[None]
        return np.ascontiguousarray(generation_input(prev_n, tmpl, v).numpy(), dtype=np.float32)

    def generate(self, prev: np.ndarray, template: Optional[np.ndarray], valid: np.ndarray,
                 model: Optional[CycleGenerator] = None, residual: Optional[np.ndarray] = None) -> np.ndarray:
        """Next cycle [C, 101] in physical units from the previous one (physical); template and ``residual``
        (a profile's per-phase correction, added to the model's output) normalized."""
        out = np.asarray((model or self.base_generator)(self.generation_input(prev, template, valid))[0], np.float32)
        if residual is not None:
            out = out + np.asarray(residual, np.float32)
        return self.normalizer.invert(out)

    def support_and_query(self, cycles: np.ndarray, valid: np.ndarray, shots: int):
        """MAML support (first ``shots`` cycles) and query (the next one) batches from physical cycles."""
        torch = self._torch
        from metagait_edge.personalization.episodes import CycleTensors, query_batch, support_batch
        from metagait_edge.personalization.inputs import MaskingConfig, channel_sensors
        from metagait_edge.personalization.tasks import Task

        data = CycleTensors(x=torch.from_numpy(self.normalize(cycles)), valid=torch.from_numpy(np.asarray(valid, bool)),
                            channel_to_sensor=channel_sensors(self.channels))
        task = Task(subject=0, condition="walking", support=np.arange(shots), query=np.array([shots]),
                    query_prev=np.array([shots - 1]), recording="device", query_recording="device")
        return (support_batch(data, task, "generation", MaskingConfig()),
                query_batch(data, task, "generation", MaskingConfig()), data)

    def adapt(self, support) -> dict:
        return self.maml.adapt(support.x, support.y, support.mask, differentiable=False)

    def loss(self, params: dict, batch) -> float:
        torch = self._torch
        from metagait_edge.metrics.masked import masked_mse

        with torch.no_grad():
            return float(masked_mse(self.maml.forward_with(params, batch.x)["output"], batch.y, batch.mask))


def load_personalizer(path: str | Path | None = None, seed: int = 0) -> Personalizer:
    """The personalization model: ``path`` is a fold folder (with ``generation/``) or a problem folder
    holding ``maml``/``pooled`` checkpoints; None: the shipped default, else a random-init default model."""
    import torch

    from metagait_edge.data.cycles import cycle_channels
    from metagait_edge.meta.maml import MAML
    from metagait_edge.personalization.config import PersonalizationConfig
    from metagait_edge.personalization.model import CycleModel
    from metagait_edge.personalization.train import model_config

    folder = Path(path) if path is not None else SHIPPED_PERSONALIZATION
    if (folder / "maml.safetensors").is_file():
        folder = folder.parent
    if (folder / "generation" / "maml.safetensors").is_file():
        from metagait_edge.personalization.experiment import load_problem, stored_config

        models = load_problem(stored_config(folder / "generation"), folder, "generation")
        return Personalizer(models.maml, models.normalizer, models.channels, str(folder / "generation"))
    if path is not None:
        raise FileNotFoundError(f"no personalization checkpoint (generation/maml.safetensors) under {folder}")
    config = PersonalizationConfig()
    channels = cycle_channels()
    torch.manual_seed(seed)
    maml = MAML(CycleModel(model_config(config, "generation", len(channels))), config.maml)
    return Personalizer(maml, fallback_normalizer(channels), channels, "random-init (no shipped checkpoint)")

