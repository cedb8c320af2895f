"""``metagait-edge data {fetch,prepare,info} hugadb``: download, verify + extract, summarize."""

from __future__ import annotations

import argparse

NAME = "data"
HELP = "download (fetch), verify and extract (prepare) or summarize (info) a dataset"
DATASETS = ("hugadb",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("fetch", help="download the dataset into the default data root, then prepare it")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--url", default=None, help="download from this URL instead of the built-in one")
    p.add_argument("--sha256", default=None, help="expected SHA-256 of the download (upstream publishes none)")
    p = sub.add_parser("prepare", help="verify the archive checksum and extract it once into the cache")
    p.add_argument("dataset", choices=DATASETS)
    p = sub.add_parser("info", help="files, subjects, gait segments and stride counts")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--no-cycles", action="store_true", help="skip the (cached) cycle-set build")


def _print_prepared(prepared) -> None:
    n = len(list(prepared.data_dir.glob("HuGaDB_v1_*.txt")))
    state = "extracted now" if prepared.extracted_now else "already extracted"
    print(f"archive  : {prepared.archive}")
    print(f"sha256   : {prepared.sha256} (verified)")
    print(f"data dir : {prepared.data_dir} ({state}, {n} data files)")


def run(args: argparse.Namespace) -> int:
    from metagait_edge.data import archive

    if args.action == "fetch":
        import sys
        import urllib.error

        url = args.url or archive.HUGADB_URL
        try:
            prepared = archive.fetch_hugadb(url=url, sha256=args.sha256)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            print(f"metagait-edge data fetch: cannot download {url}: {exc}", file=sys.stderr)
            return 1
        _print_prepared(prepared)
        return 0
    if args.action == "prepare":
        _print_prepared(archive.prepare_hugadb())
        return 0
    return _info(args)


def _info(args: argparse.Namespace) -> int:
    from collections import Counter

    import numpy as np

    from metagait_edge.data.gyro_validity import corrupted_table
    from metagait_edge.data.hugadb import HuGaDB, parse_file_name
    from metagait_edge.data.segments import find_segments

    db = HuGaDB.open()
    print(f"data dir : {db.data_dir}")
    ids = db.file_ids
    acts = Counter(parse_file_name(f + ".txt")[0] for f in ids)
    subjects = sorted({parse_file_name(f + ".txt")[1] for f in ids})
    print(f"files    : {len(ids)} ({', '.join(f'{a} {n}' for a, n in sorted(acts.items()))})")
    print(f"subjects : {len(subjects)} ({subjects[0]}..{subjects[-1]})")
    table = corrupted_table()
    print(f"gyro     : {sum(1 for f in ids if f in table)} files with at least one corrupted gyroscope")
    seg_count: Counter[str] = Counter()
    seg_samples: Counter[str] = Counter()
    glitches = 0
    for rec in db.iter_recordings(progress=True, desc="segments"):
        glitches += rec.n_glitch_rows_dropped
        for seg in find_segments(rec):
            seg_count[seg.condition] += 1
            seg_samples[seg.condition] += len(seg)
    print(f"glitches : {glitches} rows dropped (values outside int16/uint8)")
    for cond in sorted(seg_count):
        print(f"segments : {cond:12s} {seg_count[cond]:4d} segments, {seg_samples[cond] / db.config.sample_rate_hz / 60:6.1f} min")
    if args.no_cycles:
        return 0
    from metagait_edge.data.cycles import build_cycle_set

    cs = build_cycle_set(db=db)
    s = cs.summary()
    print(f"cycles   : {s['cycles']} strides, median {s.get('median_duration_samples', float('nan')):.0f} samples, "
          f"{s.get('boundary_from_corrupted_gyro', 0)} bounded by a corrupted (x10) shank gyro")
    for cond, n in s["per_condition"].items():
        print(f"cycles   : {cond:12s} {n:5d}")
    per_subject = ", ".join(f"{k}:{v}" for k, v in s["per_subject"].items())
    print(f"cycles   : per subject {per_subject}")
    print(f"valid    : {100 * s.get('valid_fraction', 0):.1f} % of (cycle, channel) entries; "
          f"{int(np.sum(cs.valid.all(axis=1)))} cycles with every channel valid")
    return 0
