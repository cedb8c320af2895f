"""Fitting a recognition checkpoint's open-set threshold on its validation identities (recognition/calibration.py,
`metagait-edge calibrate-threshold`, and `train-recognition --ship`, which calibrates what it ships)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from metagait_edge.checkpoint import CheckpointError, sidecar_path  # noqa: E402
from metagait_edge.cli import main  # noqa: E402
from metagait_edge.config import from_dict  # noqa: E402
from metagait_edge.recognition.calibration import fit_open_set_threshold  # noqa: E402
from metagait_edge.recognition.checkpoint import load_recognition_checkpoint  # noqa: E402
from metagait_edge.recognition.config import RecognitionConfig  # noqa: E402
from metagait_edge.recognition.evaluate import extract_embeddings, open_set_distances, ship_checkpoint  # noqa: E402
from metagait_edge.recognition.gallery import fit_threshold  # noqa: E402
from metagait_edge.recognition.train import load_model, train  # noqa: E402
from test_recognition_train import tiny_dict  # noqa: E402


def _trained(tmp_path, val_ids: int):
    d = tiny_dict(iterations=4, log_every=2)
    d["data"]["synthetic"].update(val_ids=val_ids, types=["nm-01", "nm-05"])  # gallery + probe sequence types
    return train(from_dict(RecognitionConfig, d), tmp_path / "run", progress=False, log=None).checkpoint


@pytest.mark.slow
def test_shipping_fits_the_threshold_on_validation_ids_and_the_command_refits_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("METAGAIT_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    shipped = ship_checkpoint(_trained(tmp_path, val_ids=4), tmp_path / "ship", "metagait", log=lambda m: None)
    model = load_recognition_checkpoint(shipped, for_identification=True)
    record = model.open_set
    assert record.fitted_on.startswith("synthetic seed 3 validation ids 005..008")
    assert (record.metric, record.mode, record.target_far) == ("cosine", "all", 0.01)
    # the stored threshold is the one fit_threshold gives on those identities' genuine / impostor distances
    reloaded, cfg = load_model(shipped)
    from metagait_edge.recognition.data import synthetic_index

    emb = extract_embeddings(reloaded, synthetic_index(cfg.data.synthetic, "val", log=None))
    genuine, impostor, *_ = open_set_distances(emb, "cosine", "all")
    assert record.threshold == pytest.approx(fit_threshold(genuine, impostor, 0.01))
    assert record.n_genuine == genuine.size and record.n_impostor == impostor.size

    # the command refits for another FAR and rewrites only the sidecar's open_set
    weights_sha = json.loads(sidecar_path(shipped).read_text())["weights_sha256"]
    assert main(["calibrate-threshold", "--checkpoint", str(shipped), "--target-far", "0.5"]) == 0
    assert "calibrated 1 checkpoint(s) for FAR 50 %" in capsys.readouterr().out
    refit = load_recognition_checkpoint(shipped, for_identification=True).open_set
    assert refit.target_far == 0.5 and refit.threshold >= record.threshold
    assert json.loads(sidecar_path(shipped).read_text())["weights_sha256"] == weights_sha
    assert fit_open_set_threshold(reloaded, cfg.data, 0.5, log=None).threshold == refit.threshold  # reproducible


@pytest.mark.slow
def test_a_checkpoint_without_validation_ids_is_shipped_flagged_and_refused_for_identification(tmp_path, monkeypatch):
    monkeypatch.setenv("METAGAIT_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    said: list[str] = []
    shipped = ship_checkpoint(_trained(tmp_path, val_ids=0), tmp_path / "ship", "metagait", log=said.append)
    assert any("shipped WITHOUT an open-set threshold" in m for m in said)
    with pytest.raises(CheckpointError, match="calibrate-threshold"):
        load_recognition_checkpoint(shipped, for_identification=True)
    with pytest.raises(ValueError, match="at least 2 are needed"):
        main(["-v", "calibrate-threshold", "--checkpoint", str(shipped)])
