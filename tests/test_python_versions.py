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


# Standard-library names that Python 3.10 lacks (added in 3.11 or 3.12): the grammar check above cannot see
# them, and they fail only when the line runs on the robot.
NEWER_MODULES = {"tomllib": "3.11", "wsgiref.types": "3.11"}
NEWER_NAMES = {
    "typing": {"Self", "LiteralString", "Never", "assert_never", "assert_type", "reveal_type", "Required",
               "NotRequired", "TypeVarTuple", "Unpack", "dataclass_transform", "get_overloads", "clear_overloads",
               "override", "TypeAliasType"},
    "enum": {"StrEnum", "ReprEnum", "EnumCheck", "FlagBoundary", "verify", "member", "nonmember", "global_enum",
             "property", "show_flag_values"},
    "datetime": {"UTC"},
    "asyncio": {"TaskGroup", "timeout", "timeout_at", "Runner", "Barrier", "BrokenBarrierError"},
    "contextlib": {"chdir"},
    "hashlib": {"file_digest"},
    "operator": {"call"},
    "math": {"exp2", "cbrt"},
    "itertools": {"batched"},
    "logging": {"getLevelNamesMapping"},
    "inspect": {"getmembers_static", "markcoroutinefunction"},
    "re": {"NOFLAG"},
}
NEWER_BUILTINS = {"ExceptionGroup", "BaseExceptionGroup"}
NEWER_METHODS = {"add_note"}  # BaseException.add_note (3.11)


def newer_than_310(source: str) -> list[str]:
    """``line: what`` for each use of a standard-library API that Python 3.10 does not have."""
    tree = ast.parse(source)
    modules: dict[str, str] = {}  # local name -> module
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in NEWER_MODULES:
                    found.append(f"{node.lineno}: import {a.name}")
                modules[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in NEWER_MODULES:
                found.append(f"{node.lineno}: from {node.module}")
            found += [f"{node.lineno}: {node.module}.{a.name}" for a in node.names
                      if a.name in NEWER_NAMES.get(node.module, ())]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = modules.get(node.value.id)
            if module is not None and node.attr in NEWER_NAMES.get(module, ()):
                found.append(f"{node.lineno}: {module}.{node.attr}")
        if isinstance(node, ast.Name) and node.id in NEWER_BUILTINS:
            found.append(f"{node.lineno}: {node.id}")
        if isinstance(node, ast.Attribute) and node.attr in NEWER_METHODS:
            found.append(f"{node.lineno}: .{node.attr}()")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_source_uses_no_standard_library_api_newer_than_3_10(path):
    assert not newer_than_310(path.read_text(encoding="utf-8")), f"{path}: not in Python 3.10"


def test_the_api_check_catches_what_3_10_lacks():
    src = ("import tomllib\nimport typing as t\nfrom typing import Self\nimport datetime\n"
           "x: t.Never\ny = datetime.UTC\ntry:\n    pass\nexcept ExceptionGroup as e:\n    e.add_note('x')\n")
    assert newer_than_310(src) == ["1: import tomllib", "3: typing.Self", "5: typing.Never", "6: datetime.UTC",
                                   "9: ExceptionGroup", "10: .add_note()"]
    assert newer_than_310("import typing\nfrom typing import Optional\nx: typing.Optional[int]\n") == []
