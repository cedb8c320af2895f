from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional, Tuple

import pytest

from metagait_edge.config import ConfigError, dump_yaml, from_dict, load_config


@dataclass
class Inner:
    width: int = 32
    rate: float = 0.1
    kind: Literal["causal", "whole"] = "whole"


@dataclass
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    layers: List[int] = field(default_factory=lambda: [1, 2])
    shape: Tuple[int, int] = (64, 44)
    out: Optional[Path] = None


def test_nested_values_are_typed():
    cfg = from_dict(Outer, {"name": "x", "inner": {"width": 8, "rate": 1}, "shape": [32, 22], "out": "a/b"})
    assert cfg.inner.width == 8 and isinstance(cfg.inner.rate, float)
    assert cfg.shape == (32, 22) and cfg.out == Path("a/b")


def test_unknown_key_is_an_error_naming_the_path():
    with pytest.raises(ConfigError, match=r"inner\.widht"):
        from_dict(Outer, {"name": "x", "inner": {"widht": 8}})


@pytest.mark.parametrize(
    "data, pattern",
    [
        ({"name": 3}, "name"),
        ({"name": "x", "inner": {"width": "8"}}, "inner.width"),
        ({"name": "x", "inner": {"width": True}}, "inner.width"),
        ({"name": "x", "inner": {"kind": "sideways"}}, "inner.kind"),
        ({"name": "x", "shape": [1, 2, 3]}, "shape"),
        ({}, "missing required key"),
    ],
)
def test_wrong_values_are_errors(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        from_dict(Outer, data)


def test_yaml_round_trip(tmp_path):
    cfg = from_dict(Outer, {"name": "x", "layers": [3], "out": "p"})
    path = tmp_path / "c.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(Outer, path) == cfg


def test_yaml_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nbogus: 1\n")
    with pytest.raises(ConfigError, match="bad.yaml.*bogus"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.yaml")
