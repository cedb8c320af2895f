from __future__ import annotations

import os
from pathlib import Path

import pytest

from metagait_edge.data.gyro_validity import (
    GyroTableError, channel_valid, corrupted_gyros, corrupted_table, from_csv, gyro_valid, parse_corrupted_tables,
    to_csv,
)
from metagait_edge.sensors import IMU_CHANNELS

TABLE = """
|File| Right foot | Left foot | Right shank | Left shank | Right thigh | Left thigh |
|----|------------|-----------|------------|-----------|-------------|------------|
|HuGaDB_v1_various_03_00.txt | 	Corrupted		|	OK		| 	Corrupted		|	OK		| 	Corrupted		|	OK		|
| HuGaDB_v1_sitting_05_01.txt |   OK        | Corrupted |           |     OK        |    OK       |    OK        |
"""


def shared_readme():
    root = os.environ.get("METAGAIT_DATA")
    path = Path(root or "", "hugadb", "HuGaDB_README.md")
    if not root or not path.is_file():
        pytest.skip("HuGaDB_README.md not found under $METAGAIT_DATA/hugadb")
    return path


def test_parses_authors_table_in_their_column_order():
    t = parse_corrupted_tables(TABLE)
    assert t["HuGaDB_v1_various_03_00"] == {"rf", "rs", "rt"}
    # The blank right-shank cell is masked, not trusted.
    assert t["HuGaDB_v1_sitting_05_01"] == {"lf", "rs"}


def test_table_errors_name_the_line():
    with pytest.raises(GyroTableError, match=r"README:4: cell 'maybe'"):
        parse_corrupted_tables(TABLE.replace("Corrupted", "maybe", 1), "README")
    with pytest.raises(GyroTableError, match="no corrupted-gyroscope table rows"):
        parse_corrupted_tables("nothing here")
    with pytest.raises(GyroTableError, match="listed twice"):
        parse_corrupted_tables(TABLE + TABLE.splitlines()[3] + "\n")


def test_csv_round_trip():
    t = parse_corrupted_tables(TABLE)
    assert from_csv(to_csv(t, "test")) == t


def test_shipped_table_counts():
    t = corrupted_table()
    assert len(t) == 465 and all(t.values())
    walking = [f for f in t if "_walking_" in f]
    assert 87 - len(walking) == 17  # only 17 of the 87 walking files are fully clean
    assert corrupted_gyros("HuGaDB_v1_walking_06_03") == {"rt"}
    assert gyro_valid("HuGaDB_v1_walking_01_00") == dict.fromkeys(("rf", "rs", "rt", "lf", "ls", "lt"), True)


def test_channel_mask_never_masks_accelerometers():
    for fid in list(corrupted_table())[:50]:
        mask = channel_valid(fid)
        acc = [i for i, c in enumerate(IMU_CHANNELS) if c.startswith("acc")]
        assert mask[acc].all()
        bad = corrupted_gyros(fid)
        assert {c.split("_")[1] for c, ok in zip(IMU_CHANNELS, mask) if not ok} == bad
    assert channel_valid("HuGaDB_v1_walking_04_00", ("knee_r", "gyro_rs_y")).tolist() == [True, False]


def test_shipped_table_is_what_the_generator_makes_from_the_readme():
    path = shared_readme()
    assert parse_corrupted_tables(path.read_text(encoding="utf-8"), str(path)) == dict(corrupted_table())


def test_every_listed_file_exists_in_the_archive():
    root = os.environ.get("METAGAIT_DATA")
    if not root or not os.path.isfile(os.path.join(root, "hugadb", "HuGaDB_v1.tar.xz")):
        pytest.skip("real HuGaDB archive not found under $METAGAIT_DATA/hugadb")
    from metagait_edge.data.hugadb import HuGaDB

    ids = set(HuGaDB.open().file_ids)
    assert set(corrupted_table()) <= ids
    assert sum(1 for f in ids if corrupted_gyros(f)) == 465
