from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from metagait_edge.cli import main
from metagait_edge.data import silhouettes as S
from metagait_edge.synth import body as B
from metagait_edge.synth import identity as I
from metagait_edge.synth.dataset import (
    SequenceJob, SynthConfig, generate, hugadb_subjects, identity_for, render_job, render_walker,
)
from metagait_edge.synth.render import Defects

SMALL = dict(ids=2, views=[0, 90], types=["nm-01", "bg-01"], min_frames=8, max_frames=10)


def test_same_seed_same_arrays_different_ids_differ():
    cfg = SynthConfig(**SMALL)
    a = render_job(cfg, SequenceJob(1, "nm-01"))
    b = render_job(cfg, SequenceJob(1, "nm-01"))
    for v in a:
        np.testing.assert_array_equal(a[v][0], b[v][0])
    other = render_job(cfg, SequenceJob(2, "nm-01"))
    n = min(len(a[90][0]), len(other[90][0]))
    diff = np.mean(a[90][0][:n] != other[90][0][:n])
    assert diff > 0.02
    assert identity_for(0, 1) != identity_for(0, 2) and identity_for(0, 1) == identity_for(0, 1)


def test_views_of_one_sequence_share_the_walk_but_not_the_defects():
    cfg = SynthConfig(**SMALL)
    res = render_job(cfg, SequenceJob(1, "bg-01"))
    assert len(res) == 2
    n0 = len(res[0][0]) + res[0][1]
    n90 = len(res[90][0]) + res[90][1]
    assert n0 == n90  # the same walk (same frame count) filmed by every camera


def test_generate_is_byte_identical_and_loadable(tmp_path):
    cfg = SynthConfig(**SMALL)
    s1 = generate(tmp_path / "a", cfg)
    s2 = generate(tmp_path / "b", cfg)
    assert s1["sequences"] == s2["sequences"] == 2 * 2 * 2
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and Path("001/nm-01/090/090.pkl") in files_a
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    spec = S.synthetic_spec(["001", "002"], ["000", "090"], ["nm-01", "bg-01"], n_train=1)
    index = S.scan(tmp_path / "a", spec)
    index.check_complete(spec)
    arr = S.load_sequence(index.records[0])
    assert arr.dtype == np.uint8 and arr.shape[1:] == (64, 64) and 6 <= len(arr) <= 10


def test_other_seed_changes_output():
    a = render_job(SynthConfig(**SMALL, seed=0), SequenceJob(1, "nm-01"))
    b = render_job(SynthConfig(**SMALL, seed=1), SequenceJob(1, "nm-01"))
    assert not (len(a[90][0]) == len(b[90][0]) and np.array_equal(a[90][0], b[90][0]))


def _area(masks):
    return float((masks > 0).sum(axis=(1, 2)).mean())


def test_bag_and_coat_enlarge_the_silhouette():
    ident = I.sample_identity(6)
    kw = dict(n_frames=12, phase0=0.1)
    nm = render_walker(ident, 90, 12, walk=B.Walk(condition="nm", **kw), defects=Defects.none())
    bag = render_walker(ident, 90, 12, walk=B.Walk(condition="bg", bag="backpack", **kw), defects=Defects.none())
    coat = render_walker(ident, 90, 12, walk=B.Walk(condition="cl", **kw), defects=Defects.none())
    assert _area(bag.masks) > 1.08 * _area(nm.masks)
    assert _area(coat.masks) > 1.08 * _area(nm.masks)
    # The backpack sticks out behind: the silhouette gets wider.
    width = lambda m: np.median([np.ptp(np.flatnonzero(f.any(axis=0))) for f in m])  # noqa: E731
    assert width(bag.masks) > width(nm.masks)


def test_defects_change_masks_but_keep_the_person():
    ident = I.sample_identity(7)
    walk = B.Walk(n_frames=30)
    clean = render_walker(ident, 54, 30, walk=walk, defects=Defects.none())
    noisy = render_walker(ident, 54, 30, walk=walk, seed=3)
    assert clean.masks.shape == noisy.masks.shape == (30, 240, 320)
    disagreement = np.mean((clean.masks > 0) != (noisy.masks > 0), axis=(1, 2))
    body = np.mean(clean.masks > 0, axis=(1, 2))
    present = noisy.masks.any(axis=(1, 2))  # dropout frames are empty on purpose
    kept = disagreement[present] < 0.5 * body[present]
    assert disagreement.mean() > 0 and kept.mean() > 0.8
    assert len(noisy.silhouettes) + noisy.n_skipped == 30


def test_render_walker_is_deterministic_and_full_resolution():
    ident = I.sample_identity(8)
    a = render_walker(ident, 36, 15, seed=5, image_size=(640, 480))
    b = render_walker(ident, 36, 15, seed=5, image_size=(640, 480))
    assert a.masks.shape == (15, 480, 640) and set(np.unique(a.masks)) <= {0, 255}
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.silhouettes, b.silhouettes)


def test_config_validation():
    with pytest.raises(ValueError, match="min_frames"):
        SynthConfig(min_frames=10, max_frames=5)
    with pytest.raises(ValueError, match="type"):
        SynthConfig(types=["xx-01"])


def test_hugadb_subject_table(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("|id\t|weight (kg)\t|height (cm)\t|age\t|sex|\n|-----|---|\n|1 \t|75 \t|177 \t|24 \t|M |\n"
                      "|7 \t|52 \t|161 \t|22 \t|F |\t\n")
    subj = hugadb_subjects(readme)
    assert subj == {1: {"weight_kg": 75.0, "height_cm": 177.0, "age": 24, "sex": "M"},
                    7: {"weight_kg": 52.0, "height_cm": 161.0, "age": 22, "sex": "F"}}
    s = subj[7]
    ident = I.identity_from_subject(s["height_cm"], s["weight_kg"], s["sex"], 112.0)
    assert ident.height == pytest.approx(1.61) and ident.sex == "F"
    (tmp_path / "empty.md").write_text("nothing")
    with pytest.raises(ValueError, match="empty.md"):
        hugadb_subjects(tmp_path / "empty.md")


def test_real_hugadb_readme_if_present():
    root = os.environ.get("METAGAIT_DATA")
    path = Path(root or "/nonexistent") / "hugadb" / "HuGaDB_README.md"
    if not path.is_file():
        pytest.skip("HuGaDB_README.md not under $METAGAIT_DATA/hugadb")
    subj = hugadb_subjects(path)
    assert sorted(subj) == list(range(1, 19))
    assert sum(s["sex"] == "F" for s in subj.values()) == 4


def test_cli_writes_a_loadable_dataset(tmp_path, capsys):
    out = tmp_path / "synth"
    rc = main(["synth-silhouettes", "--out", str(out), "--ids", "2", "--seed", "3", "--views", "0,90",
               "--types", "nm-01,cl-01", "--frames", "8"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "wrote 8 sequences" in text
    index = S.scan(out)
    assert len(index) == 8 and index.ids == ["001", "002"]
    assert (out / "identities.json").is_file()
    assert main(["synth-silhouettes", "--out", str(out), "--frames", "x"]) == 1


@pytest.mark.slow
def test_worker_count_does_not_change_output(tmp_path):
    cfg = SynthConfig(**SMALL)
    generate(tmp_path / "one", cfg, workers=1)
    generate(tmp_path / "two", cfg, workers=2)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.pkl"))
    assert len(files) == 8
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel
