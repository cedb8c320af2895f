"""Dataset archives: checksum verification and one-time, atomic extraction into the cache.

An archive lives in the data root as the file its publisher released (e.g.
``$METAGAIT_DATA/hugadb/HuGaDB_v1.tar.xz``) next to a ``SHA256SUMS`` file. ``prepare_archive``
verifies the checksum, extracts the archive once into ``paths.cache_dir()/<dataset>/<sha16>/extracted``
(a temporary folder renamed into place, with a marker written before the rename, so a crash never
leaves a half-extracted folder that looks complete) and returns the extracted folder. The cache key is
the archive checksum, so a different archive never reuses stale files.

Hashing 143 MB takes about half a second; a small memo keyed by (path, size, mtime) makes repeated
calls on an unchanged archive instant.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import lzma
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from metagait_edge import paths
from metagait_edge.atomic import atomic_write_text
from metagait_edge.hashing import file_sha256
from metagait_edge.paths import DataNotFoundError

log = logging.getLogger(__name__)

SUMS_NAME = "SHA256SUMS"
MARKER_NAME = ".metagait-extracted"

HUGADB_DATASET = "hugadb"
HUGADB_ARCHIVE_NAME = "HuGaDB_v1.tar.xz"
# The authors publish the v1 text release in their GitHub repository as one zip (stored with Git LFS,
# hence the media host). Upstream publishes no checksum for it: ``data fetch`` records the checksum of
# what it downloaded unless ``--sha256`` pins one. The repackaged tar.xz of the shared data root has the
# checksum below.
HUGADB_URL = "https://media.githubusercontent.com/media/romanchereshnev/HuGaDB/master/HumanGaitDataBase.zip"
KNOWN_SHA256 = {
    HUGADB_ARCHIVE_NAME: "f0619beffbf7459f977483ea703b466a52bd93513268e9792cee7c078bf07c3d",
}
# Archive names tried, in order, in <data root>/hugadb/.
HUGADB_ARCHIVE_CANDIDATES = (HUGADB_ARCHIVE_NAME, "HumanGaitDataBase.zip", "HuGaDB.zip")


class ArchiveError(ValueError):
    """An archive is corrupt, truncated, unsafe or does not match its checksum; the message names it."""


@dataclass(frozen=True)
class PreparedArchive:
    archive: Path
    sha256: str
    extracted: Path  # the extraction root in the cache
    data_dir: Path  # the folder that holds the data files
    cache_root: Path  # paths.cache_dir()/<dataset>/<sha16>: derived caches (parsed arrays, cycles) go here
    extracted_now: bool  # False when a previous extraction was reused


def _memo_path(path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode("utf-8")).hexdigest()[:24]
    return paths.cache_dir() / "sha256-memo" / f"{key}.json"


def cached_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of ``path``, memoized in the cache by (resolved path, size, mtime_ns)."""
    path = Path(path)
    st = path.stat()
    memo = _memo_path(path)
    with contextlib.suppress(OSError, ValueError, KeyError):
        data = json.loads(memo.read_text(encoding="utf-8"))
        if data["size"] == st.st_size and data["mtime_ns"] == st.st_mtime_ns and data["path"] == str(path.resolve()):
            return str(data["sha256"])
    digest = file_sha256(path)
    with contextlib.suppress(OSError):
        atomic_write_text(memo, json.dumps({"path": str(path.resolve()), "size": st.st_size,
                                            "mtime_ns": st.st_mtime_ns, "sha256": digest}))
    return digest


def read_sums(sums_path: str | os.PathLike) -> dict[str, str]:
    """Parse a ``sha256sum``-style file: ``<hex>  <name>`` (``*name`` for binary mode) per line."""
    sums_path = Path(sums_path)
    out: dict[str, str] = {}
    for lineno, line in enumerate(sums_path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2 or len(parts[0]) != 64 or any(c not in "0123456789abcdefABCDEF" for c in parts[0]):
            raise ArchiveError(f"{sums_path}:{lineno}: not a '<sha256>  <file name>' line: {line!r}")
        out[parts[1].lstrip("*").strip()] = parts[0].lower()
    return out


def expected_sha256(archive: Path) -> str:
    """The checksum ``archive`` must have: from SHA256SUMS beside it, else a checksum known to the code."""
    sums = archive.parent / SUMS_NAME
    if sums.is_file():
        table = read_sums(sums)
        if archive.name in table:
            return table[archive.name]
        raise ArchiveError(f"{sums} has no checksum for {archive.name} (it lists: {', '.join(sorted(table)) or 'nothing'})")
    if archive.name in KNOWN_SHA256:
        return KNOWN_SHA256[archive.name]
    raise ArchiveError(
        f"no checksum for {archive}: put a '{SUMS_NAME}' file beside it (sha256sum {archive.name} > {SUMS_NAME})"
    )


def verify_archive(archive: str | os.PathLike) -> str:
    """Check ``archive`` against its expected checksum; return the checksum."""
    archive = Path(archive)
    if not archive.is_file():
        raise DataNotFoundError(f"archive {archive} does not exist")
    want = expected_sha256(archive)
    got = cached_sha256(archive)
    if got != want:
        raise ArchiveError(
            f"checksum mismatch for {archive}: expected {want}, got {got} "
            f"(the file is incomplete or a different release; delete it and fetch it again)"
        )
    return got


def _safe_members(tf: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = []
    for m in tf.getmembers():
        name = m.name
        if name.startswith("/") or ".." in Path(name).parts:
            raise ArchiveError(f"{archive}: unsafe member path {name!r}")
        if not (m.isfile() or m.isdir()):
            raise ArchiveError(f"{archive}: member {name!r} is a link or device; refusing to extract")
        members.append(m)
    return members


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tf:
        members = _safe_members(tf, archive)
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, members=members, filter="data")
        else:  # Python < 3.10.12: members were checked above
            tf.extractall(dest, members=members)


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            if name.startswith("/") or ".." in Path(name).parts:
                raise ArchiveError(f"{archive}: unsafe member path {name!r}")
        bad = zf.testzip()
        if bad is not None:
            raise ArchiveError(f"{archive}: member {bad!r} fails its CRC check (corrupt archive)")
        zf.extractall(dest)


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract a .tar[.xz|.gz|.bz2] or .zip archive into ``dest``; truncation or corruption -> ArchiveError."""
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, dest)
        else:
            _extract_tar(archive, dest)
    except ArchiveError:
        raise
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(
            f"cannot extract {archive}: {type(exc).__name__}: {exc} "
            f"(the archive is truncated or corrupt; delete it and fetch it again)"
        ) from exc


def find_data_dir(root: Path, pattern: str) -> Path:
    """The folder under ``root`` holding the most files matching ``pattern`` (archives differ in layout)."""
    counts: dict[Path, int] = {}
    for p in root.rglob(pattern):
        if p.is_file():
            counts[p.parent] = counts.get(p.parent, 0) + 1
    if not counts:
        raise ArchiveError(f"no files matching {pattern!r} under {root}: the archive does not hold the dataset")
    return max(counts, key=lambda d: (counts[d], -len(d.parts)))


def prepare_archive(archive: str | os.PathLike, dataset: str, data_pattern: str) -> PreparedArchive:
    """Verify ``archive`` and extract it once into the cache; return where its data files are."""
    archive = Path(archive)
    sha = verify_archive(archive)
    cache_root = paths.cache_dir() / dataset / sha[:16]
    final = cache_root / "extracted"
    marker = final / MARKER_NAME
    if marker.is_file():
        return PreparedArchive(archive, sha, final, find_data_dir(final, data_pattern), cache_root, False)
    if final.exists():
        # A folder without the marker is not ours to trust (e.g. copied by hand); redo it.
        log.warning("removing incomplete extraction %s", final)
        shutil.rmtree(final)
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache_root))
    try:
        log.info("extracting %s into %s", archive, final)
        extract_archive(archive, tmp)
        data_dir = find_data_dir(tmp, data_pattern)
        (tmp / MARKER_NAME).write_text(
            json.dumps({"archive": str(archive), "sha256": sha, "data_dir": str(data_dir.relative_to(tmp))}),
            encoding="utf-8",
        )
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished first; use its copy when it is complete.
            if not marker.is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return PreparedArchive(archive, sha, final, find_data_dir(final, data_pattern), cache_root, False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PreparedArchive(archive, sha, final, find_data_dir(final, data_pattern), cache_root, True)


def hugadb_dir(data_root: str | os.PathLike | None = None) -> Path:
    root = Path(data_root) if data_root is not None else paths.data_root(required=True)
    if not root.is_dir():
        raise DataNotFoundError(
            f"data root {root} does not exist: set {paths.DATA_ENV} to the folder that holds "
            f"hugadb/{HUGADB_ARCHIVE_NAME}, or run `metagait-edge data fetch hugadb`"
        )
    return root / HUGADB_DATASET


def find_hugadb_archive(data_root: str | os.PathLike | None = None) -> Path:
    folder = hugadb_dir(data_root)
    for name in HUGADB_ARCHIVE_CANDIDATES:
        if (folder / name).is_file():
            return folder / name
    raise DataNotFoundError(
        f"HuGaDB archive not found: expected {folder / HUGADB_ARCHIVE_NAME} (with {SUMS_NAME} beside it). "
        f"Set {paths.DATA_ENV} to the folder that holds hugadb/{HUGADB_ARCHIVE_NAME}, "
        f"or run `metagait-edge data fetch hugadb`"
    )


def prepare_hugadb(data_root: str | os.PathLike | None = None) -> PreparedArchive:
    """Verify and extract (once) the HuGaDB archive of the data root; return its Data folder and cache."""
    return prepare_archive(find_hugadb_archive(data_root), HUGADB_DATASET, "HuGaDB_v1_*.txt")


def download(url: str, dest: str | os.PathLike, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (atomically, with a tqdm progress bar)."""
    import urllib.request

    from tqdm import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        req = urllib.request.Request(url, headers={"User-Agent": "metagait-edge"})
        with urllib.request.urlopen(req, timeout=timeout) as resp, os.fdopen(fd, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while True:
                    block = resp.read(1 << 20)
                    if not block:
                        break
                    out.write(block)
                    bar.update(len(block))
            if total is not None and out.tell() != total:
                raise ArchiveError(f"download of {url} stopped after {out.tell()} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return dest


def fetch_hugadb(url: str = HUGADB_URL, sha256: str | None = None, progress: bool = True) -> PreparedArchive:
    """Download HuGaDB into the default data root, record/check its checksum, then prepare it.

    The archive is saved under the name in the URL. Its checksum must match ``sha256`` or a checksum the
    code knows for that name; otherwise (upstream publishes none) the checksum of the download is written
    to SHA256SUMS and reported, so later runs detect any change.
    """
    from urllib.parse import urlparse

    folder = paths.default_data_root() / HUGADB_DATASET
    name = Path(urlparse(url).path).name or HUGADB_ARCHIVE_NAME
    dest = folder / name
    if not dest.is_file():
        download(url, dest, progress=progress)
    got = file_sha256(dest)
    want = (sha256 or "").lower() or KNOWN_SHA256.get(name)
    if want and got != want:
        raise ArchiveError(f"checksum mismatch for {dest} downloaded from {url}: expected {want}, got {got}")
    sums_path = folder / SUMS_NAME
    table = read_sums(sums_path) if sums_path.is_file() else {}
    if table.get(name) != got:
        if name in table:
            raise ArchiveError(f"{dest} does not match its recorded checksum in {sums_path}; delete both to refetch")
        if not want:
            log.warning("upstream publishes no checksum for %s; recording sha256 %s in %s", name, got, sums_path)
        table[name] = got
        atomic_write_text(sums_path, "".join(f"{h}  {n}\n" for n, h in sorted(table.items())))
    return prepare_archive(dest, HUGADB_DATASET, "HuGaDB_v1_*.txt")
