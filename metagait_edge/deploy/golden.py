"""Golden files: inputs, reference outputs and tolerances of an exported graph, and their comparison.

``metagait-edge export --golden DIR`` always writes ``<name>.golden.npz`` (numpy only, :func:`save_golden`).
Where polygraphy is installed (the Jetson setup installs it), this module converts it to polygraphy's JSON
formats, for ``polygraphy run --load-inputs/--load-outputs``::

    python -m metagait_edge.deploy.golden DIR/tcn.golden.npz
    # -> DIR/tcn.inputs.json, DIR/tcn.outputs.json

and ``polygraphy run model.onnx --trt --load-inputs DIR/tcn.inputs.json --load-outputs
DIR/tcn.outputs.json --atol ... --rtol ...`` compares a TensorRT engine against the PyTorch reference.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Union

import numpy as np

from metagait_edge.atomic import atomic_write_bytes

PathLike = Union[str, "os.PathLike[str]"]
REFERENCE_RUNNER = "pytorch-reference"


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


def polygraphy_paths(npz_path: Union[str, Path]) -> tuple[Path, Path]:
    path = Path(npz_path)
    stem = path.name[: -len(".golden.npz")] if path.name.endswith(".golden.npz") else path.stem
    return path.with_name(f"{stem}.inputs.json"), path.with_name(f"{stem}.outputs.json")


def write_polygraphy_json(npz_path: Union[str, Path]) -> List[Path]:
    """Write polygraphy's input list and RunResults JSON beside a golden npz; returns their paths."""
    from polygraphy.comparator import RunResults
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.json import save_json

    golden = load_golden(npz_path)
    inputs_path, outputs_path = polygraphy_paths(npz_path)
    save_json([dict(golden.inputs)], str(inputs_path), description="metagait-edge golden inputs")
    results = RunResults()
    results.append((REFERENCE_RUNNER, [IterationResult(dict(golden.outputs), runner_name=REFERENCE_RUNNER)]))
    results.save(str(outputs_path))
    return [inputs_path, outputs_path]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: python -m metagait_edge.deploy.golden GOLDEN.npz [...]", file=sys.stderr)
        return 2
    for arg in argv:
        for path in write_polygraphy_json(arg):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
