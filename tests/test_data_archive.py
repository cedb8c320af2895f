from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from metagait_edge.cli import main
from metagait_edge.data import archive
from metagait_edge.data.archive import ArchiveError, prepare_archive, prepare_hugadb
from metagait_edge.paths import DataNotFoundError

HEADER = "#Activity\twalking \n#ActivityID\t1 \n#Date 08-22-18-52\n"


def _hugadb_text(rows: int = 3) -> str:
    from metagait_edge.data.hugadb import FILE_COLUMNS

    body = "".join("\t".join(["100"] * 36 + ["120", "130", "1"]) + "\n" for _ in range(rows))
    return HEADER + "\t".join(FILE_COLUMNS) + "\n" + body


def make_archive(folder: Path, name: str = "HuGaDB_v1.tar.xz", files: dict[str, str] | None = None,
                 write_sums: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = files or {"HuGaDB_v1_walking_01_00.txt": _hugadb_text(), "HuGaDB_v1_walking_01_01.txt": _hugadb_text(5)}
    path = folder / name
    with tarfile.open(path, "w:xz") as tf:
        for fname, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"HuGaDB/Data/{fname}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    if write_sums:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        (folder / "SHA256SUMS").write_text(f"{digest}  {name}\n")
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METAGAIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_extracts_once_into_cache_keyed_by_checksum(tmp_path, cache):
    arc = make_archive(tmp_path / "data" / "hugadb")
    first = prepare_archive(arc, "hugadb", "HuGaDB_v1_*.txt")
    assert first.extracted_now
    assert first.data_dir.name == "Data" and len(list(first.data_dir.glob("*.txt"))) == 2
    assert first.cache_root == cache / "hugadb" / first.sha256[:16]
    marker = first.extracted / archive.MARKER_NAME
    stamp = marker.stat().st_mtime_ns
    (first.data_dir / "sentinel").write_text("kept")  # a re-extraction would wipe this
    second = prepare_archive(arc, "hugadb", "HuGaDB_v1_*.txt")
    assert not second.extracted_now
    assert second.data_dir == first.data_dir
    assert marker.stat().st_mtime_ns == stamp and (first.data_dir / "sentinel").exists()
    assert not [p for p in first.cache_root.iterdir() if p.name.startswith(".extract-")]


def test_checksum_mismatch_is_a_clear_error(tmp_path, cache):
    arc = make_archive(tmp_path / "hugadb")
    (tmp_path / "hugadb" / "SHA256SUMS").write_text(f"{'0' * 64}  {arc.name}\n")
    with pytest.raises(ArchiveError, match="checksum mismatch for .*HuGaDB_v1.tar.xz"):
        prepare_archive(arc, "hugadb", "HuGaDB_v1_*.txt")
    assert not (cache / "hugadb").exists() or not any((cache / "hugadb").iterdir())


def test_truncated_archive_is_a_clear_error_and_leaves_nothing(tmp_path, cache):
    arc = make_archive(tmp_path / "hugadb", files={f"HuGaDB_v1_walking_01_{i:02d}.txt": _hugadb_text(400) for i in range(3)})
    data = arc.read_bytes()
    arc.write_bytes(data[: len(data) // 2])
    (tmp_path / "hugadb" / "SHA256SUMS").write_text(f"{hashlib.sha256(arc.read_bytes()).hexdigest()}  {arc.name}\n")
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        prepare_archive(arc, "hugadb", "HuGaDB_v1_*.txt")
    leftovers = [p for p in (cache / "hugadb").rglob("*") if p.name == "extracted" or p.name.startswith(".extract-")]
    assert leftovers == []


def test_unsafe_member_is_refused(tmp_path, cache):
    folder = tmp_path / "hugadb"
    folder.mkdir()
    arc = folder / "evil.tar.xz"
    with tarfile.open(arc, "w:xz") as tf:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    (folder / "SHA256SUMS").write_text(f"{hashlib.sha256(arc.read_bytes()).hexdigest()}  evil.tar.xz\n")
    with pytest.raises(ArchiveError, match="unsafe member path"):
        prepare_archive(arc, "hugadb", "*.txt")


def test_sums_file_without_entry_names_the_archive(tmp_path, cache):
    arc = make_archive(tmp_path / "hugadb")
    (tmp_path / "hugadb" / "SHA256SUMS").write_text(f"{'1' * 64}  other.tar.xz\n")
    with pytest.raises(ArchiveError, match="has no checksum for HuGaDB_v1.tar.xz"):
        prepare_archive(arc, "hugadb", "*.txt")


def test_missing_data_root_and_missing_archive(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("METAGAIT_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError, match=r"nowhere.*METAGAIT_DATA.*data fetch hugadb"):
        prepare_hugadb()
    (tmp_path / "root").mkdir()
    monkeypatch.setenv("METAGAIT_DATA", str(tmp_path / "root"))
    with pytest.raises(DataNotFoundError, match=r"root/hugadb/HuGaDB_v1.tar.xz.*data fetch hugadb"):
        prepare_hugadb()


def test_cli_prepare_and_info_on_a_small_archive(tmp_path, cache, monkeypatch, capsys):
    make_archive(tmp_path / "root" / "hugadb")
    monkeypatch.setenv("METAGAIT_DATA", str(tmp_path / "root"))
    assert main(["data", "prepare", "hugadb"]) == 0
    out = capsys.readouterr().out
    assert "(verified)" in out and "extracted now" in out and "2 data files" in out
    assert main(["data", "prepare", "hugadb"]) == 0
    assert "already extracted" in capsys.readouterr().out
    assert main(["data", "info", "hugadb", "--no-cycles"]) == 0
    out = capsys.readouterr().out
    assert "files    : 2 (walking 2)" in out and "subjects : 1 (1..1)" in out


def test_cli_missing_data_root_is_one_clear_line(tmp_path, cache, monkeypatch, capsys):
    monkeypatch.setenv("METAGAIT_DATA", str(tmp_path / "absent"))
    assert main(["data", "prepare", "hugadb"]) == 1
    err = capsys.readouterr().err
    assert "absent" in err and "Traceback" not in err


def test_fetch_downloads_records_checksum_and_prepares(tmp_path, cache, monkeypatch, capsys):
    src = make_archive(tmp_path / "upstream", name="HumanGaitDataBase.tar.xz", write_sums=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    url = src.as_uri()
    assert main(["data", "fetch", "hugadb", "--url", url]) == 0
    dest = tmp_path / "xdg" / "metagait-edge" / "data" / "hugadb"
    assert (dest / "HumanGaitDataBase.tar.xz").read_bytes() == src.read_bytes()
    sums = archive.read_sums(dest / "SHA256SUMS")
    assert sums["HumanGaitDataBase.tar.xz"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert "2 data files" in capsys.readouterr().out
    # A pinned wrong checksum refuses the download.
    (dest / "HumanGaitDataBase.tar.xz").unlink()
    assert main(["data", "fetch", "hugadb", "--url", url, "--sha256", "f" * 64]) == 1
    assert "checksum mismatch" in capsys.readouterr().err


def test_fetch_reports_unreachable_url(tmp_path, cache, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    missing = (tmp_path / "no-such.zip").as_uri()
    assert main(["data", "fetch", "hugadb", "--url", missing]) == 1
    assert "cannot download" in capsys.readouterr().err


@pytest.mark.skipif(not os.environ.get("METAGAIT_DATA")
                    or not os.path.isfile(os.path.join(os.environ.get("METAGAIT_DATA", ""), "hugadb", "HuGaDB_v1.tar.xz")),
                    reason="real HuGaDB archive not found under $METAGAIT_DATA/hugadb")
def test_real_archive_checksum_matches_the_known_one():
    arc = archive.find_hugadb_archive()
    assert archive.expected_sha256(arc) == archive.KNOWN_SHA256["HuGaDB_v1.tar.xz"]
    prepared = prepare_hugadb()
    assert len(list(prepared.data_dir.glob("HuGaDB_v1_*.txt"))) == 635


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("METAGAIT_DATA")
                    or not os.path.isfile(os.path.join(os.environ.get("METAGAIT_DATA", ""), "hugadb", "HuGaDB_v1.tar.xz")),
                    reason="real HuGaDB archive not found under $METAGAIT_DATA/hugadb")
def test_cli_info_on_the_real_archive(capsys):
    assert main(["data", "info", "hugadb"]) == 0
    out = capsys.readouterr().out
    assert "files    : 635" in out and "subjects : 18 (1..18)" in out
    assert "gyro     : 465 files" in out and "glitches : 6 rows dropped" in out
    assert "cycles   : walking" in out and "cycles   : stairs_up" in out
