"""Golden inputs/outputs in polygraphy's JSON formats, for ``polygraphy run --load-inputs/--load-outputs``.

``metagait-edge export --golden DIR`` always writes ``<name>.golden.npz`` (numpy only). Where polygraphy
is installed (the Jetson setup installs it), this module converts it::

    python -m metagait_edge.deploy.golden DIR/tcn.golden.npz
    # -> DIR/tcn.inputs.json, DIR/tcn.outputs.json

and ``polygraphy run model.onnx --trt --load-inputs DIR/tcn.inputs.json --load-outputs
DIR/tcn.outputs.json --atol ... --rtol ...`` compares a TensorRT engine against the PyTorch reference.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Sequence, Union

from metagait_edge.deploy.export import load_golden

REFERENCE_RUNNER = "pytorch-reference"


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
