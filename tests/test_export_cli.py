"""``metagait-edge export`` and ``build-engine`` commands."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from metagait_edge.cli import main  # noqa: E402
from metagait_edge import hashing  # noqa: E402
from metagait_edge.deploy import golden, onnx_graph  # noqa: E402


def test_export_tcn_with_golden_and_adapted_weights(tmp_path, capsys):
    out = tmp_path / "tcn.onnx"
    assert main(["export", "--model", "tcn", "--channels", "3", "--out", str(out), "--golden", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "random weights" in text and "parity   : onnxruntime vs torch on realistic" in text
    gold = golden.load_golden(tmp_path / "tcn.golden.npz")
    assert gold.inputs["cycles"].shape == (2, 9, 101) and gold.outputs["output"].shape == (2, 3, 101)
    # The golden outputs come from PyTorch, and the exported graph reproduces them.
    import onnxruntime as ort

    (got,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, gold.inputs)
    golden.compare({"output": got}, gold.outputs, gold.atol, gold.rtol)
    assert np.abs(gold.outputs["output"] - gold.inputs["cycles"][:, 3:6]).max() > 1e-3  # not just the template

    from safetensors.torch import save_file

    from metagait_edge.commands.export import load_tcn

    model = load_tcn(None, 3)
    fast = {n: (p.detach() + 0.01 * torch.randn_like(p)).contiguous() for n, p in model.named_parameters()}
    save_file(fast, str(tmp_path / "fast.safetensors"))
    adapted = tmp_path / "adapted.onnx"
    assert main(["export", "--model", "tcn", "--channels", "3", "--out", str(adapted),
                 "--adapted", str(tmp_path / "fast.safetensors")]) == 0
    assert onnx_graph.graph_fingerprint(adapted) == onnx_graph.graph_fingerprint(out)
    assert hashing.file_sha256(adapted) != hashing.file_sha256(out)


def test_export_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["export", "--model", "tcn", "--channels", "3", "--out", str(tmp_path / "x.onnx"),
                 "--adapted", str(tmp_path / "missing.safetensors")]) == 1
    assert "missing.safetensors" in capsys.readouterr().err
    assert main(["export", "--model", "recognition", "--out", str(tmp_path / "r.onnx"),
                 "--adapted", "x.safetensors"]) == 1
    assert "--adapted applies to --model tcn" in capsys.readouterr().err
    assert main(["export", "--model", "tcn", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "y.onnx")]) == 1
    assert "nope.safetensors" in capsys.readouterr().err


def test_build_engine_list_and_missing_tensorrt(tmp_path, capsys):
    from metagait_edge.deploy.engine import EngineCache, engine_cache_key

    cache = EngineCache(tmp_path / "engines")
    key = engine_cache_key("a" * 64, "10.3.0", "Orin", "fp16", refit=True)
    cache.store(key, b"x" * 10, {"precision": "fp16", "refit": True, "tensorrt": "10.3.0", "gpu": "Orin", "onnx": "tcn.onnx"})
    assert main(["build-engine", "--list", "--cache", str(tmp_path / "engines")]) == 0
    text = capsys.readouterr().out
    assert key in text and "1 engine(s)" in text and "Orin" in text
    if importlib.util.find_spec("tensorrt") is None:
        assert main(["build-engine", "--onnx", "whatever.onnx"]) == 1
        assert "needs TensorRT" in capsys.readouterr().err


def test_jetson_files_are_consistent():
    import subprocess
    from pathlib import Path

    from metagait_edge.config import load_config
    from metagait_edge.runtime.config import EdgeConfig

    root = Path(__file__).resolve().parent.parent / "deploy" / "jetson"
    unit = (root / "metagait-edge.service").read_text()
    lines = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in unit.splitlines() if "=" in line and not line.startswith("#")}
    assert lines["ExecStart"] == "@VENV@/bin/metagait-edge run --config /etc/metagait-edge/edge.yaml"
    assert lines["Restart"] == "on-failure" and lines["WantedBy"] == "multi-user.target"
    config = load_config(EdgeConfig, root / "edge.yaml")  # the file `run` loads: strict schema
    assert config.models.backend == "auto" and config.models.engine_cache is not None
    assert 0 < config.runtime.realtime_priority <= int(lines["LimitRTPRIO"])
    assert [s.kind for s in config.sources] == ["serial", "camera"]
    setup = root / "setup.sh"
    assert subprocess.run(["bash", "-n", str(setup)], capture_output=True).returncode == 0
    text = setup.read_text()
    for placeholder in ("@VENV@", "@USER@", "@PREFIX@"):
        assert placeholder in unit and placeholder in text  # every placeholder is filled in by setup.sh
    assert "build-engine" in text and "--system-site-packages" in text


def test_golden_files_pass_polygraphy_run_on_onnxruntime(tmp_path):
    """The same golden files a Jetson checks against TensorRT, checked here by polygraphy on ONNX Runtime."""
    import shutil
    import subprocess
    import sys

    if importlib.util.find_spec("polygraphy") is None:
        pytest.skip("polygraphy is not installed (pip install -e '.[export]')")
    out = tmp_path / "tcn.onnx"
    assert main(["export", "--model", "tcn", "--channels", "3", "--out", str(out), "--golden", str(tmp_path)]) == 0
    inputs, outputs = tmp_path / "tcn.inputs.json", tmp_path / "tcn.outputs.json"
    assert inputs.is_file() and outputs.is_file()
    exe = shutil.which("polygraphy") or str(Path(sys.executable).with_name("polygraphy"))
    run = subprocess.run([exe, "run", str(out), "--onnxrt", "--load-inputs", str(inputs), "--load-outputs",
                          str(outputs), "--atol", "1e-4", "--rtol", "1e-4"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "PASSED" in run.stdout + run.stderr


def test_export_of_the_shipped_personalization_checkpoint_matches_torch(tmp_path, capsys):
    from metagait_edge.personalization.runner import DEFAULT_CHECKPOINTS

    ckpt = DEFAULT_CHECKPOINTS / "seed0" / "fold0" / "generation" / "maml"
    if not ckpt.with_suffix(".safetensors").is_file():
        pytest.skip(f"no shipped checkpoint at {ckpt}")
    out = tmp_path / "shipped.onnx"
    assert main(["export", "--model", "tcn", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "parity   : onnxruntime vs torch on realistic" in text
    from metagait_edge.commands.export import load_tcn

    model = load_tcn(str(ckpt))
    assert "blend_logit" in dict(model.named_parameters())  # the shipped generation model's learned blend
