from __future__ import annotations

import math

import numpy as np
import pytest

from metagait_edge.recognition.metrics import (
    CASIA_B_VIEWS,
    average_precision,
    cross_view_evaluate,
    distance_matrix,
    evaluate_casia_b,
    evaluate_ou_mvlp,
    exclude_identical_view_mean,
    format_result,
)


def test_euclidean_distance_is_averaged_over_strips():
    probe = np.array([[[0.0, 0.0], [1.0, 1.0]]])  # one sequence, two strips
    gallery = np.array([[[3.0, 4.0], [1.0, 1.0]], [[0.0, 0.0], [4.0, 5.0]]])
    d = distance_matrix(probe, gallery, "euclidean")
    np.testing.assert_allclose(d, [[(5.0 + 0.0) / 2, (0.0 + 5.0) / 2]])


def test_cosine_distance_is_one_minus_mean_cosine():
    probe = np.array([[1.0, 0.0]])
    gallery = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [-1.0, 0.0]])
    d = distance_matrix(probe, gallery, "cosine")
    np.testing.assert_allclose(d, [[0.0, 1.0, 1.0 - 1.0 / math.sqrt(2.0), 2.0]], atol=1e-12)
    with pytest.raises(ValueError, match="unknown metric"):
        distance_matrix(probe, gallery, "manhattan")
    with pytest.raises(ValueError, match=r"differ in \[P, D\]"):
        distance_matrix(probe, np.zeros((2, 3)))


def test_average_precision_hand_computed():
    # ranked: relevant, irrelevant, relevant, irrelevant -> (1/1 + 2/3) / 2
    assert average_precision(np.array([0.1, 0.2, 0.3, 0.4]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    assert average_precision(np.array([0.4, 0.1, 0.3, 0.2]), np.array([1, 0, 0, 0])) == pytest.approx(1 / 4)
    assert math.isnan(average_precision(np.array([0.1]), np.array([0])))


def test_exclude_identical_view_mean_ignores_diagonal():
    table = np.array([[100.0, 50.0, 0.0], [10.0, 100.0, 30.0], [np.nan, 40.0, 100.0]])
    np.testing.assert_allclose(exclude_identical_view_mean(table), [25.0, 20.0, 40.0])


def _onehot(i, dim=8):
    v = np.zeros(dim)
    v[i] = 1.0
    return v


def test_cross_view_rank1_is_exactly_half_on_a_built_case():
    # 4 subjects, 2 views; gallery type "g", probe type "p". Probes of subjects 0 and 1 sit on their own
    # gallery embedding; probes of 2 and 3 sit on each other's. Cross-view rank-1 is exactly 50 %.
    emb, ids, types, views = [], [], [], []
    swap = {0: 0, 1: 1, 2: 3, 3: 2}
    for view in ("a", "b"):
        for s in range(4):
            emb += [_onehot(s), _onehot(swap[s])]
            ids += [s, s]
            types += ["g", "p"]
            views += [view, view]
    res = cross_view_evaluate(np.array(emb), ids, types, views, ["g"], {"P": ["p"]}, view_order=["a", "b"])
    np.testing.assert_allclose(res.tables["P"], [[50.0, 50.0], [50.0, 50.0]])
    np.testing.assert_allclose(res.per_view["P"], [50.0, 50.0])
    assert res.mean["P"] == 50.0
    # mAP: one relevant cross-view gallery item per probe; subjects 0,1 find it first (AP 1). For 2 and 3
    # the swapped subject comes first (distance 0), then three items tie at sqrt(2); the stable order of
    # the gallery (subjects 0..3) puts the relevant one at rank 4 for subject 2 and rank 4 for subject 3.
    assert res.map["P"] == pytest.approx(100.0 * (1 + 1 + 1 / 4 + 1 / 4) / 4)


def test_identical_view_matches_are_excluded():
    # Same-view gallery holds a perfect match; the other view only wrong ones -> cross-view rank-1 is 0.
    emb = np.array([_onehot(0), _onehot(0), _onehot(1), _onehot(5), 0.9 * _onehot(0)])
    ids = [0, 0, 1, 0, 1]
    types = ["p", "g", "g", "g", "g"]
    views = ["a", "a", "a", "b", "b"]
    res = cross_view_evaluate(emb, ids, types, views, ["g"], {"P": ["p"]}, view_order=["a", "b"])
    assert res.tables["P"][0, 0] == 100.0  # identical view, reported in the table ...
    assert res.tables["P"][0, 1] == 0.0
    assert res.per_view["P"][0] == 0.0  # ... but excluded from the per-view mean
    assert np.isnan(res.per_view["P"][1])  # no probe at view b
    # mAP also ignores the same-view gallery: relevant item (id 0, view b) is ranked 2nd of 2 -> AP 1/2
    assert res.map["P"] == pytest.approx(50.0)


def _casia_like(n_subjects=3, perfect=("nm",)):
    emb, ids, types, views = [], [], [], []
    for s in range(n_subjects):
        for t in ["nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "nm-06", "bg-01", "bg-02", "cl-01", "cl-02"]:
            for v in CASIA_B_VIEWS:
                good = t.startswith(perfect) or t.startswith("nm-0") and int(t[-1]) <= 4
                emb.append(_onehot(s if good else (s + 1) % n_subjects))
                ids.append(f"{s + 75:03d}")
                types.append(t)
                views.append(v)
    return np.array(emb)[:, None, :], ids, types, views


def test_casia_b_protocol_and_table():
    res = evaluate_casia_b(*_casia_like(perfect=("nm", "bg")))
    assert res.views == CASIA_B_VIEWS
    assert set(res.tables) == {"NM", "BG", "CL"}
    assert res.tables["NM"].shape == (11, 11)
    assert res.mean["NM"] == 100.0 and res.mean["BG"] == 100.0 and res.mean["CL"] == 0.0
    assert res.map["NM"] == pytest.approx(100.0) and res.map["CL"] < 100.0
    text = format_result(res, full_tables=True)
    lines = text.splitlines()
    assert "000" in lines[1] and "180" in lines[1] and "mean" in lines[1]
    assert lines[2].startswith("NM") and lines[2].split()[-2] == "100.0"
    assert len(lines[2].split()) == 1 + 11 + 2  # condition, 11 probe views, mean, mAP
    assert all(len(line.split()) == 12 for line in lines[7:18])  # full table rows: view + 11 cells
    assert lines[4].startswith("CL") and lines[4].split()[-2] == "0.0"
    assert "rows probe view" in text and text.count("\n090") == 3


def test_casia_b_errors_name_the_problem():
    emb, ids, types, views = _casia_like()
    with pytest.raises(ValueError, match="views"):
        evaluate_casia_b(emb, ids, types, views[:-1])
    bad_views = list(views)
    bad_views[0] = "045"
    with pytest.raises(ValueError, match="045"):
        evaluate_casia_b(emb, ids, types, bad_views)
    only_nm = [i for i, t in enumerate(types) if t.startswith("nm")]
    with pytest.raises(ValueError, match="BG"):
        evaluate_casia_b(emb[only_nm], [ids[i] for i in only_nm], [types[i] for i in only_nm],
                         [views[i] for i in only_nm])
    nan = emb.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_casia_b(nan, ids, types, views)


def test_ou_mvlp_missing_gallery_identity_conventions():
    # Views 000 and 015 only. Subject 2 has no gallery sequence at view 015.
    emb, ids, types, views = [], [], [], []
    for s in range(3):
        for v in ("000", "015"):
            emb.append(_onehot(s))
            ids.append(s)
            types.append("00")
            views.append(v)
            if not (s == 2 and v == "015"):
                emb.append(_onehot(s))
                ids.append(s)
                types.append("01")
                views.append(v)
    counted = evaluate_ou_mvlp(np.array(emb), ids, types, views)
    excluded = evaluate_ou_mvlp(np.array(emb), ids, types, views, missing="exclude")
    assert counted.tables["NM"].shape == (14, 14)
    assert counted.tables["NM"][0, 1] == pytest.approx(200.0 / 3)  # 2 of 3 probes at 000 find 015 match
    assert excluded.tables["NM"][0, 1] == 100.0
    assert counted.tables["NM"][1, 0] == 100.0 == excluded.tables["NM"][1, 0]
    assert counted.per_view["NM"][0] == pytest.approx(200.0 / 3)
    assert np.isnan(counted.per_view["NM"][2])  # view 030 has no data
    assert counted.mean["NM"] == pytest.approx((200.0 / 3 + 100.0) / 2)
