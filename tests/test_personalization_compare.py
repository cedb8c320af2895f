"""Side-by-side comparison of personalization results (training/compare_personalization.py)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metagait_edge.personalization.report import best_baseline, comparison_table, paired_comparison, verdict

REPO = Path(__file__).resolve().parents[1]


def payload(maml_mse: float, maml_dtw: float) -> dict:
    cell = {
        "maml": {"mse": maml_mse, "dtw": maml_dtw},
        "pooled": {"mse": 0.20, "dtw": 20.0},
        "copy_previous": {"mse": 0.30, "dtw": 19.0},
        "gap_closed": {"maml": 0.25, "pooled_finetune": 0.1},
    }
    return {"results": {"generation": {"5": cell}}}


def test_best_baseline_ignores_maml_and_the_gap_entry():
    cell = payload(0.1, 10.0)["results"]["generation"]["5"]
    assert best_baseline(cell, "mse") == ("pooled", 0.20)
    assert best_baseline(cell, "dtw") == ("copy_previous", 19.0)


def test_comparison_marks_where_maml_beats_the_best_baseline_per_result():
    lines = comparison_table({"a": payload(0.19, 19.5), "b": payload(0.21, 18.5)})
    mse = next(line for line in lines if "| MSE |" in line)
    dtw = next(line for line in lines if "| DTW |" in line)
    gap = next(line for line in lines if "gap closed" in line)
    assert "**0.19**" in mse and "**0.21**" not in mse
    assert "**18.5**" in dtw and "**19.5**" not in dtw
    assert "25 %" in gap and "fine-tuning 10 %" in gap


def test_compare_script_writes_its_tables_and_command_and_rejects_a_missing_file(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(payload(0.19, 19.5)))
    b.write_text(json.dumps(payload(0.21, 18.5)))
    out = tmp_path / "cmp.md"
    script = REPO / "training" / "compare_personalization.py"
    ok = subprocess.run([sys.executable, str(script), "--table", "both", f"mse={a}", f"sdtw={b}",
                         "--table", "one", f"mse={a}", "--out", str(out), "--note", "why"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    text = out.read_text()
    assert "## both" in text and "## one" in text and "sdtw: best baseline" in text and text.rstrip().endswith("why")
    assert "--table both" in text  # the command that made it
    bad = subprocess.run([sys.executable, str(script), "--table", "t", f"x={tmp_path / 'nope.json'}"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "nope.json" in bad.stderr


def test_report_states_each_problems_training_loss():
    from metagait_edge.personalization.report import training_loss_lines

    assert training_loss_lines({}) == []
    line, = training_loss_lines({
        "generation": {"sdtw_weight": 20.0, "sdtw_gamma": 0.1, "sdtw_points": 51, "shape_steps": 100},
        "reconstruction": {"sdtw_weight": 0.0, "sdtw_gamma": 0.1, "sdtw_points": 0, "shape_steps": 0},
    })
    assert "generation: MSE + 20 x soft-DTW divergence (gamma 0.1, cycles resampled to 51 points)" in line
    assert "then 100 steps with the shape term" in line and "reconstruction: MSE." in line


def per_walker_cell(maml: list, pooled: list) -> dict:
    """Per-walker MSEs as the JSON stores them (walker ids as strings)."""
    return {"maml": {"mse": {str(w): v for w, v in enumerate(maml)}},
            "pooled": {"mse": {str(w): v for w, v in enumerate(pooled)}}}


def test_paired_comparison_counts_walkers_and_finds_a_consistent_small_gain_significant():
    pooled = [0.10 + 0.02 * w for w in range(12)]  # walkers differ far more than the methods do
    consistent = paired_comparison(per_walker_cell([v - 0.001 for v in pooled], pooled), "mse", "pooled")
    assert consistent["walkers"] == 12 and consistent["wins"] == 12
    assert abs(consistent["mean_diff"] + 0.001) < 1e-12 and consistent["p"] < 0.01
    mixed = [v - 0.003 if w % 2 else v + 0.002 for w, v in enumerate(pooled)]  # lower mean, walkers disagree
    split = paired_comparison(per_walker_cell(mixed, pooled), "mse", "pooled")
    assert split["wins"] == 6 and split["mean_diff"] < 0 and split["p"] > 0.05


def test_verdict_states_per_walker_agreement_and_significance():
    cell = payload(0.19, 19.5)["results"]["generation"]["5"]
    pooled = [0.10 + 0.02 * w for w in range(8)]
    walkers = {"generation": {"5": {**per_walker_cell([v - 0.001 for v in pooled], pooled),
                                    "copy_previous": {"dtw": {}}}}}
    mse_line = next(line for line in verdict({"generation": {"5": cell}}, walkers) if "MSE" in line)
    assert "beats the best baseline (pooled TCN 0.2)" in mse_line
    assert "lower for 8 of 8" in mse_line and "significant at 0.05" in mse_line and "not significant" not in mse_line
    plain = verdict({"generation": {"5": cell}})
    assert not any("per walker" in line for line in plain)


def test_notes_file_paragraphs_become_one_line_each_and_a_missing_file_is_named(tmp_path):
    from metagait_edge.personalization.report import paragraphs

    notes = tmp_path / "notes.md"
    notes.write_text("First note,\nwrapped over\n  two lines.\n\n\nSecond note.\n", encoding="utf-8")
    assert paragraphs(notes) == ["First note, wrapped over two lines.", "Second note."]
    with pytest.raises(FileNotFoundError, match="missing.md"):
        paragraphs(tmp_path / "missing.md")
