from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from metagait_edge.data import silhouettes as S
from metagait_edge.data.pretreatment import pretreat_frames


def _seq(n=12, seed=0):
    rng = np.random.default_rng(seed)
    arr = np.zeros((n, 64, 64), dtype=np.uint8)
    for t in range(n):
        w = int(rng.integers(8, 20))
        arr[t, 4:60, 32 - w // 2: 32 + w // 2] = 255
    return arr


def _tiny_pkl(root, ids=("001", "002"), types=("nm-01", "nm-02"), views=("000", "090")):
    for i, sid in enumerate(ids):
        for j, t in enumerate(types):
            for k, v in enumerate(views):
                S.write_pkl(S.sequence_pkl_path(root, sid, t, v), _seq(10 + i + j + k, seed=i * 100 + j * 10 + k))


def _spec(ids=("001", "002"), types=("nm-01", "nm-02"), views=("000", "090")):
    return S.DatasetSpec("tiny", tuple(ids), tuple(types), tuple(views), tuple(ids[:1]), tuple(ids[1:]),
                         gallery_types=("nm-01",), probe_types={"NM": ("nm-02",)})


def test_casia_b_and_ou_mvlp_protocols():
    c = S.CASIA_B
    assert len(c.ids) == 124 and c.ids[0] == "001" and c.ids[-1] == "124"
    assert c.train_ids[-1] == "074" and c.test_ids[0] == "075" and len(c.test_ids) == 50
    assert c.types == ("nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "nm-06", "bg-01", "bg-02", "cl-01", "cl-02")
    assert c.views == tuple(f"{v:03d}" for v in range(0, 181, 18)) and len(c.views) == 11
    assert c.probe_types["CL"] == ("cl-01", "cl-02") and c.gallery_types[-1] == "nm-04"
    o = S.get_spec("OU_MVLP")
    assert len(o.ids) == 10307 and len(o.train_ids) == 5153 and len(o.test_ids) == 5154
    assert not set(o.train_ids) & set(o.test_ids)
    assert o.views == ("000", "015", "030", "045", "060", "075", "090", "180", "195", "210", "225", "240", "255", "270")
    assert o.types == ("00", "01")
    with pytest.raises(ValueError, match="unknown silhouette dataset"):
        S.get_spec("casia-c")


def test_partition_json(tmp_path):
    p = tmp_path / "part.json"
    p.write_text('{"TRAIN_SET": ["00002"], "TEST_SET": ["00001", "00003"]}')
    spec = S.load_partition(S.OU_MVLP, p)
    assert spec.train_ids == ("00002",) and spec.partition("test") == ("00001", "00003")
    p.write_text('{"TRAIN_SET": ["1"], "TEST_SET": ["1"]}')
    with pytest.raises(S.SilhouetteDataError, match="both"):
        S.load_partition(S.OU_MVLP, p)


def test_scan_and_load_pkl_layout(tmp_path):
    _tiny_pkl(tmp_path)
    index = S.scan(tmp_path, _spec())
    assert len(index) == 8 and index.ids == ["001", "002"]
    assert {r.layout for r in index} == {"pkl"}
    rec = next(r for r in index if r.name == "002/nm-02/090")
    arr = S.load_sequence(rec)
    np.testing.assert_array_equal(arr, _seq(13, seed=111))
    assert index.split(_spec(), "train").ids == ["001"]
    assert index.missing(_spec()) == {}


def test_scan_and_load_png_frames_layout(tmp_path):
    import cv2

    raw = np.zeros((6, 240, 320), dtype=np.uint8)
    for t in range(6):
        raw[t, 40 + t: 200, 140 + 3 * t: 180 + 3 * t] = 255
    raw[3] = 0  # a dropout frame: skipped on load
    d = tmp_path / "001" / "nm-01" / "090"
    d.mkdir(parents=True)
    for t in range(6):
        cv2.imwrite(str(d / f"{t:04d}.png"), raw[t])
    index = S.scan(tmp_path)
    assert [(r.name, r.layout) for r in index] == [("001/nm-01/090", "frames")]
    arr = S.load_sequence(index.records[0])
    assert arr.shape == (5, 64, 64) and arr.dtype == np.uint8
    np.testing.assert_array_equal(arr, pretreat_frames(raw).frames)
    # Converting to the pkl layout gives the same frames.
    out = tmp_path / "pkl"
    assert S.convert_frames_to_pkl(index, out) == {"sequences": 1, "skipped_frames": 1}
    np.testing.assert_array_equal(S.load_pkl(out / "001/nm-01/090/090.pkl"), arr)


def test_corrupt_pkl_names_sequence(tmp_path):
    _tiny_pkl(tmp_path)
    path = S.sequence_pkl_path(tmp_path, "001", "nm-01", "090")
    path.write_bytes(path.read_bytes()[:50])
    rec = next(r for r in S.scan(tmp_path) if r.name == "001/nm-01/090")
    with pytest.raises(S.SilhouetteDataError, match=r"001/nm-01/090.*corrupt"):
        S.load_sequence(rec)


@pytest.mark.parametrize("obj, msg", [
    (np.zeros((4, 64, 64), dtype=np.float32), "dtype uint8"),
    (np.zeros((4, 64, 44), dtype=np.uint8), "shape"),
    (np.zeros((0, 64, 64), dtype=np.uint8), "shape"),
    ({"frames": 1}, "got dict"),
    ([1, 2, 3], "got list"),
])
def test_wrong_content_names_sequence(tmp_path, obj, msg):
    path = S.sequence_pkl_path(tmp_path, "007", "bg-02", "036")
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(S.SilhouetteDataError, match=msg) as exc:
        S.load_sequence(S.scan(tmp_path).records[0])
    assert "007/bg-02/036" in str(exc.value)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    target = tmp_path / "pwned"
    path = S.sequence_pkl_path(tmp_path, "001", "nm-01", "000")
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps(_Evil(str(target))))
    with pytest.raises(S.SilhouetteDataError, match="refusing to unpickle"):
        S.load_pkl(path, "001/nm-01/000")
    assert not target.exists()


def test_missing_views_reported(tmp_path):
    _tiny_pkl(tmp_path)
    os.remove(S.sequence_pkl_path(tmp_path, "002", "nm-01", "090"))
    (tmp_path / "002" / "nm-01" / "090").rmdir()
    (tmp_path / "001" / "nm-02" / "000" / "000.pkl").unlink()  # empty view folder: a problem, not a record
    index = S.scan(tmp_path, _spec())
    assert index.missing(_spec()) == {("001", "nm-02"): ["000"], ("002", "nm-01"): ["090"]}
    assert any("001/nm-02/000" in p for p in index.problems)
    report = index.missing_report(_spec())
    assert "002/nm-01: missing view(s) 090" in report
    with pytest.raises(S.SilhouetteDataError, match="001/nm-02: missing view"):
        index.check_complete(_spec())


def test_scan_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        S.scan(tmp_path / "nope")


def test_pickles_written_are_deterministic(tmp_path):
    a = _seq(7)
    S.write_pkl(tmp_path / "a.pkl", a)
    S.write_pkl(tmp_path / "b.pkl", a.copy())
    assert (tmp_path / "a.pkl").read_bytes() == (tmp_path / "b.pkl").read_bytes()
