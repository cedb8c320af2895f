"""The library's one-way import rule (docs/CONTRIBUTING.md), checked on the source, not at import time.

Imports inside functions count as much as module-level ones: the library imports its heavy or optional
parts lazily, so import order alone would never reveal a backward edge.

- ``commands/`` is the top: only ``cli.py`` and ``__main__.py`` import it;
- the top-level parts of ``metagait_edge`` (each sub-package, each top-level module) import each other
  without cycles;
- no library file is over 500 lines;
- no ``load_state_dict(..., strict=False)`` without a missing-key check in the same function.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "metagait_edge"
MAX_LINES = 500
ENTRY_POINTS = {"cli", "__main__", "__init__"}  # may import commands/


@dataclass(frozen=True)
class Edge:
    src: str  # importing part
    dst: str  # imported part
    where: str  # file:line of the import


def _module_name(path: Path, package: Path) -> list[str]:
    parts = [package.name, *path.relative_to(package).with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def _part(dotted: list[str], package: Path) -> str | None:
    """The top-level part of a module path inside the package: ``metagait_edge.X[...]`` -> ``X``."""
    if len(dotted) < 2 or dotted[0] != package.name:
        return None
    return dotted[1]


def _imported(node: ast.AST, module: list[str], is_package: bool) -> list[list[str]]:
    """Dotted names an import statement (or ``importlib.import_module("...")``) brings in."""
    if isinstance(node, ast.Import):
        return [a.name.split(".") for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module if is_package else module[:-1]
            base = base[: len(base) - (node.level - 1)]
        else:
            base = []
        head = base + (node.module.split(".") if node.module else [])
        # "from metagait_edge import commands" imports the sub-package itself.
        return [head + [a.name] for a in node.names] if node.module is None or node.level == 0 else [head]
    if (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return [node.args[0].value.split(".")]
    return []


def import_edges(package: Path) -> list[Edge]:
    edges = []
    for path in sorted(package.rglob("*.py")):
        module = _module_name(path, package)
        me = _part(module, package) or "__init__"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for dotted in _imported(node, module, path.name == "__init__.py"):
                dst = _part(dotted, package)
                if dst is not None and dst != me:
                    edges.append(Edge(me, dst, f"{path.relative_to(package.parent)}:{node.lineno}"))
    return edges


def commands_importers(package: Path) -> list[Edge]:
    return [e for e in import_edges(package) if e.dst == "commands" and e.src not in ENTRY_POINTS]


def cycles(package: Path) -> list[list[Edge]]:
    """One cycle (as its import sites) per strongly connected group of parts."""
    edges = import_edges(package)
    graph: dict[str, dict[str, Edge]] = {}
    for e in edges:
        graph.setdefault(e.src, {}).setdefault(e.dst, e)
    found, seen = [], set()
    for start in sorted(graph):
        if start in seen:
            continue
        # Breadth-first search for the shortest path from start back to itself.
        paths = {start: []}
        queue = [start]
        loop = None
        while queue and loop is None:
            node = queue.pop(0)
            for nxt, edge in sorted(graph.get(node, {}).items()):
                if nxt == start:
                    loop = paths[node] + [edge]
                    break
                if nxt not in paths:
                    paths[nxt] = paths[node] + [edge]
                    queue.append(nxt)
        if loop:
            seen.update(e.src for e in loop)
            found.append(loop)
    return found


def long_files(package: Path, limit: int = MAX_LINES) -> list[str]:
    out = []
    for path in sorted(package.rglob("*.py")):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            out.append(f"{path.relative_to(package.parent)}: {n} lines")
    return out


def _checks_missing_keys(func: ast.AST) -> bool:
    """The function looks at missing keys and raises: ``missing`` appears in a name or attribute, plus a raise."""
    names = {n.id for n in ast.walk(func) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(func) if isinstance(n, ast.Attribute)}
    return any("missing" in n for n in names) and any(isinstance(n, ast.Raise) for n in ast.walk(func))


def loose_state_loads(package: Path) -> list[str]:
    out = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] + [tree]
        reported = set()
        for scope in scopes:
            for call in ast.walk(scope):
                if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                        and call.func.attr == "load_state_dict"):
                    continue
                strict = next((k.value for k in call.keywords if k.arg == "strict"), None)
                loose = not (isinstance(strict, ast.Constant) and strict.value is True) and strict is not None
                if loose and call.lineno not in reported and not _checks_missing_keys(scope):
                    reported.add(call.lineno)
                    out.append(f"{path.relative_to(package.parent)}:{call.lineno}")
    return out


# ----------------------------------------------------------------------------------------------------
# The rule on the library


def test_only_the_cli_imports_commands():
    bad = commands_importers(PACKAGE)
    assert not bad, "library modules import metagait_edge.commands (move the code out of the CLI layer): " + \
        ", ".join(f"{e.src} at {e.where}" for e in bad)


def test_no_import_cycle_between_top_level_parts():
    found = cycles(PACKAGE)
    assert not found, "import cycles between parts of metagait_edge:\n" + "\n".join(
        " -> ".join([c[0].src] + [f"{e.dst} ({e.where})" for e in c]) for c in found)


def test_no_library_file_over_500_lines():
    assert not long_files(PACKAGE), f"split these files by concept: {long_files(PACKAGE)}"


def test_no_state_dict_load_that_ignores_missing_keys():
    assert not loose_state_loads(PACKAGE), ("load_state_dict(strict=False) without a missing-key check at "
                                            f"{loose_state_loads(PACKAGE)}; use strict loading or check and raise")


def test_the_checks_see_the_whole_library():
    edges = import_edges(PACKAGE)
    assert {"runtime", "ros", "imu", "recognition", "deploy", "data"} <= {e.src for e in edges}
    # Function-level imports are seen: cli.py imports commands only inside functions.
    assert any(e.src == "cli" and e.dst == "commands" for e in edges)


# ----------------------------------------------------------------------------------------------------
# The checks themselves catch what they are for (a small package in tmp_path)


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "metagait_edge"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_the_checks_catch_a_backward_import_a_function_level_cycle_a_long_file_and_a_loose_load(tmp_path):
    pkg = _package(tmp_path, {
        "commands/__init__.py": "",
        "commands/sim.py": "from metagait_edge.runtime import worker\n",
        "runtime/__init__.py": "",
        "runtime/worker.py": """
            def replay():
                from metagait_edge.commands.sim import samples  # library code in the CLI layer
            def record():
                from ..ros import msgs
            """,
        "ros/__init__.py": "",
        "ros/msgs.py": "import importlib\nmod = importlib.import_module('metagait_edge.runtime.worker')\n",
        "cli.py": "def main():\n    from metagait_edge import commands\n",
        "big.py": "x = 1\n" * (MAX_LINES + 1),
        "load.py": """
            def loose(model, state):
                model.load_state_dict(state, strict=False)
            def checked(model, state):
                result = model.load_state_dict(state, strict=False)
                if result.missing_keys:
                    raise KeyError(result.missing_keys)
            def strict(model, state):
                model.load_state_dict(state, strict=True)
            """,
    })
    assert [(e.src, e.where) for e in commands_importers(pkg)] == [("runtime", "metagait_edge/runtime/worker.py:3")]
    groups = [sorted({e.src for e in c}) for c in cycles(pkg)]
    assert ["commands", "runtime"] in groups and ["ros", "runtime"] in groups
    assert long_files(pkg) == [f"metagait_edge/big.py: {MAX_LINES + 1} lines"]
    assert loose_state_loads(pkg) == ["metagait_edge/load.py:3"]


def test_a_clean_package_passes(tmp_path):
    pkg = _package(tmp_path, {
        "commands/__init__.py": "from metagait_edge.runtime import worker\n",
        "runtime/__init__.py": "",
        "runtime/worker.py": "def f():\n    from metagait_edge.imu import protocol\n",
        "imu/__init__.py": "",
        "imu/protocol.py": "import numpy\n",
        "__main__.py": "from metagait_edge.commands import run\n",
    })
    assert not commands_importers(pkg) and not cycles(pkg) and not long_files(pkg) and not loose_state_loads(pkg)


@pytest.mark.parametrize("line, target", [
    ("from . import msgs", ["metagait_edge", "ros", "msgs"]),
    ("from .msgs import schema", ["metagait_edge", "ros", "msgs"]),
    ("from ..runtime import camera", ["metagait_edge", "runtime"]),
    ("from metagait_edge import commands", ["metagait_edge", "commands"]),
])
def test_relative_imports_resolve_from_a_sub_package_module(line, target):
    node = ast.parse(line).body[0]
    got = _imported(node, ["metagait_edge", "ros", "bag"], is_package=False)
    assert got[0][:len(target)] == target


def test_public_class_names_are_not_defined_twice():
    """A name means one thing across the library (issue 19: Task, Recording, TrainConfig meant two each)."""
    homes: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                homes.setdefault(node.name, []).append(str(path.relative_to(PACKAGE.parent)))
    twice = {name: paths for name, paths in homes.items() if len(paths) > 1}
    assert not twice, f"public classes defined in more than one module: {twice}"
