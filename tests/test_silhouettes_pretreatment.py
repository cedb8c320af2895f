from __future__ import annotations

import numpy as np
import pytest

from metagait_edge.data.pretreatment import (
    PretreatmentError, cut_width, pretreat_frame, pretreat_frames, to_model_input,
)


def _frame(h=240, w=320):
    return np.zeros((h, w), dtype=np.uint8)


def test_tight_vertical_crop_and_resize_to_64():
    f = _frame()
    f[50:150, 100:140] = 255  # 100 tall, 40 wide
    out = pretreat_frame(f)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    rows = np.flatnonzero(out.max(axis=1) > 127)
    assert rows[0] == 0 and rows[-1] == 63  # the foreground spans the full height after the crop
    cols = np.flatnonzero(out.max(axis=0) > 127)
    # Aspect kept: 40/100 * 64 = 25.6 px wide.
    assert 24 <= len(cols) <= 28


def test_centred_on_column_mass_median_not_bbox_centre():
    f = _frame()
    f[20:220, 100:140] = 255  # the body
    f[60:64, 140:260] = 255  # a long thin outstretched arm to the right
    out = pretreat_frame(f).astype(np.float64)
    mass = out.sum(axis=0)
    median_col = np.searchsorted(np.cumsum(mass), mass.sum() / 2)
    assert abs(median_col - 32) <= 1
    # The body (not the arm) is where the centre is: bbox centre would put the body far left.
    body_cols = np.flatnonzero(out[40] > 127)
    assert body_cols.min() < 32 < body_cols.max()


def test_left_and_right_shift_give_same_output():
    a, b = _frame(), _frame()
    a[30:200, 40:90] = 255
    b[30:200, 200:250] = 255
    np.testing.assert_array_equal(pretreat_frame(a), pretreat_frame(b))


def test_person_at_image_border_is_padded():
    f = _frame()
    f[30:200, 0:30] = 255  # half out of the picture on the left
    out = pretreat_frame(f)
    assert out.shape == (64, 64) and out.max() == 255


def test_empty_frames_skipped_and_counted():
    good = _frame()
    good[40:200, 150:190] = 255
    speck = _frame()
    speck[10:12, 10:12] = 255  # 4 pixels: below the foreground threshold
    res = pretreat_frames([good, _frame(), speck, good], name="001/nm-01/090")
    assert res.frames.shape == (2, 64, 64)
    assert res.n_input == 4 and res.n_skipped == 2


def test_no_valid_frame_names_sequence():
    with pytest.raises(PretreatmentError, match="001/nm-01/090"):
        pretreat_frames([_frame(), _frame()], name="001/nm-01/090")


def test_cut_width_and_model_input():
    arr = np.zeros((3, 64, 64), dtype=np.uint8)
    arr[:, :, 10] = 255
    arr[:, :, 9] = 255
    assert cut_width(arr).shape == (3, 64, 44)
    x = to_model_input(arr)
    assert x.dtype == np.float32 and x.shape == (3, 64, 44)
    assert x[:, :, 0].min() == 1.0 and x.max() == 1.0  # column 10 kept as the first, column 9 cut
    with pytest.raises(ValueError, match="shape"):
        to_model_input(np.zeros((3, 64, 44), dtype=np.uint8))
