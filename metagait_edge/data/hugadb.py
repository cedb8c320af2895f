"""HuGaDB v1 text files: the reader (strict :func:`parse_file`, lenient :func:`parse_file_lenient`), units, the index.

A file ``HuGaDB_v1_<activity>_<PP>_<CC>.txt`` has 4 header lines (``#Activity``, ``#ActivityID``,
``#Date``, column names) and then tab-separated integer rows of 39 columns: 6 IMUs x (acc_x, acc_y,
acc_z, gyro_x, gyro_y, gyro_z) in the order rf, rs, rt, lf, ls, lt (right foot, right shin, right
thigh, left foot, left shin, left thigh), then EMG_r, EMG_l (uint8) and ``act`` (activity ID per row).
There is no timestamp column; the rate is a config value (58.8 Hz from the authors' sample counts).

Raw IMU values are int16 counts: accelerometer +-2 g (16384 LSB/g), gyroscope +-2000 deg/s (16.4 LSB
per deg/s). A handful of rows hold serial glitches with values outside int16/uint8: those rows are
dropped and counted (``Recording.n_glitch_rows_dropped``, ``Recording.glitch_lines``), never passed on;
``Recording.source_rows`` keeps the original row index of every kept row so later stages can split at
the gap instead of joining across it. EMG is kept as raw uint8 counts in ``Recording.emg`` (not part of
the 36 IMU channels; the cycle set does not use it).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from metagait_edge.atomic import atomic_write_with
from metagait_edge.sensors import ACC_LSB_PER_G, AXES, GYRO_LSB_PER_DPS, HUGADB_RATE_HZ, IMU_CHANNELS

log = logging.getLogger(__name__)

EMG_CHANNELS = ("EMG_r", "EMG_l")
FILE_COLUMNS = IMU_CHANNELS + EMG_CHANNELS + ("act",)
N_COLUMNS = len(FILE_COLUMNS)  # 39
HEADER_LINES = 4

ACTIVITIES = {
    1: "walking", 2: "running", 3: "going_up", 4: "going_down", 5: "sitting", 6: "sitting_down",
    7: "standing_up", 8: "standing", 9: "bicycling", 10: "up_by_elevator", 11: "down_by_elevator",
    12: "sitting_in_car",
}
FILE_RE = re.compile(r"^HuGaDB_v1_(?P<activity>[a-z_]+?)_(?P<subject>\d{2})_(?P<repetition>\d{2})\.txt$")
N_SUBJECTS = 18
INT16_MIN, INT16_MAX = -32768, 32767
PARSED_CACHE_VERSION = 1


class HuGaDBFormatError(ValueError):
    """A HuGaDB file does not follow the format; the message names the file and line."""


@dataclass(frozen=True)
class HuGaDBConfig:
    sample_rate_hz: float = HUGADB_RATE_HZ
    acc_lsb_per_g: float = ACC_LSB_PER_G
    gyro_lsb_per_dps: float = GYRO_LSB_PER_DPS


@dataclass
class Recording:
    """One HuGaDB file after parsing; arrays are indexed by kept row."""

    file_id: str  # file name without .txt, e.g. HuGaDB_v1_walking_01_00
    path: Path
    subject: int  # 1..18
    activity: str  # the activity part of the file name ("various" for the long mixed recordings)
    repetition: int
    raw: np.ndarray  # int16 [T, 36] counts, columns IMU_CHANNELS
    emg: np.ndarray  # uint8 [T, 2] raw counts (EMG_r, EMG_l)
    act: np.ndarray  # uint8 [T] activity ID per row (ACTIVITIES)
    source_rows: np.ndarray  # int32 [T] 0-based data-row index in the file of each kept row
    glitch_lines: tuple[int, ...] = ()  # 1-based file line numbers of dropped rows
    header_activities: tuple[str, ...] = ()
    date: str = ""
    config: HuGaDBConfig = field(default_factory=HuGaDBConfig)

    channels = IMU_CHANNELS

    @property
    def n_glitch_rows_dropped(self) -> int:
        return len(self.glitch_lines)

    def __len__(self) -> int:
        return int(self.raw.shape[0])

    @property
    def sample_rate_hz(self) -> float:
        return self.config.sample_rate_hz

    def channel_index(self, name: str) -> int:
        try:
            return IMU_CHANNELS.index(name)
        except ValueError:
            raise KeyError(f"{self.file_id}: unknown channel {name!r}; channels are {', '.join(IMU_CHANNELS)}") from None

    def physical(self) -> np.ndarray:
        """float32 [T, 36]: accelerometers in g, gyroscopes in deg/s."""
        return self.raw.astype(np.float32) * physical_scale(self.config)[None, :]

    def channel(self, name: str) -> np.ndarray:
        """One IMU channel in physical units (g or deg/s), float32 [T]."""
        i = self.channel_index(name)
        return self.raw[:, i].astype(np.float32) * physical_scale(self.config)[i]

    def acc(self, sensor: str) -> np.ndarray:
        """float32 [T, 3] accelerometer of ``sensor`` (rf, rs, ...) in g."""
        return np.stack([self.channel(f"acc_{sensor}_{a}") for a in AXES], axis=1)

    def gyro(self, sensor: str) -> np.ndarray:
        """float32 [T, 3] gyroscope of ``sensor`` in deg/s."""
        return np.stack([self.channel(f"gyro_{sensor}_{a}") for a in AXES], axis=1)


def physical_scale(config: HuGaDBConfig = HuGaDBConfig()) -> np.ndarray:
    """float32 [36]: multiply counts by this to get g (accelerometers) and deg/s (gyroscopes)."""
    return np.array(
        [1.0 / config.acc_lsb_per_g if c.startswith("acc") else 1.0 / config.gyro_lsb_per_dps for c in IMU_CHANNELS],
        dtype=np.float32,
    )


def parse_file_name(name: str) -> tuple[str, int, int]:
    """``HuGaDB_v1_walking_01_00.txt`` -> ("walking", 1, 0); a wrong name raises naming it."""
    m = FILE_RE.match(Path(name).name)
    if not m:
        raise HuGaDBFormatError(f"{name}: not a HuGaDB v1 file name (HuGaDB_v1_<activity>_<PP>_<CC>.txt)")
    subject = int(m.group("subject"))
    if not 1 <= subject <= N_SUBJECTS:
        raise HuGaDBFormatError(f"{name}: participant {subject} is outside 1..{N_SUBJECTS}")
    return m.group("activity"), subject, int(m.group("repetition"))


def _diagnose(path: Path, lines: Sequence[bytes], first_line: int) -> HuGaDBFormatError:
    """Find the first bad data line (slow path, only after the fast parser failed)."""
    for k, line in enumerate(lines):
        lineno = first_line + k
        text = line.rstrip(b"\r\n")
        if not text.strip():
            return HuGaDBFormatError(f"{path}:{lineno}: empty line inside the data")
        parts = text.split(b"\t")
        if len(parts) != N_COLUMNS:
            hint = " (the file looks truncated)" if k == len(lines) - 1 else ""
            return HuGaDBFormatError(f"{path}:{lineno}: expected {N_COLUMNS} tab-separated columns, got {len(parts)}{hint}")
        for j, tok in enumerate(parts):
            try:
                int(tok)
            except ValueError:
                return HuGaDBFormatError(
                    f"{path}:{lineno}: column {j + 1} ({FILE_COLUMNS[j]}) is not an integer: {tok.decode(errors='replace')!r}"
                )
    return HuGaDBFormatError(f"{path}: could not parse the data rows")


def _table(lines: Sequence[bytes]) -> np.ndarray | None:
    """int64 [N, 39] of tab-separated data lines, or None if any line is malformed (``_diagnose`` says which)."""
    try:
        table = np.loadtxt(lines, dtype=np.int64, delimiter="\t", ndmin=2)
    except ValueError:
        return None
    return table if table.shape[1] == N_COLUMNS else None


def _glitch_rows(table: np.ndarray) -> np.ndarray:
    """Rows of an int64 [N, 39] table holding serial glitches: IMU values outside int16 or EMG outside uint8."""
    imu, emg = table[:, :36], table[:, 36:38]
    return (imu < INT16_MIN).any(1) | (imu > INT16_MAX).any(1) | (emg < 0).any(1) | (emg > 255).any(1)


@dataclass
class ImuRows:
    rows: np.ndarray  # int16 [N, 36] raw counts
    skipped: int  # data lines dropped: serial glitches (the rule of parse_file) and malformed lines


def parse_file_lenient(path: str | os.PathLike) -> ImuRows:
    """The 36 IMU columns of a HuGaDB-like text file, leniently (``metagait-edge record``, the ROS ``hugadb:`` port).

    Unlike :func:`parse_file` it takes any file name, skips header lines (``#...`` or starting with a
    letter) wherever they are, and drops malformed lines (not 39 integers) as it drops glitch rows, counting
    both. A file without a single data row raises ``HuGaDBFormatError``.
    """
    lines = [ln for ln in Path(path).read_bytes().splitlines()
             if ln.strip() and not ln.startswith(b"#") and not ln.lstrip()[:1].isalpha()]
    table = _table(lines) if lines else None
    malformed = 0
    if table is None:
        parsed = []
        for line in lines:
            parts = line.split()
            try:
                values = [int(p) for p in parts]
            except ValueError:
                values = []
            if len(values) == N_COLUMNS:
                parsed.append(values)
        malformed = len(lines) - len(parsed)
        table = np.asarray(parsed, dtype=np.int64).reshape(-1, N_COLUMNS)
    keep = ~_glitch_rows(table)
    if not keep.any():
        raise HuGaDBFormatError(f"{path}: no HuGaDB data rows (expected 39 tab-separated integers per row)")
    return ImuRows(table[keep, :36].astype(np.int16), malformed + int((~keep).sum()))


def parse_file(path: str | os.PathLike, config: HuGaDBConfig = HuGaDBConfig()) -> Recording:
    """Parse one HuGaDB text file; bad input raises ``HuGaDBFormatError`` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HuGaDB file {path} does not exist")
    activity, subject, repetition = parse_file_name(path.name)
    blob = path.read_bytes()
    lines = blob.splitlines(keepends=True)
    if len(lines) < HEADER_LINES:
        raise HuGaDBFormatError(f"{path}: only {len(lines)} line(s); expected {HEADER_LINES} header lines and data (truncated file?)")
    head = [ln.decode("utf-8", errors="replace").strip() for ln in lines[:HEADER_LINES]]
    for lineno, tag in ((1, "#Activity"), (2, "#ActivityID"), (3, "#Date")):
        if not head[lineno - 1].startswith(tag):
            raise HuGaDBFormatError(f"{path}:{lineno}: expected a '{tag}' header line, got {head[lineno - 1][:60]!r}")
    columns = tuple(head[3].split())
    if columns != FILE_COLUMNS:
        raise HuGaDBFormatError(
            f"{path}:4: column names differ from the HuGaDB v1 layout ({len(columns)} names, expected {N_COLUMNS}: "
            f"{' '.join(FILE_COLUMNS[:3])} ... act)"
        )
    body = lines[HEADER_LINES:]
    if not body:
        raise HuGaDBFormatError(f"{path}: no data rows after the header (truncated file?)")
    table = _table(body)
    if table is None:
        raise _diagnose(path, body, HEADER_LINES + 1)
    imu = table[:, :36]
    emg = table[:, 36:38]
    act = table[:, 38]
    bad = _glitch_rows(table)
    bad_act = ~np.isin(act, list(ACTIVITIES)) & ~bad
    if bad_act.any():
        k = int(np.flatnonzero(bad_act)[0])
        raise HuGaDBFormatError(f"{path}:{HEADER_LINES + 1 + k}: activity ID {int(act[k])} is not one of 1..12")
    keep = ~bad
    glitch_lines = tuple(int(k) + HEADER_LINES + 1 for k in np.flatnonzero(bad))
    if glitch_lines:
        log.debug("%s: dropped %d glitch row(s) at line(s) %s", path.name, len(glitch_lines), glitch_lines)
    header_acts = tuple(head[0][len("#Activity"):].split())
    return Recording(
        file_id=path.stem, path=path, subject=subject, activity=activity, repetition=repetition,
        raw=imu[keep].astype(np.int16), emg=emg[keep].astype(np.uint8), act=act[keep].astype(np.uint8),
        source_rows=np.flatnonzero(keep).astype(np.int32), glitch_lines=glitch_lines,
        header_activities=header_acts, date=head[2][len("#Date"):].strip(), config=config,
    )


def _save_parsed(rec: Recording, dest: Path) -> None:
    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, version=np.int32(PARSED_CACHE_VERSION), raw=rec.raw, emg=rec.emg, act=rec.act,
                     source_rows=rec.source_rows, glitch_lines=np.asarray(rec.glitch_lines, dtype=np.int64),
                     header_activities=np.asarray(rec.header_activities, dtype=str), date=np.asarray(rec.date))

    atomic_write_with(dest, writer)


def _load_parsed(src: Path, path: Path, config: HuGaDBConfig) -> Recording | None:
    try:
        with np.load(src, allow_pickle=False) as z:
            if int(z["version"]) != PARSED_CACHE_VERSION:
                return None
            activity, subject, repetition = parse_file_name(path.name)
            return Recording(
                file_id=path.stem, path=path, subject=subject, activity=activity, repetition=repetition,
                raw=z["raw"], emg=z["emg"], act=z["act"], source_rows=z["source_rows"],
                glitch_lines=tuple(int(x) for x in z["glitch_lines"]),
                header_activities=tuple(str(x) for x in z["header_activities"]), date=str(z["date"]), config=config,
            )
    except (OSError, KeyError, ValueError) as exc:
        log.warning("ignoring unreadable parse cache %s: %s", src, exc)
        return None


class HuGaDB:
    """The extracted HuGaDB Data folder, with a parse cache keyed by the archive checksum.

    ``HuGaDB.open()`` verifies and extracts the archive of the data root (once) and returns the index;
    ``HuGaDB(data_dir)`` works on any folder of HuGaDB files (then without a cache unless one is given).
    """

    def __init__(self, data_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                 config: HuGaDBConfig = HuGaDBConfig(), archive_sha256: str | None = None):
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            from metagait_edge.paths import DataNotFoundError

            raise DataNotFoundError(f"HuGaDB data folder {self.data_dir} does not exist")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.config = config
        self.archive_sha256 = archive_sha256
        self._files = {p.stem: p for p in sorted(self.data_dir.glob("HuGaDB_v1_*.txt")) if FILE_RE.match(p.name)}

    @classmethod
    def open(cls, data_root: str | os.PathLike | None = None, config: HuGaDBConfig = HuGaDBConfig()) -> "HuGaDB":
        from metagait_edge.data.archive import prepare_hugadb

        prepared = prepare_hugadb(data_root)
        return cls(prepared.data_dir, prepared.cache_root / "parsed", config, prepared.sha256)

    @property
    def file_ids(self) -> list[str]:
        return list(self._files)

    def path(self, file_id: str) -> Path:
        try:
            return self._files[file_id.removesuffix(".txt")]
        except KeyError:
            raise FileNotFoundError(f"no HuGaDB file {file_id!r} in {self.data_dir}") from None

    def select(self, activity: str | None = None, subjects: Sequence[int] | None = None) -> list[str]:
        out = []
        for fid in self._files:
            act, subj, _ = parse_file_name(fid + ".txt")
            if (activity is None or act == activity) and (subjects is None or subj in subjects):
                out.append(fid)
        return out

    def load(self, file_id: str) -> Recording:
        """Parse one file, through the parse cache when the index has one."""
        path = self.path(file_id)
        if self.cache_dir is None:
            return parse_file(path, self.config)
        cached = self.cache_dir / f"{path.stem}.npz"
        if cached.is_file():
            rec = _load_parsed(cached, path, self.config)
            if rec is not None:
                return rec
        rec = parse_file(path, self.config)
        _save_parsed(rec, cached)
        return rec

    def iter_recordings(self, file_ids: Sequence[str] | None = None, progress: bool = False,
                        desc: str = "HuGaDB files") -> Iterator[Recording]:
        from tqdm import tqdm

        ids = list(self._files) if file_ids is None else list(file_ids)
        for fid in tqdm(ids, desc=desc, unit="file", disable=not progress):
            yield self.load(fid)
