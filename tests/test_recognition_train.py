from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from metagait_edge.config import ConfigError, from_dict, to_dict
from metagait_edge.recognition.config import (
    RecognitionConfig, config_from_dict, downsample_factor, load_recognition_config, with_variant,
)
from metagait_edge.recognition.data import SyntheticDataConfig, synthetic_root
from metagait_edge.recognition.evaluate import Embeddings, open_set
from metagait_edge.recognition.train import load_model, prepare_input, train

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "training" / "configs"


def tiny_dict(**train) -> dict:
    """A seconds-sized config: 4 identities, 1 view, 2 types, 12-frame sequences, 32x22 input."""
    return {
        "name": "tiny",
        "variant": "metagait",
        "model": {"channels": [4, 8, 8], "input_height": 32, "input_width": 22, "local_parts": 4,
                  "strip_bins": [4], "num_classes": 4, "mta_descriptor_channels": 4, "mta_gate_hidden": 4,
                  "mhn_hidden": 4},
        "data": {"dataset": "synthetic",
                 "synthetic": {"seed": 3, "train_ids": 4, "val_ids": 0, "test_ids": 0, "full_test_ids": 0,
                               "views": [90], "types": ["nm-01", "nm-02"], "min_frames": 12, "max_frames": 12,
                               "defects": False}},
        "train": {"iterations": 30, "p": 4, "k": 2, "frames": 9, "lr": 1e-2, "weight_decay": 0.0,
                  "milestones": [], "device": "cpu", "threads": 1, "log_every": 5, **train},
    }


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METAGAIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_shipped_configs_load_with_the_papers_schedules():
    casia = load_recognition_config(CONFIGS / "recognition_casia_b.yaml")
    assert (casia.train.lr, casia.train.weight_decay, casia.train.iterations) == (1e-4, 5e-4, 80000)
    assert (casia.train.p, casia.train.k, casia.model.num_classes) == (8, 8, 74)
    ou = load_recognition_config(CONFIGS / "recognition_ou_mvlp.yaml")
    assert (ou.train.iterations, ou.train.p, ou.train.k, ou.model.channels) == (210000, 32, 8, (64, 128, 256))
    cpu = load_recognition_config(CONFIGS / "recognition_synthetic_cpu.yaml")
    assert downsample_factor(cpu.model) == 2 and cpu.model.num_classes == cpu.data.synthetic.train_ids
    load_recognition_config(CONFIGS / "recognition_synthetic.yaml")


def test_unknown_key_fails_naming_the_key(tmp_path):
    data = tiny_dict()
    data["train"]["learning_rate"] = 0.1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"train\.learning_rate") as info:
        load_recognition_config(path)
    assert str(path) in str(info.value)
    nested = tiny_dict()
    nested["data"]["synthetic"]["viewz"] = [0]
    with pytest.raises(ConfigError, match=r"data\.synthetic\.viewz"):
        config_from_dict(nested)


def test_cross_field_errors_name_the_keys():
    bad = tiny_dict()
    bad["model"]["num_classes"] = 7
    with pytest.raises(ConfigError, match=r"model\.num_classes.*data\.synthetic\.train_ids"):
        config_from_dict(bad)
    bad = tiny_dict()
    bad["model"]["input_width"] = 20
    with pytest.raises(ConfigError, match="input_height x model.input_width"):
        config_from_dict(bad)
    bad = tiny_dict()
    bad["model"]["mtp"] = "max"  # variant says metagait
    with pytest.raises(ConfigError, match="variant 'metagait'"):
        config_from_dict(bad)
    base = config_from_dict(tiny_dict())
    assert with_variant(base, "baseline").model.mta == "none"
    assert with_variant(base, "mtp", seed=3).train.seed == 3
    with pytest.raises(ConfigError, match="unknown variant"):
        with_variant(base, "gaitset")


def test_prepare_input_average_pools_to_the_model_size():
    x = torch.zeros(2, 3, 64, 44)
    x[:, :, :2, :2] = 1.0
    y = prepare_input(x, 2)
    assert y.shape == (2, 3, 32, 22)
    assert float(y[0, 0, 0, 0]) == 1.0 and float(y.sum()) == pytest.approx(2 * 3)
    assert prepare_input(x, 1) is x


def test_128x88_input_is_a_typed_config_and_upsamples_the_silhouettes():
    big = tiny_dict()
    big["model"].update({"input_height": 128, "input_width": 88, "strip_bins": [128]})
    cfg = config_from_dict(big)
    assert downsample_factor(cfg.model) == 0.5
    x = torch.zeros(1, 2, 64, 44)
    x[:, :, 10:20, 5:15] = 1.0
    y = prepare_input(x, 0.5)
    assert y.shape == (1, 2, 128, 88)
    assert float(y.mean()) == pytest.approx(float(x.mean()), rel=0.02)
    assert float(y[0, 0, 30, 20]) == 1.0 and float(y[0, 0, 100, 80]) == 0.0
    with pytest.raises(ValueError, match="integer >= 1 or 0.5"):
        prepare_input(x, 0.25)


def test_synthetic_cache_is_keyed_by_rendering_settings(cache):
    a = SyntheticDataConfig(seed=1)
    assert synthetic_root(a) == synthetic_root(SyntheticDataConfig(seed=1, train_ids=5))
    assert synthetic_root(a) != synthetic_root(SyntheticDataConfig(seed=2))
    assert synthetic_root(a) != synthetic_root(SyntheticDataConfig(seed=1, max_frames=41))
    assert str(synthetic_root(a)).startswith(str(cache))
    s = SyntheticDataConfig(train_ids=3, val_ids=2, test_ids=1, full_test_ids=2)
    assert s.id_range("train") == [1, 2, 3] and s.id_range("val") == [4, 5]
    assert s.id_range("test") == [6] and s.id_range("test", quick=False) == [6, 7]
    with pytest.raises(ValueError, match="full_test_ids"):
        SyntheticDataConfig(test_ids=5, full_test_ids=2)


@pytest.mark.slow
def test_tiny_training_lowers_the_loss_and_checkpoint_round_trips(cache, tmp_path):
    cfg = config_from_dict(tiny_dict())
    result = train(cfg, tmp_path / "run", progress=False, log=None)
    losses = [row["total_loss"] for row in result.history]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert np.mean(losses[-2:]) < 0.7 * losses[0], losses
    csv_lines = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("iteration,") and len(csv_lines) == 7
    # generated once into the cache, then reused
    marks = sorted(p.name for p in (synthetic_root(cfg.data.synthetic) / ".complete").iterdir())
    assert marks == ["001", "002", "003", "004"]

    model, loaded_cfg = load_model(result.checkpoint)
    assert to_dict(loaded_cfg) == to_dict(cfg)
    for (k, v), (k2, v2) in zip(result.model.state_dict().items(), model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    x = torch.rand(2, 9, 32, 22)
    result.model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x)["embeddings"], result.model(x)["embeddings"])
    # the sidecar guards the weights: a flipped byte is refused
    data = bytearray(result.checkpoint.read_bytes())
    data[-1] ^= 0xFF
    result.checkpoint.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load_model(result.checkpoint)


def test_training_on_a_missing_dataset_names_the_folder(cache, tmp_path):
    d = tiny_dict()
    d["data"] = {"dataset": "casia-b", "root": str(tmp_path / "nowhere")}
    with pytest.raises(FileNotFoundError, match="nowhere"):
        train(config_from_dict(d), tmp_path / "x", progress=False, log=None)
    d["data"] = {"dataset": "casia-b"}
    with pytest.raises(ValueError, match="data.root"):
        train(config_from_dict(d), tmp_path / "x", progress=False, log=None)


def _emb(ids, types, centers, noise, rng):
    rows, meta_ids, meta_types = [], [], []
    for sid in ids:
        for t in types:
            rows.append(centers[sid] + noise * rng.standard_normal(centers[sid].shape))
            meta_ids.append(sid)
            meta_types.append(t)
    n = len(rows)
    return Embeddings(np.stack(rows), np.array(meta_ids), np.array(meta_types), np.array(["090"] * n))


def test_open_set_known_answers():
    rng = np.random.default_rng(0)
    types = ["nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "bg-01", "cl-01"]
    ids = [f"{i:03d}" for i in range(1, 9)]
    centers = {s: rng.standard_normal((2, 16)) for s in ids}
    val = _emb(ids[:4], types, centers, 0.05, rng)
    test = _emb(ids[4:], types, centers, 0.05, rng)
    res = open_set(val, test, target_far=0.0)
    # well separated walkers: nobody unknown is accepted and every enrolled probe is
    assert res.enrolled == ["005", "006"] and res.unknown == ["007", "008"]
    assert res.far == 0.0 and res.frr == 0.0 and res.identification == 100.0 and res.eer == 0.0
    assert res.n_genuine == 6 and res.n_impostor == 6
    # an impostor identical to an enrolled walker must be accepted (FAR 100 %)
    centers["008"] = centers["006"]
    centers["007"] = centers["005"]
    clash = _emb(ids[4:], types, centers, 0.05, rng)
    assert open_set(val, clash, target_far=0.0).far > 50.0


def _ddp_worker(rank, world, port, cfg_dict, out_dir, result_dir):
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    from metagait_edge import distributed as D

    try:
        res = train(from_dict(RecognitionConfig, cfg_dict), out_dir, progress=False, log=None)
        torch.save({k: v.detach().clone() for k, v in res.model.state_dict().items()},
                   os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        D.cleanup()


@pytest.mark.slow
def test_two_process_ddp_keeps_ranks_identical_and_trains(cache, tmp_path):
    import torch.multiprocessing as mp

    d = tiny_dict(iterations=3, log_every=1)
    cfg = config_from_dict(d)
    from metagait_edge.recognition.data import training_index

    training_index(cfg.data, log=None)  # generate before the ranks start
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, d, str(tmp_path / "run"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    torch.manual_seed(cfg.train.seed)
    from metagait_edge.recognition.train import build_model

    init = build_model(cfg).state_dict()
    changed = 0
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ in {k}"
        if r0[k].is_floating_point() and not torch.equal(r0[k], init[k]):
            changed += 1
    assert changed > 0.8 * sum(1 for v in init.values() if v.is_floating_point())
    assert (tmp_path / "run" / "model.safetensors").is_file()
