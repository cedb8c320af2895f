from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from metagait_edge import cli
from metagait_edge.recognition import SHIPPED_VARIANTS, shipped_checkpoint_dir

from committed_reports import report_body

REPO = Path(__file__).resolve().parents[1]

# A small evaluation set: 2 validation + 3 test identities, 2 views, all 10 types, 30 frames, clean masks.
TINY_EVAL = {"seed": 11, "train_ids": 24, "val_ids": 2, "test_ids": 3, "full_test_ids": 3, "views": [0, 90],
             "min_frames": 30, "max_frames": 30, "defects": False}


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METAGAIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_shipped_checkpoints_are_small_and_complete():
    folder = shipped_checkpoint_dir()
    for variant in SHIPPED_VARIANTS:
        weights = folder / f"{variant}.safetensors"
        meta = json.loads((folder / f"{variant}.json").read_text())
        assert weights.stat().st_size < 2 * 1024 * 1024, weights
        assert meta["weights_file"] == weights.name and meta["extra"]["variant"] == variant
        assert meta["config"]["data"]["dataset"] == "synthetic"
    # they come from the documented CPU config (same data, schedule and model apart from the variant switches)
    from metagait_edge.config import to_dict
    from metagait_edge.recognition.config import load_recognition_config, with_variant

    cpu = load_recognition_config(REPO / "training/configs/recognition_synthetic_cpu.yaml")
    for variant in SHIPPED_VARIANTS:
        stored = json.loads((folder / f"{variant}.json").read_text())["config"]
        expected = to_dict(with_variant(cpu, variant))
        for key in ("model", "loss", "data", "eval"):
            assert stored[key] == expected[key], (variant, key)
        assert {k: v for k, v in stored["train"].items() if k != "seed"} == \
            {k: v for k, v in expected["train"].items() if k != "seed"}, variant


def test_commands_are_registered_and_help_is_light():
    parser = cli.build_parser()
    names = parser._subparsers._group_actions[0].choices  # argparse keeps sub-commands here
    assert "train-recognition" in names and "eval-recognition" in names


def test_train_recognition_unknown_key_is_one_clear_error(tmp_path, capsys):
    cfg = yaml.safe_load((REPO / "training/configs/recognition_synthetic_cpu.yaml").read_text())
    cfg["train"]["itterations"] = 5
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli.main(["train-recognition", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "train.itterations" in err and str(path) in err


def test_eval_recognition_missing_checkpoint_names_the_file(tmp_path, capsys):
    assert cli.main(["eval-recognition", "--quick", "--checkpoints", str(tmp_path), "--markdown", ""]) == 1
    err = capsys.readouterr().err
    assert "baseline.safetensors" in err and str(tmp_path) in err


@pytest.mark.slow
def test_eval_recognition_quick_json_and_markdown(cache, tmp_path, capsys):
    data_cfg = tmp_path / "tiny_eval.yaml"
    data_cfg.write_text(yaml.safe_dump(TINY_EVAL))
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    code = cli.main(["eval-recognition", "--quick", "--json", str(out_json), "--markdown", str(out_md),
                     "--data-config", str(data_cfg), "--no-profile"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "NM" in printed and "p/g" in printed  # the probe x gallery table of the full model
    payload = json.loads(out_json.read_text())
    assert set(payload) == {"dataset", "results"} and isinstance(payload["dataset"], str)
    assert "quick" in payload["dataset"] and "027..029" in payload["dataset"]  # test ids after train + val
    assert set(payload["results"]) == set(SHIPPED_VARIANTS)
    for variant, numbers in payload["results"].items():
        assert set(numbers) == {"NM", "BG", "CL", "mAP"}, variant
        for key, value in numbers.items():
            assert isinstance(value, float) and not math.isnan(value) and 0.0 <= value <= 100.0, (variant, key)
    md = out_md.read_text()
    assert "Open set" in md and "test FAR %" in md and "quick test set" in md
    for variant in SHIPPED_VARIANTS:
        assert f"| {variant} |" in md


def test_eval_recognition_writes_a_document_only_where_asked(tmp_path, monkeypatch):
    """Without --markdown only the printout (and --json): the tracked docs/results/recognition.md stays as it is."""
    import numpy as np

    import metagait_edge.recognition.metrics as ER
    from metagait_edge.recognition import evaluate as E

    summary = {"NM": 90.0, "BG": 80.0, "CL": 70.0, "mAP": 60.0}
    monkeypatch.setattr(E, "test_indices", lambda data, quick: (None, np.arange(3)))
    monkeypatch.setattr(E, "load_frames", lambda index: None)
    monkeypatch.setattr(E, "evaluate_model", lambda *a, **k: {"result": None, "summary": summary})
    monkeypatch.setattr(E, "describe_test_set", lambda data, quick: "stub test set")
    monkeypatch.setattr(ER, "format_result", lambda result, full_tables=False: "")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["eval-recognition", "--quick", "--variants", "baseline", "--json", "r.json"]) == 0
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["r.json"]
    assert json.loads((tmp_path / "r.json").read_text())["results"] == {"baseline": summary}


@pytest.mark.slow
def test_committed_recognition_report_is_what_its_command_makes(tmp_path, monkeypatch):
    """docs/results/recognition.md (quick test set) is what `eval-recognition --quick` makes (bar provenance, latency)."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["eval-recognition", "--quick", "--markdown", "r.md", "--no-profile"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.md"]
    latency = ("## Model size and CPU latency",)
    made = report_body((tmp_path / "r.md").read_text(), latency)
    committed = report_body((REPO / "docs" / "results" / "recognition.md").read_text(), latency)
    assert made == committed, "docs/results/recognition.md is stale: regenerate it with the command in its first lines"
