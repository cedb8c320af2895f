"""The code must run on Python 3.10 (Jetson JetPack 6, ROS 2 Humble) although development happens on newer ones."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for folder in ("metagait_edge", "training", "deploy", "ros2_ws", "tests", "benchmarks")
                 for p in (REPO / folder).rglob("*.py") if ".venv" not in p.parts)


def test_the_project_has_sources_to_check():
    assert len(SOURCES) > 50


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_source_parses_with_python_3_10_grammar(path):
    # feature_version makes the parser reject syntax newer than 3.10 (e.g. except*) that 3.10 cannot run.
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 10))
