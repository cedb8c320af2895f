from __future__ import annotations

import json

import numpy as np
import pytest

from metagait_edge.data.cycles import CycleSet
from metagait_edge.data.normalization import ChannelNormalizer, fit_normalizer


def make(subject_values):
    """One cycle per (subject, value): channel 0 == value, channel 1 == 10*value, channel 2 masked junk."""
    subj = np.array([s for s, _ in subject_values], np.int16)
    vals = np.array([v for _, v in subject_values], np.float32)
    n = len(vals)
    cycles = np.zeros((n, 3, 101), np.float32)
    cycles[:, 0] = vals[:, None]
    cycles[:, 1] = 10 * vals[:, None]
    cycles[:, 2] = 1e6
    valid = np.ones((n, 3), bool)
    valid[:, 2] = False
    valid[0, 1] = False
    return CycleSet(cycles, ("x", "y", "junk"), valid, subj, np.array([f"f{i}" for i in range(n)]),
                    np.array(["walking"] * n), np.zeros(n, np.int16), np.zeros(n, np.int32), np.full(n, 50, np.int32),
                    np.arange(n, dtype=np.int32), np.zeros(n, np.int32), np.zeros(n, bool))


def test_statistics_use_only_training_subjects_and_valid_entries():
    cs = make([(1, 1.0), (1, 3.0), (2, 5.0), (2, 7.0), (3, 100.0), (3, -100.0)])
    norm = fit_normalizer(cs, subjects=[1, 2])
    assert norm.subjects == (1, 2)
    assert norm.mean[0] == pytest.approx(4.0) and norm.std[0] == pytest.approx(np.std([1, 3, 5, 7]))
    # Cycle 0 has channel y masked: only 30, 50, 70 count.
    assert norm.mean[1] == pytest.approx(50.0) and norm.std[1] == pytest.approx(np.std([30, 50, 70]))
    assert norm.count.tolist() == [4, 3, 0]
    assert norm.mean[2] == 0.0 and norm.std[2] == 1.0  # never valid: identity, not 1e6
    other = fit_normalizer(cs, subjects=[3])
    assert other.mean[0] == pytest.approx(0.0) and other.std[0] == pytest.approx(100.0)


def test_apply_invert_transform():
    cs = make([(1, 1.0), (1, 3.0), (2, 5.0)])
    norm = fit_normalizer(cs, [1, 2])
    z = norm.transform(cs)
    assert np.all(z.cycles[:, 2] == 0.0)  # masked entries stay 0
    assert z.cycles[1:, 0].mean() == pytest.approx(norm.apply(cs.cycles)[1:, 0].mean())
    np.testing.assert_allclose(norm.invert(norm.apply(cs.cycles))[:, :2], cs.cycles[:, :2], rtol=1e-5)
    assert cs.cycles[0, 2, 0] == 1e6  # the input set is not modified
    with pytest.raises(ValueError, match="channels"):
        norm.transform(cs.select_channels(["x", "y"]))


def test_round_trip_through_json_sidecar():
    norm = fit_normalizer(make([(1, 1.0), (2, 2.0)]), [1, 2])
    back = ChannelNormalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert back.channels == norm.channels and back.subjects == norm.subjects
    np.testing.assert_array_equal(back.mean, norm.mean)
    np.testing.assert_array_equal(back.std, norm.std)
    bad = norm.to_dict()
    bad["std"] = bad["std"][:2]
    with pytest.raises(ValueError, match="'std' has \\(2,\\) values for 3 channels"):
        ChannelNormalizer.from_dict(bad)
    with pytest.raises(ValueError, match="lacks key\\(s\\) subjects"):
        ChannelNormalizer.from_dict({k: v for k, v in norm.to_dict().items() if k != "subjects"})


def test_bad_subject_lists():
    cs = make([(1, 1.0), (2, 2.0)])
    with pytest.raises(ValueError, match="at least one training subject"):
        fit_normalizer(cs, [])
    with pytest.raises(ValueError, match=r"training subject\(s\) \[7\] have no cycles"):
        fit_normalizer(cs, [1, 7])
