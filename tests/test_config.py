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


def test_extends_merges_a_base_file_relative_to_the_extending_one(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "outer.yaml").write_text("name: base\ninner: {width: 8, rate: 0.5}\nlayers: [1, 2, 3]\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base/outer.yaml\ninner: {rate: 0.25}\nlayers: [7]\n")
    cfg = load_config(Outer, child)
    # mappings merge key by key (width from the base), lists are replaced, not appended
    assert cfg == Outer(name="base", inner=Inner(width=8, rate=0.25), layers=[7])
    grandchild = tmp_path / "grandchild.yaml"
    grandchild.write_text("extends: child.yaml\nname: gc\n")
    assert load_config(Outer, grandchild) == Outer(name="gc", inner=Inner(width=8, rate=0.25), layers=[7])


def test_extends_keeps_unknown_keys_errors_and_refuses_cycles(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\n")
    typo = tmp_path / "typo.yaml"
    typo.write_text("extends: base.yaml\ninner: {widht: 3}\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml.*inner\.widht"):
        load_config(Outer, typo)
    (tmp_path / "bad_base.yaml").write_text("name: x\nbogus: 1\n")
    (tmp_path / "on_bad.yaml").write_text("extends: bad_base.yaml\n")
    with pytest.raises(ConfigError, match="bogus"):
        load_config(Outer, tmp_path / "on_bad.yaml")
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    with pytest.raises(ConfigError, match=r"cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_config(Outer, tmp_path / "a.yaml")
    (tmp_path / "self.yaml").write_text("extends: self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(Outer, tmp_path / "self.yaml")
    (tmp_path / "lost.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"nowhere\.yaml.*extended by"):
        load_config(Outer, tmp_path / "lost.yaml")
    (tmp_path / "nested.yaml").write_text("name: x\ninner: {extends: base.yaml}\n")
    with pytest.raises(ConfigError, match=r"inner\.extends"):  # only the top level extends
        load_config(Outer, tmp_path / "nested.yaml")
