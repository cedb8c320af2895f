"""IMU identity (recognition/imu_identity.py) and its fusion with the camera in the runtime (runtime/identity.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from metagait_edge.data.cycles import cycle_channels
from metagait_edge.recognition.imu_identity import (
    ImuEmbeddingConfig, ImuIdentifier, ImuIdentityError, ImuIdentityModel, fit_embedding, stride_features,
)
from metagait_edge.runtime.config import IdentityConfig
from metagait_edge.runtime.identity import Evidence, WearerIdentity, fuse_identity
from metagait_edge.runtime.profiles import Profile, ProfileStore

CHANNELS = cycle_channels()
CONFIG = ImuEmbeddingConfig(points=26, dims=40, session_dims=2)


def _strides(walker: int, n: int, session: int, rng) -> np.ndarray:
    """[n, 42, 101] strides whose accelerometer shape is the walker's; each session tilts every sensor."""
    x = np.linspace(0, 2 * np.pi, 101)
    shape_rng = np.random.default_rng(1000 + walker)
    amp, phase = shape_rng.uniform(0.2, 1.0, (18, 3)), shape_rng.uniform(0, 2 * np.pi, (18, 3))
    tilt = np.random.default_rng(50 * walker + session).normal(0, 0.5, 18)
    out = np.zeros((n, len(CHANNELS), 101), np.float32)
    acc = [CHANNELS.index(c) for c in CHANNELS if c.startswith("acc_")]
    for j, c in enumerate(acc):
        wave = sum(amp[j, h] * np.sin((h + 1) * x + phase[j, h]) for h in range(3))
        out[:, c] = wave + tilt[j] + rng.normal(0, 0.15, (n, 101))
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """An embedding fitted on walkers 0-7 (3 sessions each); cohort: runs of 5 of their strides."""
    rng = np.random.default_rng(0)
    feats, walker, session, runs = [], [], [], []
    for w in range(8):
        for s in range(3):
            f = stride_features(_strides(w, 10, s, rng), CHANNELS, CONFIG.points)
            feats.append(f)
            walker += [w] * 10
            session += [f"{w}-{s}"] * 10
    emb = fit_embedding(np.concatenate(feats), np.array(walker), np.array(session), CONFIG)
    cohort = np.stack([emb(f[:5]) for f in feats] + [emb(f[5:]) for f in feats])
    path = tmp_path_factory.mktemp("imu") / "imu_identity.safetensors"
    ImuIdentityModel(emb, cohort, -2.0, CONFIG, {"test": True}).save(path)
    return path


def test_stride_features_ignore_a_sensor_tilt_and_name_bad_input():
    rng = np.random.default_rng(1)
    s = _strides(3, 2, 0, rng)
    tilted = s.copy()
    tilted[:, CHANNELS.index("acc_rf_x")] += 0.7  # the sensor sat differently: a constant offset
    np.testing.assert_allclose(stride_features(s, CHANNELS), stride_features(tilted, CHANNELS), atol=1e-5)
    assert stride_features(s, CHANNELS).shape == (2, 18 * 26)
    with pytest.raises(ImuIdentityError, match="acc_rf_x"):
        stride_features(s[:, 1:], CHANNELS[1:])
    s[1, CHANNELS.index("acc_lt_z"), 4] = np.nan
    with pytest.raises(ImuIdentityError, match=r"strides \[1\]"):
        stride_features(s, CHANNELS)


def test_identifier_finds_an_enrolled_walker_in_another_session_and_rejects_a_stranger(model):
    m = ImuIdentityModel.load(model)
    ident = ImuIdentifier(m)
    rng = np.random.default_rng(2)
    for w in (20, 21, 22):  # walkers the embedding never saw, enrolled from 6 strides of session 0
        ident.enroll(str(w), m.embed(_strides(w, 6, 0, rng), CHANNELS))
    for w in (20, 21, 22):
        found = ident.identify(m.embed(_strides(w, 5, 1, rng), CHANNELS))
        assert found.walker_id == str(w) and 0.5 <= found.confidence <= 1.0, found
    stranger = ident.identify(m.embed(_strides(23, 5, 1, rng), CHANNELS))
    assert stranger.walker_id is None and "match nobody" in stranger.reason and stranger.confidence == 0.0


def test_model_file_loads_strictly(model, tmp_path):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(model))
    del tensors["cohort"]
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={"imu_identity": json.dumps({"format": "metagait-edge-imu-identity",
                                                                       "version": 1, "threshold": 0, "config": {}})})
    with pytest.raises(ImuIdentityError, match="expected cohort"):
        ImuIdentityModel.load(bad)
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(ImuIdentityError, match="unreadable"):
        ImuIdentityModel.load(tmp_path / "junk.safetensors")


def _e(source, walker, conf=0.9):
    return Evidence(source, walker, conf)


def test_fusion_follows_a_walker_only_when_the_evidence_agrees():
    agree = fuse_identity(_e("camera", "ann", 0.9), _e("imu", "ann", 0.8))
    assert (agree.walker_id, agree.confidence, agree.conflict) == ("ann", 0.8, False)
    clash = fuse_identity(_e("camera", "ann"), _e("imu", "bob"))
    assert clash.walker_id is None and clash.conflict and "camera says ann, imu says bob" in clash.reason
    half = fuse_identity(_e("camera", "ann"), _e("imu", None))
    assert half.walker_id is None and half.conflict and "imu says unknown" in half.reason
    unknown = fuse_identity(_e("camera", None), _e("imu", None))
    assert unknown.walker_id is None and not unknown.conflict and "unknown walker" in unknown.reason
    assert fuse_identity(None, _e("imu", "ann", 0.7)).walker_id == "ann"  # one source, allowed by default
    lone = fuse_identity(_e("camera", "ann"), None, single_source=False)
    assert lone.walker_id is None and "single_source is off" in lone.reason
    assert fuse_identity(None, None).walker_id is None


def test_old_evidence_expires_and_the_fresh_source_decides_alone():
    wearer = WearerIdentity(IdentityConfig(imu=False, evidence_max_age_s=10.0))
    wearer.observe_camera("ann", 0.9, now_s=0.0)
    wearer.imu = Evidence("imu", "ann", 0.7, "", 8.0)  # as observe_stride sets it, 8 s in
    assert wearer.expire(10.0) is None and wearer.fused.walker_id == "ann"  # both within 10 s
    left = wearer.expire(10.5)  # the camera's answer is 10.5 s old: the IMU decides alone
    assert wearer.camera is None and left.walker_id == "ann" and left.confidence == 0.7 and wearer.expired == 1
    gone = wearer.expire(30.0)
    assert gone.walker_id is None and "identity evidence expired (imu" in gone.reason and wearer.expired == 2
    assert wearer.expire(60.0) is None  # nothing left to expire
    never = WearerIdentity(IdentityConfig(imu=False, evidence_max_age_s=0.0))
    never.observe_camera("ann", 0.9, now_s=0.0)
    assert never.expire(1e6) is None and never.fused.walker_id == "ann"
    with pytest.raises(ValueError, match="evidence_max_age_s"):
        IdentityConfig(evidence_max_age_s=-1.0)


def _profile(walker, meta):
    return Profile(walker, {"w": np.zeros(2, np.float32)}, np.zeros((42, 101), np.float32), np.ones(42, bool), meta)


def test_calibration_strides_enroll_the_wearer_who_is_then_identified_from_their_strides(model, tmp_path):
    rng = np.random.default_rng(3)
    config = IdentityConfig(imu_model=model, imu_strides=5)
    wearer = WearerIdentity(config, ProfileStore(tmp_path))
    store = ProfileStore(tmp_path)
    for w in (30, 31):  # what calibrate() stores in the profile: enrollment() of its strides
        store.save(_profile(f"w{w}", wearer.enrollment(_strides(w, 6, 0, rng))))
    store.save(_profile("old", {}))  # calibrated before IMU enrollment: no template, still loads
    restarted = WearerIdentity(config, store)
    assert restarted.identifier.walkers == ["w30", "w31"]
    answers = [restarted.observe_stride(c) for c in _strides(31, 5, 1, rng)]
    assert answers[:4] == [None] * 4 and answers[4].walker_id == "w31"  # after imu_strides strides
    camera = restarted.observe_camera("w30", 0.9)  # the camera names someone else: conflict, generic
    assert camera.walker_id is None and camera.conflict and restarted.conflicts == 1
    assert restarted.observe_camera("w31", 0.9).walker_id == "w31"
    other = WearerIdentity(IdentityConfig(imu_model=model), store)
    other.fingerprint = "another model"
    assert not other.enroll_profile(store.load("w30"))  # strides embedded by another model are not mixed in


@pytest.mark.slow
def test_runtime_calibration_stores_the_imu_enrollment(model, tmp_path):
    torch = pytest.importorskip("torch")
    import queue

    from metagait_edge.runtime.calibration import CycleRecord, calibrate, load_personalizer
    from metagait_edge.runtime.config import CalibrationConfig

    torch.set_num_threads(1)
    pers = load_personalizer()
    rng = np.random.default_rng(4)
    strides = _strides(40, 8, 0, rng)
    x = np.linspace(0, 2 * np.pi, 101)
    strides[:, pers.channels.index("knee_r")] = 30 * (0.5 + 0.5 * np.sin(x))
    strides[:, pers.channels.index("gyro_rs_y")] = -200 * np.sin(x)
    q = queue.Queue()
    for i, s in enumerate(strides):
        q.put(CycleRecord(s, np.ones(42, bool), 1.1, 0.02, 0.0, i))
    wearer = WearerIdentity(IdentityConfig(imu_model=model), ProfileStore(tmp_path))
    out = calibrate(pers, ProfileStore(tmp_path), "eve", q, CalibrationConfig(max_cycle_distance=50.0),
                    enrollment=wearer.enrollment, timeout_s=10)
    if not out.success:
        pytest.skip(f"calibration did not commit on synthetic strides: {out.reason}")
    meta = ProfileStore(tmp_path).load("eve").meta["imu_identity"]
    assert len(meta["strides"]) == 6 and meta["model_sha256"] == wearer.fingerprint


@pytest.mark.slow
def test_eval_identity_quick_writes_the_issue_keys(tmp_path):
    if not os.environ.get("METAGAIT_DATA"):
        pytest.skip("needs the HuGaDB archive ($METAGAIT_DATA)")
    out = tmp_path / "identity.json"
    walkers = ["1", "2", "3", "4", "5", "6"]  # walker 2 has no walking file: an impostor only
    subprocess.run([sys.executable, "-m", "metagait_edge", "eval-identity", "--imu", "--quick", "--walkers", *walkers,
                    "--json", str(out)], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    imu = json.loads(out.read_text())["imu"]
    assert set(imu["rank1"]) == {"1", "5"}
    for v in (*imu["rank1"].values(), imu["eer"]):
        assert 0.0 <= v <= 1.0
    assert imu["eer"] == imu["cross_session"]["5"]["eer"]
    assert set(imu["within_session"]) == {"1", "5"}
    assert imu["quick"] is True and set(imu["cross_session"]["1"]["per_walker_rank1"]) <= set(walkers)
    assert "2" not in imu["cross_session"]["1"]["per_walker_rank1"]  # no walking file: never enrolled
