from __future__ import annotations

import os
import stat

import pytest

from metagait_edge.atomic import atomic_path, atomic_write_text, atomic_write_with


def test_write_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]


def test_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_written_file_is_readable_by_others_even_if_the_writer_recreated_it_private(tmp_path):
    target = tmp_path / "weights.bin"

    def private_writer(tmp):
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"w")
        os.close(fd)

    atomic_write_with(target, private_writer)
    assert target.read_bytes() == b"w" and stat.S_IMODE(target.stat().st_mode) == 0o644
