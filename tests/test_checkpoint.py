from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from metagait_edge.checkpoint import (
    CheckpointError,
    git_commit,
    load_checkpoint,
    load_into,
    save_checkpoint,
    sidecar_path,
)
from metagait_edge.meta import MAML, MAMLConfig
from metagait_edge.models import TCN, TCNConfig

CFG = TCNConfig(in_channels=3, out_channels=3, hidden_channels=8, levels=2, min_receptive_field=0)


def test_round_trip(tmp_path):
    model = TCN(CFG)
    norm = {"mean": np.arange(3, dtype=np.float32), "std": torch.ones(3), "channels": ["a", "b", "c"]}
    wpath = save_checkpoint(
        tmp_path / "ckpt" / "tcn", model, CFG, normalization=norm, data_fingerprint="sha256:abc",
        metrics={"query_mse": np.float32(0.25)},
    )
    assert wpath.name == "tcn.safetensors" and sidecar_path(wpath).is_file()
    ckpt = load_checkpoint(wpath, expected_config=CFG)
    assert ckpt.model_class == "TCN" and ckpt.data_fingerprint == "sha256:abc"
    assert ckpt.normalization == {"mean": [0.0, 1.0, 2.0], "std": [1.0, 1.0, 1.0], "channels": ["a", "b", "c"]}
    assert ckpt.metrics["query_mse"] == pytest.approx(0.25)
    assert ckpt.config["hidden_channels"] == 8
    assert ckpt.git_commit == git_commit() and re.fullmatch(r"unknown|[0-9a-f]{40}(-dirty)?", ckpt.git_commit)
    assert ckpt.created.endswith("+00:00")
    fresh = TCN(CFG)
    load_into(fresh, tmp_path / "ckpt" / "tcn", expected_config=CFG)
    for (n, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), n
    x = torch.randn(1, 3, 20)
    assert torch.equal(model(x)["output"], fresh(x)["output"])
    # the safetensors file holds only tensors (no pickle) and the sidecar is plain JSON
    assert json.loads(sidecar_path(wpath).read_text())["weights_file"] == "tcn.safetensors"


def test_maml_wrapper_round_trip_keeps_learned_lrs(tmp_path):
    maml = MAML(TCN(CFG), MAMLConfig(inner_steps=2))
    with torch.no_grad():
        next(iter(maml.inner_lrs.values())).fill_(0.123)
    save_checkpoint(tmp_path / "m", maml, {"model": CFG, "maml": MAMLConfig(inner_steps=2)})
    other = MAML(TCN(CFG), MAMLConfig(inner_steps=2))
    load_into(other, tmp_path / "m", expected_config={"model": CFG, "maml": MAMLConfig(inner_steps=2)})
    assert torch.allclose(next(iter(other.inner_lrs.values())), torch.full((2,), 0.123))


def test_refuses_a_different_config(tmp_path):
    save_checkpoint(tmp_path / "tcn", TCN(CFG), CFG)
    other = TCNConfig(in_channels=3, out_channels=3, hidden_channels=16, levels=2, min_receptive_field=0)
    with pytest.raises(CheckpointError, match=r"config\.hidden_channels: checkpoint has 8, expected 16"):
        load_checkpoint(tmp_path / "tcn", expected_config=other)
    with pytest.raises(CheckpointError, match="holds a 'TCN'"):
        load_checkpoint(tmp_path / "tcn", expected_model_class="MAML")


def test_detects_missing_and_mismatched_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing")
    w = save_checkpoint(tmp_path / "a", TCN(CFG), CFG)
    save_checkpoint(tmp_path / "b", TCN(CFG), CFG)
    (tmp_path / "b.safetensors").replace(w)  # weights from another save under the old sidecar
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(w)
    sidecar_path(w).unlink()
    with pytest.raises(CheckpointError, match="sidecar not found"):
        load_checkpoint(w)


def test_wrong_architecture_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "t", TCN(CFG), None)
    bigger = TCN(TCNConfig(in_channels=3, out_channels=3, hidden_channels=16, levels=2, min_receptive_field=0))
    with pytest.raises(CheckpointError, match="do not fit TCN"):
        load_into(bigger, tmp_path / "t")


def test_failed_save_leaves_previous_checkpoint(tmp_path):
    model = TCN(CFG)
    save_checkpoint(tmp_path / "t", model, CFG)
    before = (tmp_path / "t.json").read_text()
    with pytest.raises(CheckpointError, match="normalization.bad"):
        save_checkpoint(tmp_path / "t", TCN(CFG), CFG, normalization={"bad": object()})
    assert (tmp_path / "t.json").read_text() == before
    load_checkpoint(tmp_path / "t", expected_config=CFG)


def _rewrite_stored_config(tmp_path, edit) -> None:
    side = sidecar_path(tmp_path / "tcn.safetensors")
    meta = json.loads(side.read_text())
    edit(meta["config"])
    side.write_text(json.dumps(meta))


def test_a_setting_added_later_compares_as_its_default(tmp_path):
    save_checkpoint(tmp_path / "tcn", TCN(CFG), CFG)
    _rewrite_stored_config(tmp_path, lambda c: c.pop("dropout"))  # as if written before `dropout` existed
    assert load_checkpoint(tmp_path / "tcn", expected_config=CFG).config.get("dropout") is None
    with pytest.raises(CheckpointError, match=r"config\.dropout: checkpoint has 0\.0, expected 0\.2"):
        load_checkpoint(tmp_path / "tcn", expected_config=TCNConfig(**{**CFG.__dict__, "dropout": 0.2}))
    _rewrite_stored_config(tmp_path, lambda c: c.update(width_multiplier=2))
    with pytest.raises(CheckpointError, match="does not fit TCNConfig.*width_multiplier"):
        load_checkpoint(tmp_path / "tcn", expected_config=CFG)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_commit_is_read_once_per_process_and_marks_changed_tracked_files(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    clean, dirty = tmp_path / "clean", tmp_path / "dirty"
    git("init", "-q")
    for folder in (clean, dirty):
        folder.mkdir()
        (folder / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("commit", "-q", "-m", "first")
    (dirty / "code.py").write_text("x = 2\n")
    (clean / "untracked.py").write_text("y = 1\n")  # untracked files are not the code that ran
    first = git_commit(clean)
    assert re.fullmatch(r"[0-9a-f]{40}", first)
    assert git_commit(dirty) == first + "-dirty"  # only the folder's own tracked files count
    git("commit", "-q", "-am", "second")  # a commit made while a long run is going
    assert git_commit(clean) == first
