"""Phase / mode estimation (issue 17): features and gyro masks, the network, training on a tiny set, shipped weights."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from metagait_edge.phase.dataset import MODES, N_INPUTS, features, mask_gyros, mode_labels, prepare_recording, windows
from metagait_edge.phase.model import PhaseNet, PhaseNetConfig, StreamingPhaseEstimator, decode, phase_targets, predict_recording
from metagait_edge.phase.train import PhaseTrainConfig, train_phase_net
from metagait_edge.sensors import IMU_CHANNELS
from tests.test_phase_ground_truth import synthetic_recording


def _circular_rmse(est, truth):
    return float(np.sqrt(np.mean((np.mod(est - truth + 50.0, 100.0) - 50.0) ** 2)))


def test_mode_labels_map_hugadb_activities():
    act = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    lab = mode_labels(act)
    assert [MODES[i] for i in lab[:8]] == ["walking", "running", "stairs_up", "stairs_down", "sitting",
                                           "transition", "transition", "standing"]
    assert (lab[8:] == -1).all()


def test_features_mask_corrupted_gyros_and_flag_them():
    phys = np.ones((5, 36), dtype=np.float32) * 500.0
    x = features(phys, {"rs": False})
    rs = [IMU_CHANNELS.index(f"gyro_rs_{a}") for a in "xyz"]
    rt = [IMU_CHANNELS.index(f"gyro_rt_{a}") for a in "xyz"]
    assert x.shape == (5, N_INPUTS)
    assert (x[:, rs] == 0).all() and np.allclose(x[:, rt], 2.0)  # 500 deg/s / 250
    assert x[0, 36:].tolist() == [1, 0, 1, 1, 1, 1]
    y = mask_gyros(x, ["lt"])
    assert (y[:, [IMU_CHANNELS.index(f"gyro_lt_{a}") for a in "xyz"]] == 0).all() and y[0, 41] == 0
    assert x[0, 41] == 1  # a copy


def test_windows_are_causal_and_pad_with_the_first_row():
    x = np.arange(10, dtype=np.float32)[:, None]
    w = windows(x, np.array([0, 5]), 4)
    assert w[0, :, 0].tolist() == [0, 0, 0, 0] and w[1, :, 0].tolist() == [2, 3, 4, 5]


def test_decode_round_trips_phase_and_streaming_matches_batch():
    ph = np.array([0.0, 12.5, 50.0, 99.0])
    cs = phase_targets(ph)
    out = np.concatenate([cs, cs, np.zeros((4, len(MODES)))], axis=1)
    d = decode(out)
    assert np.allclose(d["phase"][:, 0], ph, atol=1e-9) and np.allclose(d["confidence"], 1.0)
    model = PhaseNet(PhaseNetConfig(window=32))
    x = np.random.default_rng(0).normal(size=(40, N_INPUTS)).astype(np.float32)
    batch = predict_recording(model, x)
    est = StreamingPhaseEstimator(model)
    stream = [est.push(r) for r in x]
    want = decode(batch)
    assert np.allclose([s["phase"] for s in stream], want["phase"], atol=1e-3)
    assert np.allclose([s["mode_prob"] for s in stream], want["mode_prob"], atol=1e-5)


@pytest.mark.slow
def test_training_learns_phase_on_synthetic_walkers_with_masks():
    """A few hundred steps on two synthetic walkers (shank gyros carry the phase) beat chance on a third."""
    torch.manual_seed(0)

    def rec(period, shift):
        r = prepare_recording(synthetic_recording(period=period, n=1200, shift=shift))
        # give the thigh the same rhythm so a masked shank still leaves information
        for leg, col in (("rt", 0), ("lt", 1)):
            r.x[:, IMU_CHANNELS.index(f"acc_{leg}_x")] = np.sin(2 * np.pi * (np.arange(len(r)) - shift) / period + col * np.pi)
        return r

    train = [rec(50.0, 0.3), rec(56.0, 7.1)]
    val = [rec(53.0, 3.3)]
    cfg = PhaseTrainConfig(epochs=2, windows_per_epoch=5000, batch=64, lr=3e-3, val_windows=500)
    model, hist = train_phase_net(train, val, cfg, PhaseNetConfig(window=32, width=16, hidden=32), progress=False)
    assert len(hist) == 2 and hist[-1]["train_phase_loss"] < hist[0]["train_phase_loss"]
    out = decode(predict_recording(model, val[0].x))
    truth = val[0].truth.phase
    ok = np.isfinite(truth)
    rmse = _circular_rmse(out["phase"].T[ok], truth[ok])
    assert rmse < 15.0  # chance (uniform phase) is ~29 %



@pytest.mark.slow
def test_shipped_weights_load_and_score_a_real_walker():
    from tests.conftest import shared_hugadb_archive

    if shared_hugadb_archive() is None:
        pytest.skip("real HuGaDB archive not found under $METAGAIT_DATA/hugadb")
    from metagait_edge.data.hugadb import HuGaDB
    from metagait_edge.phase.folds import phase_folds
    from metagait_edge.phase.model import RESOURCE_DIR, load_phase_net

    meta = json.loads((RESOURCE_DIR / "fold0.json").read_text())
    assert meta["extra"]["split"] == phase_folds()[0]
    from metagait_edge.phase.run import weights_provenance

    prov = weights_provenance(RESOURCE_DIR / "fold0")
    assert prov["command"].startswith("training/train_phase.py") and 0 <= prov["kept_epoch"] < prov["epochs"]
    test_walker = phase_folds()[0]["test"][0]
    db = HuGaDB.open()
    fid = next(f for f in db.file_ids if f.startswith(f"HuGaDB_v1_walking_{test_walker:02d}_"))
    rec = prepare_recording(db.load(fid))
    out = decode(predict_recording(load_phase_net(RESOURCE_DIR / "fold0"), rec.x))
    ok = np.isfinite(rec.truth.phase)
    rmse = _circular_rmse(out["phase"].T[ok], rec.truth.phase[ok])
    assert rmse < 6.0  # the baseline scores about 6 % in walking
    assert (out["mode_prob"].argmax(1)[rec.mode == 0] == 0).mean() > 0.8
    assert os.path.getsize(RESOURCE_DIR / "fold0.safetensors") < 500_000
