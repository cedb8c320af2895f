from __future__ import annotations

import os

import numpy as np
import pytest

from metagait_edge.data.hugadb import (
    FILE_COLUMNS, IMU_CHANNELS, HuGaDB, HuGaDBConfig, HuGaDBFormatError, parse_file, parse_file_name,
    parse_file_lenient, physical_scale,
)

HEADER = "#Activity\twalking \n#ActivityID\t1 \n#Date 08-22-18-52\n" + "\t".join(FILE_COLUMNS) + "\n"


def _row(values=None, act=1):
    vals = list(values) if values is not None else list(range(36))
    return "\t".join(str(v) for v in vals + [120, 130, act]) + "\n"


def write(tmp_path, body, name="HuGaDB_v1_walking_03_02.txt", header=HEADER):
    p = tmp_path / name
    p.write_text(header + body)
    return p


def real_db():
    root = os.environ.get("METAGAIT_DATA")
    if not root or not os.path.isfile(os.path.join(root, "hugadb", "HuGaDB_v1.tar.xz")):
        pytest.skip("real HuGaDB archive not found under $METAGAIT_DATA/hugadb")
    return HuGaDB.open()


def test_parses_units_metadata_and_channel_names(tmp_path):
    vals = [16384, -16384, 8192, 164, -328, 0] * 6
    p = write(tmp_path, _row(vals) * 3 + _row(vals, act=2))
    rec = parse_file(p)
    assert (rec.subject, rec.activity, rec.repetition) == (3, "walking", 2)
    assert rec.raw.dtype == np.int16 and rec.raw.shape == (4, 36)
    assert rec.channels[0] == "acc_rf_x" and rec.channels[-1] == "gyro_lt_z" and len(rec.channels) == 36
    phys = rec.physical()
    np.testing.assert_allclose(phys[0, :6], [1.0, -1.0, 0.5, 10.0, -20.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(rec.channel("gyro_rs_y"), -20.0, rtol=1e-6)
    assert rec.act.tolist() == [1, 1, 1, 2]
    assert rec.emg.tolist() == [[120, 130]] * 4
    assert rec.n_glitch_rows_dropped == 0 and rec.sample_rate_hz == 58.8
    assert rec.header_activities == ("walking",) and rec.date == "08-22-18-52"


def test_rate_and_scales_come_from_the_config(tmp_path):
    rec = parse_file(write(tmp_path, _row([1000] * 36)), HuGaDBConfig(sample_rate_hz=60.0, gyro_lsb_per_dps=10.0))
    assert rec.sample_rate_hz == 60.0
    assert rec.channel("gyro_rf_x")[0] == pytest.approx(100.0)
    assert physical_scale()[IMU_CHANNELS.index("acc_lt_z")] == pytest.approx(1 / 16384)


def test_glitch_rows_are_dropped_and_counted(tmp_path):
    glitch = [0] * 36
    glitch[16] = -27682432  # as on line 41 of walking_06_03
    p = write(tmp_path, _row() + _row(glitch) + _row() + _row([40000] + [0] * 35))
    rec = parse_file(p)
    assert len(rec) == 2 and rec.n_glitch_rows_dropped == 2
    assert rec.glitch_lines == (6, 8)  # 4 header lines, then data rows 1..4 on lines 5..8
    assert rec.source_rows.tolist() == [0, 2]
    assert np.all(rec.raw.astype(int) == np.arange(36))


def test_lenient_reader_keeps_the_rows_parse_file_keeps_and_skips_what_it_refuses(tmp_path):
    glitch = [0] * 36
    glitch[16] = -27682432
    body = _row() + _row(glitch) + _row([7] * 36) + _row([0] * 36).replace("\t120\t", "\t300\t")  # EMG > 255
    strict = parse_file(write(tmp_path, body))
    lenient = parse_file_lenient(write(tmp_path, body, name="any_name.txt"))
    assert np.array_equal(lenient.rows, strict.raw) and lenient.skipped == strict.n_glitch_rows_dropped == 2
    # no header, spaces instead of tabs, a malformed line in the middle: skipped and counted, not an error
    loose = tmp_path / "walk.txt"
    loose.write_text(_row().replace("\t", " ") + "1 2 3\n" + "\t".join(FILE_COLUMNS) + "\n" + _row([7] * 36))
    rows = parse_file_lenient(loose)
    assert rows.rows.tolist() == [list(range(36)), [7] * 36] and rows.skipped == 1
    with pytest.raises(HuGaDBFormatError, match="expected 39 tab-separated columns"):
        parse_file(write(tmp_path, _row() + "1\t2\t3\n" + _row()))
    empty = tmp_path / "empty.txt"
    empty.write_text("#Activity\n" + _row([40000] * 36))
    with pytest.raises(HuGaDBFormatError, match="empty.txt: no HuGaDB data rows"):
        parse_file_lenient(empty)


@pytest.mark.parametrize("body, message", [
    (_row() + "1\t2\t3\n", r":6: expected 39 tab-separated columns, got 3 \(the file looks truncated\)"),
    (_row() + _row().replace("\t5\t", "\tabc\t", 1) + _row(), r":6: column 6 \(gyro_rf_z\) is not an integer: 'abc'"),
    (_row() + "\t".join(["1"] * 40) + "\n" + _row(), r":6: expected 39 tab-separated columns, got 40"),
    ("", r"no data rows after the header"),
    (_row() + _row(act=13), r":6: activity ID 13 is not one of 1..12"),
])
def test_bad_rows_name_file_and_line(tmp_path, body, message):
    p = write(tmp_path, body)
    with pytest.raises(HuGaDBFormatError, match=message) as info:
        parse_file(p)
    assert str(p) in str(info.value)


def test_bad_header_missing_file_and_bad_name(tmp_path):
    p = write(tmp_path, _row(), header=HEADER.replace("acc_rf_y", "acc_xx_y"))
    with pytest.raises(HuGaDBFormatError, match=r":4: column names differ"):
        parse_file(p)
    p = write(tmp_path, "", header="#Activity\twalking\n#ActivityID\t1\n")
    with pytest.raises(HuGaDBFormatError, match="only 2 line"):
        parse_file(p)
    with pytest.raises(FileNotFoundError, match="HuGaDB_v1_walking_09_09.txt does not exist"):
        parse_file(tmp_path / "HuGaDB_v1_walking_09_09.txt")
    with pytest.raises(HuGaDBFormatError, match="not a HuGaDB v1 file name"):
        parse_file_name("walking_01.txt")
    with pytest.raises(HuGaDBFormatError, match="participant 19"):
        parse_file_name("HuGaDB_v1_walking_19_00.txt")


def test_index_caches_parsed_arrays(tmp_path):
    data = tmp_path / "Data"
    data.mkdir()
    write(data, _row() * 5, name="HuGaDB_v1_walking_01_00.txt")
    write(data, _row() * 2, name="HuGaDB_v1_running_02_00.txt")
    db = HuGaDB(data, cache_dir=tmp_path / "parsed")
    assert db.select("walking") == ["HuGaDB_v1_walking_01_00"] and db.select(subjects=[2]) == ["HuGaDB_v1_running_02_00"]
    first = db.load("HuGaDB_v1_walking_01_00")
    assert (tmp_path / "parsed" / "HuGaDB_v1_walking_01_00.npz").is_file()
    # The cache is used: change the text file, the cached parse stays.
    write(data, _row() * 9, name="HuGaDB_v1_walking_01_00.txt")
    again = db.load("HuGaDB_v1_walking_01_00")
    np.testing.assert_array_equal(again.raw, first.raw)
    assert again.source_rows.tolist() == first.source_rows.tolist()
    with pytest.raises(FileNotFoundError, match="no HuGaDB file 'HuGaDB_v1_walking_05_00'"):
        db.load("HuGaDB_v1_walking_05_00")


def test_real_glitch_row_of_walking_06_03():
    db = real_db()
    rec = parse_file(db.path("HuGaDB_v1_walking_06_03"))
    assert rec.glitch_lines == (41,)
    assert len(rec) == 283 - 4 - 1
    assert rec.raw.min() >= -32768 and rec.raw.max() <= 32767
    assert 36 not in rec.source_rows.tolist()  # data row 37 (0-based 36) is line 41


def test_real_gravity_is_one_g():
    db = real_db()
    rec = db.load("HuGaDB_v1_standing_01_00")
    for s in ("rf", "rs", "rt", "lf", "ls", "lt"):
        norm = np.linalg.norm(rec.acc(s), axis=1)
        assert abs(float(np.median(norm)) - 1.0) < 0.05, s
    walk = db.load("HuGaDB_v1_walking_01_00")
    # +-2 g range: 16384 LSB/g puts int16 full scale at 2 g.
    assert float(np.abs(walk.acc("rs")).max()) == pytest.approx(2.0, abs=1e-3)
    # The shank swings at a few hundred deg/s while walking.
    assert 200 < float(np.percentile(np.abs(walk.channel("gyro_rs_y")), 99)) < 1000


def test_real_file_inventory():
    db = real_db()
    assert len(db.file_ids) == 635
    assert len(db.select("walking")) == 87
    assert sorted({parse_file_name(f + ".txt")[1] for f in db.file_ids}) == list(range(1, 19))
