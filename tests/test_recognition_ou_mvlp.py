"""OU-MVLP through the recognition pipeline (OpenGait's split, gallery 01 / probe 00, 14 views) and short
sequences, on a tiny synthetic fixture in the OpenGait layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metagait_edge.data import silhouettes as S
from metagait_edge.models.metagait import MetaGait
from metagait_edge.recognition import evaluate as E
from metagait_edge.recognition.config import config_from_dict
from metagait_edge.recognition.metrics import OU_MVLP_VIEWS

TEST_IDS = ("00002", "00004", "00006")
VIEWS = ("000", "030", "090", "180")


def _sequence(identity: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [T, 64, 64]: a block whose height and width depend on the identity, with a little noise."""
    seq = np.zeros((frames, 64, 64), np.uint8)
    h, w = 20 + 8 * identity, 6 + 3 * identity
    for t in range(frames):
        top = 4 + int(rng.integers(0, 3))
        seq[t, top:top + h, 32 - w // 2:32 + w // 2] = 255
    return seq


@pytest.fixture()
def ou_mvlp_root(tmp_path):
    rng = np.random.default_rng(0)
    for sid in ("00001",) + TEST_IDS + ("00003",):  # 00001 and 00003 are OpenGait training ids
        for stype in ("00", "01"):
            for view in VIEWS:
                # One test probe is only 2 frames long: it must be embedded, not abort the evaluation.
                frames = 2 if (sid, stype, view) == ("00004", "00", "090") else 9
                S.write_pkl(S.sequence_pkl_path(tmp_path, sid, stype, view), _sequence(int(sid), frames, rng))
    return tmp_path


def test_default_ou_mvlp_split_is_opengaits_odd_even_one():
    spec = S.get_spec("ou-mvlp")
    assert len(spec.train_ids) == 5153 and len(spec.test_ids) == 5154
    assert spec.train_ids[:3] == ("00001", "00003", "00005") and spec.train_ids[-1] == "10305"
    assert spec.test_ids[:2] == ("00002", "00004") and spec.test_ids[-2:] == ("10306", "10307")
    assert not set(spec.train_ids) & set(spec.test_ids)


def test_evaluation_dispatches_to_the_ou_mvlp_protocol():
    # 2 identities, gallery sequence 01, probe 00, views 000 and 015; walker "a" sits near 0, "b" near 10,
    # except a's sequence 01 in view 015 (10.2), which sits closer to b's probe in view 000 (10) than b's own
    # gallery sequence in view 015 (10.5) does. With identical views excluded that is the only comparison
    # b's view-000 probe gets, so NM rank-1 is 3 of 4.
    ids, types, views, emb = [], [], [], []
    for sid, base in (("a", 0.0), ("b", 10.0)):
        for stype in ("00", "01"):
            for view, offset in (("000", 0.0), ("015", 0.5)):
                ids.append(sid), types.append(stype), views.append(view)
                emb.append([10.2 if (sid, stype, view) == ("a", "01", "015") else base + offset])
    e = E.Embeddings(np.array(emb)[:, None, :], np.array(ids), np.array(types), np.array(views))
    result = E.evaluate_embeddings(e, "euclidean", dataset="ou-mvlp")
    assert result.views == OU_MVLP_VIEWS and set(result.mean) == {"NM"}
    # probe view 000: a hits, b misses (50 %); probe view 015: both hit (100 %).
    assert result.mean["NM"] == pytest.approx(75.0)
    assert E.summary_numbers(result).keys() == {"NM", "mAP"}
    # The CASIA-B protocol (what evaluation always ran before) refuses OU-MVLP's views.
    with pytest.raises(ValueError, match="not in the protocol's views"):
        E.evaluate_embeddings(e, "euclidean", dataset="casia-b")


def test_ou_mvlp_fixture_through_the_pipeline_with_a_short_sequence(ou_mvlp_root):
    cfg = config_from_dict({
        "name": "ou-tiny", "variant": "metagait",
        "model": {"channels": [4, 8, 8], "input_height": 32, "input_width": 22, "local_parts": 4,
                  "strip_bins": [4], "num_classes": 0, "mta_descriptor_channels": 4, "mta_gate_hidden": 4,
                  "mhn_hidden": 4},
        "loss": {"terms": [{"kind": "triplet", "output": "embeddings"}]},
        "data": {"dataset": "ou-mvlp", "root": str(ou_mvlp_root)},
    })
    val_index, test_index = E.test_indices(cfg.data, quick=True, log=None)
    assert val_index is None and test_index.ids == list(TEST_IDS)  # OpenGait's test ids only
    torch.manual_seed(0)
    model = MetaGait(cfg.model).eval()
    out = E.evaluate_model(model, cfg, None, test_index)
    assert out["result"].dataset == "ou-mvlp" and set(out["summary"]) == {"NM", "mAP"}
    assert out["padded_sequences"] == ["00004/00/090"]
    assert 0.0 <= out["summary"]["NM"] <= 100.0
    table = out["result"].tables["NM"]
    present = [OU_MVLP_VIEWS.index(v) for v in VIEWS]
    assert np.isfinite(table[np.ix_(present, present)]).all()
    assert np.isnan(np.delete(table, present, axis=0)).all()  # views without sequences stay empty


def test_short_sequences_are_repeated_not_fatal():
    one = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = E.repeat_to_min_frames(one[:1], "x/00/000")
    assert padded.shape == (3, 3, 3) and (padded == one[0]).all()
    two = E.repeat_to_min_frames(one, "x/00/000")
    assert [int(f[0, 0]) for f in two] == [int(one[0, 0, 0]), int(one[1, 0, 0]), int(one[0, 0, 0])]
    assert E.repeat_to_min_frames(np.zeros((5, 3, 3)), "x").shape == (5, 3, 3)
    with pytest.raises(ValueError, match="x/00/000 has no frames"):
        E.repeat_to_min_frames(one[:0], "x/00/000")
