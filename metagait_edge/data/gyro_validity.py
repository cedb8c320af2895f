"""Which gyroscopes of which HuGaDB files are corrupted (amplified about x10 and clipped).

The authors list them in the "Corrupted gyroscope data" table of their README (the GitHub README, shared
as ``$METAGAIT_DATA/hugadb/HuGaDB_README.md``); the ``ReadMe.txt`` inside the archive does not have the
table. The project ships that table as ``metagait_edge/resources/hugadb_corrupted_gyro.csv``, generated
from the README by this module (never typed by hand)::

    python -m metagait_edge.data.gyro_validity $METAGAIT_DATA/hugadb/HuGaDB_README.md

Files not in the table have six valid gyroscopes. Accelerometers are never corrupted. One cell of the
authors' table is blank (HuGaDB_v1_sitting_05_01, right shank); it is treated as corrupted (masked).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from metagait_edge.sensors import IMU_CHANNELS, SENSORS

RESOURCE_NAME = "hugadb_corrupted_gyro.csv"
# Column order of the authors' table.
TABLE_COLUMNS = {
    "right foot": "rf", "left foot": "lf", "right shank": "rs", "left shank": "ls",
    "right thigh": "rt", "left thigh": "lt",
}
_ROW_RE = re.compile(r"^\|\s*(HuGaDB_v1_[a-z_]+_\d{2}_\d{2})\.txt\s*\|(.*)$")


class GyroTableError(ValueError):
    """The corrupted-gyroscope table cannot be parsed; the message names the source and line."""


def parse_corrupted_tables(markdown: str, source: str = "<README>") -> dict[str, frozenset[str]]:
    """file_id -> set of sensors (rf, rs, ...) whose gyroscope is corrupted, from the README tables."""
    order: list[str] | None = None
    out: dict[str, frozenset[str]] = {}
    for lineno, line in enumerate(markdown.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("|File"):
            names = [c.strip().lower() for c in stripped.strip("|").split("|")[1:]]
            try:
                order = [TABLE_COLUMNS[n] for n in names if n]
            except KeyError as exc:
                raise GyroTableError(f"{source}:{lineno}: unknown sensor column {exc.args[0]!r}") from None
            continue
        m = _ROW_RE.match(stripped)
        if not m:
            continue
        if order is None:
            raise GyroTableError(f"{source}:{lineno}: table row before the '|File| ...' header line")
        cells = [c.strip() for c in m.group(2).split("|")]
        # Rows end with "|" plus stray tabs; keep inner empty cells (the authors left one blank).
        while cells and not cells[-1]:
            cells.pop()
        if len(cells) != len(order):
            raise GyroTableError(f"{source}:{lineno}: expected {len(order)} cells, got {len(cells)}")
        bad = set()
        for sensor, cell in zip(order, cells):
            if cell.lower() == "corrupted" or not cell:
                # A blank cell (sitting_05_01, right shank) is unknown: treat it as corrupted so the
                # channel is masked rather than trusted.
                bad.add(sensor)
            elif cell.lower() != "ok":
                raise GyroTableError(f"{source}:{lineno}: cell {cell!r} is neither 'OK' nor 'Corrupted'")
        fid = m.group(1)
        if fid in out:
            raise GyroTableError(f"{source}:{lineno}: {fid} listed twice")
        out[fid] = frozenset(bad)
    if not out:
        raise GyroTableError(f"{source}: no corrupted-gyroscope table rows found")
    return out


def to_csv(table: Mapping[str, frozenset[str]], provenance: str) -> str:
    lines = [f"# {provenance}", "# 1 = gyroscope corrupted, 0 = valid; files not listed have six valid gyroscopes",
             "file_id," + ",".join(SENSORS)]
    for fid in sorted(table):
        lines.append(fid + "," + ",".join("1" if s in table[fid] else "0" for s in SENSORS))
    return "\n".join(lines) + "\n"


def from_csv(text: str, source: str = RESOURCE_NAME) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    header_seen = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cells = line.strip().split(",")
        if not header_seen:
            if cells != ["file_id", *SENSORS]:
                raise GyroTableError(f"{source}:{lineno}: bad header {line!r}")
            header_seen = True
            continue
        if len(cells) != 1 + len(SENSORS) or any(c not in ("0", "1") for c in cells[1:]):
            raise GyroTableError(f"{source}:{lineno}: bad row {line!r}")
        out[cells[0]] = frozenset(s for s, c in zip(SENSORS, cells[1:]) if c == "1")
    return out


@functools.lru_cache(maxsize=1)
def corrupted_table() -> Mapping[str, frozenset[str]]:
    """The shipped table: file_id -> corrupted gyroscope sensors (only files with at least one)."""
    text = resources.files("metagait_edge.resources").joinpath(RESOURCE_NAME).read_text(encoding="utf-8")
    return from_csv(text)


def corrupted_gyros(file_id: str) -> frozenset[str]:
    return corrupted_table().get(Path(file_id).name.removesuffix(".txt"), frozenset())


def gyro_valid(file_id: str) -> dict[str, bool]:
    """sensor (rf, rs, rt, lf, ls, lt) -> whether its gyroscope is valid in this file."""
    bad = corrupted_gyros(file_id)
    return {s: s not in bad for s in SENSORS}


def channel_valid(file_id: str, channels: Sequence[str] = IMU_CHANNELS) -> np.ndarray:
    """bool [C]: False for ``gyro_<sensor>_<axis>`` channels of corrupted sensors, True for all others."""
    bad = corrupted_gyros(file_id)
    out = np.ones(len(channels), dtype=bool)
    for i, name in enumerate(channels):
        parts = name.split("_")
        if len(parts) == 3 and parts[0] == "gyro" and parts[1] in bad:
            out[i] = False
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from metagait_edge.resources import RESOURCES_DIR

    parser = argparse.ArgumentParser(description="Generate the shipped corrupted-gyroscope table from the HuGaDB README")
    parser.add_argument("readme", type=Path, help="the authors' README (HuGaDB_README.md)")
    parser.add_argument("--out", type=Path, default=RESOURCES_DIR / RESOURCE_NAME)
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    table = parse_corrupted_tables(text, str(args.readme))
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    provenance = (f"generated by `python -m metagait_edge.data.gyro_validity {args.readme.name}` from the HuGaDB "
                  f"authors' README (sha256 {digest}); {len(table)} files")
    from metagait_edge.atomic import atomic_write_text

    atomic_write_text(args.out, to_csv(table, provenance))
    print(f"wrote {args.out}: {len(table)} files with at least one corrupted gyroscope")
    return 0


if __name__ == "__main__":
    sys.exit(main())
