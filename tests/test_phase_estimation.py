"""Phase / mode estimation (issue 17): features and gyro masks, the network, training on a tiny set, shipped weights."""

from __future__ import annotations

import json
import os
from pathlib import Path

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



def test_right_aligned_net_sees_its_newest_sample_and_the_first_layout_does_not():
    """The first shipped layout (window 64, 3 stride-2 convolutions from the oldest sample) never reads its
    3 newest samples; right-aligned, every sample the network reads reaches the output, the newest included."""
    from metagait_edge.phase.model import used_length

    def ignored(cfg):
        torch.manual_seed(0)
        m = PhaseNet(cfg).eval()
        x = torch.randn(1, cfg.window, N_INPUTS)
        y = m(x)
        out = []
        for j in range(1, 12):
            x2 = x.clone()
            x2[0, -j] += 1.0
            if torch.allclose(m(x2), y):
                out.append(j)
        return out

    assert ignored(PhaseNetConfig()) == [1, 2, 3]
    aligned = PhaseNetConfig(window=117, n_conv=4, right_aligned=True)
    assert used_length(aligned) == 117 and used_length(PhaseNetConfig(window=64, right_aligned=True)) == 61
    assert ignored(aligned) == [] and ignored(PhaseNetConfig(window=64, right_aligned=True)) == []


@pytest.mark.parametrize("cfg", [PhaseNetConfig(window=117, n_conv=4, mix_channels=16, width=24, hidden=32, right_aligned=True),
                                 PhaseNetConfig(window=40, width=16, right_aligned=True)])
def test_cached_streaming_matches_the_batch_forward_pass_and_restarts_on_reset(cfg):
    from metagait_edge.phase.model import CachedPhaseNet

    torch.manual_seed(1)
    model = PhaseNet(cfg).eval()
    x = np.random.default_rng(1).normal(size=(300, N_INPUTS)).astype(np.float32)
    x[:3] *= 4.0  # a first sample unlike the rest: the padding must repeat it exactly
    want = predict_recording(model, x)
    est = StreamingPhaseEstimator(model)
    assert isinstance(est.cached, CachedPhaseNet)
    for r in x[150:]:
        est.push(r)  # some other past, then forget it
    est.reset()
    got = np.stack([est.cached.push(r) for r in x])
    assert np.allclose(got, want, atol=2e-5)
    est.reset()
    stream = [est.push(r) for r in x[:80]]
    d = decode(want[:80])
    assert np.allclose([s["phase"] for s in stream], d["phase"], atol=1e-3)
    with pytest.raises(ValueError):
        CachedPhaseNet(PhaseNet(PhaseNetConfig(window=32)))
    with pytest.raises(ValueError, match="shape"):  # the compiled step reads only as many values as it expects
        est.push(x[0, :-1])


@pytest.mark.parametrize("cfg", [PhaseNetConfig(window=61, width=16, hidden=24, right_aligned=True),
                                 PhaseNetConfig(window=32, width=16, hidden=24)])
def test_mirror_average_is_left_right_equivariant_and_streams_like_the_batch_pass(cfg):
    """A net trained with leg swap averages its outputs for the window and for its mirror image: the estimate for
    the mirrored walk is then exactly the estimate for the walk with the legs swapped (a wrong leg order in
    ``unmirror_outputs`` or a wrong column in ``mirror_map`` breaks that), and the per-sample estimator gives
    the batch pass's outputs."""
    from metagait_edge.phase.dataset import mirror_features
    from metagait_edge.phase.model import unmirror_outputs

    torch.manual_seed(2)
    model = PhaseNet(cfg).eval()
    model.mirror_trained = True
    x = np.random.default_rng(2).normal(size=(90, N_INPUTS)).astype(np.float32)
    x[:, 36:] = (np.random.default_rng(3).random((1, 6)) < 0.5)  # some gyros flagged invalid, as in HuGaDB
    assert np.array_equal(mirror_features(mirror_features(x)), x)  # a mirror twice is the identity
    avg = predict_recording(model, x)
    legs_swapped = avg[:, [2, 3, 0, 1] + list(range(4, avg.shape[1]))]  # right (cos, sin) <-> left, modes kept
    assert np.array_equal(unmirror_outputs(avg), legs_swapped)
    assert np.allclose(predict_recording(model, mirror_features(x)), legs_swapped, atol=1e-5)
    plain = predict_recording(model, x, mirror=False)
    assert not np.allclose(plain, avg, atol=1e-3)  # the mirror pass really runs
    assert not np.allclose(predict_recording(model, mirror_features(x), mirror=False), unmirror_outputs(plain), atol=1e-3)
    est = StreamingPhaseEstimator(model)
    assert est.mirror and not StreamingPhaseEstimator(model, mirror=False).mirror
    stream = [est.push(r) for r in x]
    d = decode(avg)
    assert np.allclose([s["phase"] for s in stream], d["phase"], atol=1e-3)
    assert np.allclose([s["confidence"] for s in stream], d["confidence"], atol=1e-4)
    assert np.allclose([s["mode_prob"] for s in stream], d["mode_prob"], atol=1e-5)


@pytest.mark.parametrize("right_aligned", [True, False])
def test_an_ensemble_streams_as_one_wider_net_and_gives_the_mean_of_its_members(right_aligned):
    """Two nets of one architecture run side by side (block-diagonal weights): per sample, each member's outputs
    equal its own forward pass, and the estimate is the mean of the members' mirror-averaged outputs."""
    from metagait_edge.phase.model import CachedPhaseNet

    cfg = PhaseNetConfig(window=61 if right_aligned else 32, width=16, hidden=24, right_aligned=right_aligned)
    nets = []
    for seed in (3, 4):
        torch.manual_seed(seed)
        nets.append(PhaseNet(cfg).eval())
        nets[-1].mirror_trained = True
    x = np.random.default_rng(4).normal(size=(80, N_INPUTS)).astype(np.float32)
    if right_aligned:
        side_by_side = CachedPhaseNet(nets)
        got = np.stack([side_by_side.push(r) for r in x])
        n = got.shape[1] // 2
        for j, m in enumerate(nets):
            assert np.allclose(got[:, j * n:(j + 1) * n], predict_recording(m, x, mirror=False), atol=2e-5)
    mean = predict_recording(nets, x)
    assert np.allclose(mean, (predict_recording(nets[0], x) + predict_recording(nets[1], x)) / 2)
    assert not np.allclose(mean, predict_recording(nets[0], x), atol=1e-3)
    est = StreamingPhaseEstimator(nets)
    stream = [est.push(r) for r in x]
    d = decode(mean)
    assert np.allclose([s["phase"] for s in stream], d["phase"], atol=1e-3)
    assert np.allclose([s["mode_prob"] for s in stream], d["mode_prob"], atol=1e-5)
    nets[1].mirror_trained = False
    with pytest.raises(ValueError, match="disagree"):
        StreamingPhaseEstimator(nets)


def test_load_phase_ensemble_finds_the_seed_members_in_order_and_refuses_a_foreign_one(tmp_path):
    from metagait_edge.checkpoint import CheckpointError, save_checkpoint
    from metagait_edge.phase.model import load_phase_ensemble, member_paths

    cfg = PhaseNetConfig(window=61, width=16, hidden=24, right_aligned=True)
    for name in ("fold0", "fold0.seed10", "fold0.seed2", "fold01", "fold1.seed1"):
        save_checkpoint(tmp_path / name, PhaseNet(cfg), cfg)
    assert [p.name for p in member_paths(tmp_path / "fold0")] == ["fold0", "fold0.seed2", "fold0.seed10"]
    assert [p.name for p in member_paths(tmp_path / "fold01")] == ["fold01"]
    loaded = load_phase_ensemble(tmp_path / "fold0")
    firsts = [m.features[0].weight.detach().numpy() for m in loaded]  # each member from its own file
    assert len(loaded) == 3 and not np.allclose(firsts[0], firsts[1]) and not np.allclose(firsts[1], firsts[2])
    other = PhaseNetConfig(window=61, width=8, hidden=24, right_aligned=True)
    save_checkpoint(tmp_path / "fold1", PhaseNet(other), other)
    with pytest.raises(CheckpointError, match="fold1.seed1"):
        load_phase_ensemble(tmp_path / "fold1")


def test_load_phase_net_mirror_averages_only_weights_trained_with_leg_swap(tmp_path):
    from metagait_edge.checkpoint import save_checkpoint
    from metagait_edge.phase.model import RESOURCE_DIR, load_phase_net

    cfg = PhaseNetConfig(window=61, width=16, hidden=24, right_aligned=True)
    for prob, want in ((0.0, False), (0.5, True)):
        save_checkpoint(tmp_path / f"net{prob}", PhaseNet(cfg), cfg, extra={"train_config": {"leg_swap_prob": prob}})
        assert load_phase_net(tmp_path / f"net{prob}").mirror_trained is want
    save_checkpoint(tmp_path / "bare", PhaseNet(cfg), cfg)
    assert load_phase_net(tmp_path / "bare").mirror_trained is False
    assert all(load_phase_net(RESOURCE_DIR / k).mirror_trained for k in ("fold0", "fold1", "fold2", "all"))


def test_load_phase_net_builds_the_architecture_its_sidecar_names_and_refuses_unknown_keys(tmp_path):
    from metagait_edge.checkpoint import CheckpointError, save_checkpoint
    from metagait_edge.phase.model import load_phase_net

    cfg = PhaseNetConfig(window=61, width=16, hidden=24, right_aligned=True)
    model = PhaseNet(cfg)
    save_checkpoint(tmp_path / "net", model, cfg)
    loaded = load_phase_net(tmp_path / "net")
    assert loaded.config == cfg
    x = torch.randn(2, 61, N_INPUTS)
    assert torch.equal(loaded(x), model.eval()(x))
    meta = json.loads((tmp_path / "net.json").read_text())
    meta["config"]["kernel"] = 7
    (tmp_path / "net.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="kernel"):
        load_phase_net(tmp_path / "net")


def test_phase_experiment_yaml_is_typed_and_the_shipped_one_loads(tmp_path):
    from metagait_edge.config import ConfigError, load_config
    from metagait_edge.phase.train import PhaseExperiment

    exp = load_config(PhaseExperiment, "training/configs/phase.yaml")
    assert exp.net.right_aligned and exp.net.window >= 64 and exp.train.balance > 0
    (tmp_path / "bad.yaml").write_text("net:\n  window: 64\ntrain:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="epoch"):
        load_config(PhaseExperiment, tmp_path / "bad.yaml")


def test_balanced_sampling_and_gain_augmentation():
    from metagait_edge.phase.train import Stacked, augment_gain, sampling_weights

    mode = np.array([0] * 90 + [2] * 10)
    s = Stacked(np.zeros((100, N_INPUTS), np.float32), np.zeros(100, np.int64), np.zeros((100, 2, 2), np.float32),
                mode, np.arange(100))
    assert sampling_weights(s, 0.0) is None
    p = sampling_weights(s, 1.0)
    assert np.isclose(p[mode == 2].sum(), 0.5) and np.isclose(p.sum(), 1.0)  # equal per mode
    p = sampling_weights(s, 0.5)
    assert np.isclose(p[mode == 2].sum(), 1 / (1 + 3))  # sqrt(10) / (sqrt(10) + sqrt(90))
    xb = np.ones((50, 8, N_INPUTS), np.float32)
    g = augment_gain(xb, np.random.default_rng(0), 0.2)
    assert (g[:, :, 36:] == 1).all()  # gyro flags untouched
    rf = [IMU_CHANNELS.index(c) for c in ("acc_rf_x", "acc_rf_z", "gyro_rf_y")]
    assert np.allclose(g[:, :, rf], g[:, :1, rf[:1]])  # one gain per window and IMU, over time and axes
    assert g[:, 0, rf[0]].std() > 0.1 and augment_gain(xb, np.random.default_rng(0), 0.0) is xb


def test_leg_swap_mirrors_the_imus_and_swaps_the_legs_phase():
    from metagait_edge.phase.dataset import mirror_map
    from metagait_edge.phase.train import augment_leg_swap

    src, sign = mirror_map()
    assert (src[src] == np.arange(N_INPUTS)).all() and (sign * sign[src] == 1).all()  # an involution
    col = IMU_CHANNELS.index
    assert src[col("gyro_rs_y")] == col("gyro_ls_y") and sign[col("gyro_rs_y")] == 1  # sagittal: kept
    assert src[col("acc_lt_y")] == col("acc_rt_y") and sign[col("acc_lt_y")] == -1  # mediolateral: negated
    assert sign[col("gyro_rf_z")] == -1 and sign[col("acc_rf_z")] == 1 and src[36] == 39  # flags swap
    rng = np.random.default_rng(0)
    xb = rng.normal(size=(64, 5, N_INPUTS)).astype(np.float32)
    ph = rng.normal(size=(64, 2, 2)).astype(np.float32)
    x2, p2 = augment_leg_swap(xb, ph, np.random.default_rng(1), 0.5)
    swapped = ~np.isclose(x2, xb).all(axis=(1, 2))
    assert 10 < swapped.sum() < 54 and (p2[swapped] == ph[swapped][:, ::-1]).all()
    assert (x2[~swapped] == xb[~swapped]).all() and (p2[~swapped] == ph[~swapped]).all()
    assert np.allclose(x2[swapped][:, :, col("acc_lf_y")], -xb[swapped][:, :, col("acc_rf_y")])
    assert augment_leg_swap(xb, ph, rng, 0.0)[0] is xb


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
    from metagait_edge.phase.model import load_phase_ensemble, member_paths

    for k, name in ((0, "fold0"), (1, "fold1"), (2, "fold2"), (None, "all")):  # the shipped two-seed ensembles
        metas = [json.loads(Path(f"{p}.json").read_text()) for p in member_paths(RESOURCE_DIR / name)]
        assert [m["extra"]["train_config"]["seed"] for m in metas] == [0, 1]
        assert all(m["extra"]["split"] == (phase_folds()[k] if k is not None else metas[0]["extra"]["split"]) for m in metas)
    test_walker = phase_folds()[0]["test"][0]
    db = HuGaDB.open()
    fid = next(f for f in db.file_ids if f.startswith(f"HuGaDB_v1_walking_{test_walker:02d}_"))
    rec = prepare_recording(db.load(fid))
    ok = np.isfinite(rec.truth.phase)
    one = _circular_rmse(decode(predict_recording(load_phase_net(RESOURCE_DIR / "fold0"), rec.x))["phase"].T[ok],
                         rec.truth.phase[ok])
    out = decode(predict_recording(load_phase_ensemble(RESOURCE_DIR / "fold0"), rec.x))
    rmse = _circular_rmse(out["phase"].T[ok], rec.truth.phase[ok])
    assert rmse < 6.0 and one < 6.0  # the baseline scores about 6 % in walking
    assert rmse != one  # the second member is really there
    assert (out["mode_prob"].argmax(1)[rec.mode == 0] == 0).mean() > 0.8
    assert os.path.getsize(RESOURCE_DIR / "fold0.safetensors") < 500_000
