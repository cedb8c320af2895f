"""Silhouette datasets in the OpenGait layout, and the CASIA-B / OU-MVLP protocols.

Layout: ``<root>/<id>/<type>/<view>/<view>.pkl`` holding a pickled numpy uint8 array [T, 64, 64]
(already pretreated), or raw frames ``<root>/<id>/<type>/<view>/*.png`` that are pretreated on load.
Users bring CASIA-B and OU-MVLP themselves; ``metagait_edge.synth`` writes the same layout.

Pickles are loaded with a restricted unpickler that can only rebuild numpy arrays, so a ``.pkl`` from
somewhere else cannot run code; anything that is not a uint8 [T, 64, 64] array is refused with an error
naming the sequence.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import pickle
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from metagait_edge.atomic import atomic_write_bytes
from metagait_edge.data.pretreatment import FRAME_SIZE, pretreat_directory, list_frame_files

PICKLE_PROTOCOL = 4  # fixed, so a given array always pickles to the same bytes


class SilhouetteDataError(ValueError):
    """Bad silhouette data; the message names the sequence (id/type/view) and file."""


# --------------------------------------------------------------------------------------------------
# Dataset descriptions and protocols


@dataclass(frozen=True)
class DatasetSpec:
    """What a complete dataset holds and how it is split.

    ``probe_types`` / ``gallery_types`` give the evaluation protocol: each probe sequence is matched
    against the gallery (of other views, when ``exclude_same_view``).
    """

    name: str
    ids: tuple[str, ...]
    types: tuple[str, ...]
    views: tuple[str, ...]
    train_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    gallery_types: tuple[str, ...]
    probe_types: dict[str, tuple[str, ...]] = field(default_factory=dict)
    exclude_same_view: bool = True

    def partition(self, split: str) -> tuple[str, ...]:
        if split == "train":
            return self.train_ids
        if split == "test":
            return self.test_ids
        if split == "all":
            return self.ids
        raise ValueError(f"{self.name}: unknown split {split!r}; use train, test or all")


def _casia_b() -> DatasetSpec:
    ids = tuple(f"{i:03d}" for i in range(1, 125))
    types = tuple([f"nm-{i:02d}" for i in range(1, 7)] + ["bg-01", "bg-02", "cl-01", "cl-02"])
    views = tuple(f"{v:03d}" for v in range(0, 181, 18))
    return DatasetSpec(
        name="CASIA-B",
        ids=ids,
        types=types,
        views=views,
        train_ids=ids[:74],
        test_ids=ids[74:],
        gallery_types=("nm-01", "nm-02", "nm-03", "nm-04"),
        probe_types={"NM": ("nm-05", "nm-06"), "BG": ("bg-01", "bg-02"), "CL": ("cl-01", "cl-02")},
    )


def _ou_mvlp() -> DatasetSpec:
    ids = tuple(f"{i:05d}" for i in range(1, 10308))
    views = tuple(f"{v:03d}" for v in list(range(0, 91, 15)) + list(range(180, 271, 15)))
    # OpenGait's split (datasets/OUMVLP/OUMVLP.json), the official one: 5,153 training subjects, the odd
    # ids 00001, 00003, ..., 10305, and 5,154 test subjects, the even ids 00002, ..., 10306 plus the last
    # id 10307 (odd, but in OpenGait's TEST_SET). ``load_partition`` reads another split from a JSON file.
    train = tuple(i for i in ids if int(i) % 2 == 1 and int(i) != 10307)
    test = tuple(i for i in ids if int(i) % 2 == 0 or int(i) == 10307)
    return DatasetSpec(
        name="OU-MVLP",
        ids=ids,
        types=("00", "01"),
        views=views,
        train_ids=train,
        test_ids=test,
        gallery_types=("01",),
        probe_types={"NM": ("00",)},
    )


CASIA_B = _casia_b()
OU_MVLP = _ou_mvlp()
SPECS = {"casia-b": CASIA_B, "ou-mvlp": OU_MVLP}


def get_spec(name: str) -> DatasetSpec:
    key = name.lower().replace("_", "-")
    if key not in SPECS:
        raise ValueError(f"unknown silhouette dataset {name!r}; known: {', '.join(sorted(SPECS))}")
    return SPECS[key]


def load_partition(spec: DatasetSpec, path: str | os.PathLike) -> DatasetSpec:
    """A copy of ``spec`` with the split from an OpenGait partition JSON {"TRAIN_SET": [...], "TEST_SET": [...]}."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        train = tuple(str(x) for x in data["TRAIN_SET"])
        test = tuple(str(x) for x in data["TEST_SET"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SilhouetteDataError(f"{path}: not a partition file with TRAIN_SET and TEST_SET: {exc}") from exc
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise SilhouetteDataError(f"{path}: ids in both TRAIN_SET and TEST_SET: {', '.join(overlap[:5])}")
    return DatasetSpec(
        name=spec.name, ids=tuple(sorted(set(train) | set(test))), types=spec.types, views=spec.views,
        train_ids=train, test_ids=test, gallery_types=spec.gallery_types, probe_types=dict(spec.probe_types),
        exclude_same_view=spec.exclude_same_view,
    )


def synthetic_spec(ids: Sequence[str], views: Sequence[str], types: Sequence[str], n_train: int) -> DatasetSpec:
    """A CASIA-B-like protocol for a synthetic set: the first ``n_train`` ids train, the rest test."""
    ids = tuple(ids)
    types = tuple(types)
    nm = tuple(t for t in types if t.startswith("nm"))
    return DatasetSpec(
        name="synthetic", ids=ids, types=types, views=tuple(views), train_ids=ids[:n_train],
        test_ids=ids[n_train:], gallery_types=nm[:4],
        probe_types={k: tuple(t for t in (nm[4:] if k == "NM" else types) if t.startswith(k.lower()))
                     for k in ("NM", "BG", "CL")},
    )


# --------------------------------------------------------------------------------------------------
# Index of sequences


@dataclass(frozen=True)
class SequenceRecord:
    id: str
    type: str
    view: str
    path: Path  # the .pkl file, or the folder of frames
    layout: str  # "pkl" or "frames"

    @property
    def name(self) -> str:
        return f"{self.id}/{self.type}/{self.view}"


@dataclass
class SequenceIndex:
    root: Path
    records: list[SequenceRecord]
    problems: list[str] = field(default_factory=list)  # folders skipped while scanning, with why

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[SequenceRecord]:
        return iter(self.records)

    @property
    def ids(self) -> list[str]:
        return sorted({r.id for r in self.records})

    def select(
        self, ids: Iterable[str] | None = None, types: Iterable[str] | None = None, views: Iterable[str] | None = None
    ) -> "SequenceIndex":
        ids_s = None if ids is None else set(ids)
        types_s = None if types is None else set(types)
        views_s = None if views is None else set(views)
        recs = [
            r for r in self.records
            if (ids_s is None or r.id in ids_s) and (types_s is None or r.type in types_s)
            and (views_s is None or r.view in views_s)
        ]
        return SequenceIndex(self.root, recs, list(self.problems))

    def split(self, spec: DatasetSpec, split: str) -> "SequenceIndex":
        return self.select(ids=spec.partition(split))

    def missing(self, spec: DatasetSpec, ids: Iterable[str] | None = None) -> dict[tuple[str, str], list[str]]:
        """{(id, type): [missing views]} for the ids present in the index (or ``ids``)."""
        have: dict[tuple[str, str], set[str]] = defaultdict(set)
        for r in self.records:
            have[(r.id, r.type)].add(r.view)
        out: dict[tuple[str, str], list[str]] = {}
        for sid in (self.ids if ids is None else list(ids)):
            for t in spec.types:
                lacking = [v for v in spec.views if v not in have.get((sid, t), set())]
                if lacking:
                    out[(sid, t)] = lacking
        return out

    def missing_report(self, spec: DatasetSpec, ids: Iterable[str] | None = None, limit: int = 20) -> str:
        miss = self.missing(spec, ids)
        if not miss:
            return ""
        lines = [f"{spec.name} under {self.root}: {len(miss)} id/type pair(s) lack views:"]
        for (sid, t), views in list(miss.items())[:limit]:
            lines.append(f"  {sid}/{t}: missing view(s) {', '.join(views)}")
        if len(miss) > limit:
            lines.append(f"  ... and {len(miss) - limit} more")
        return "\n".join(lines)

    def check_complete(self, spec: DatasetSpec, ids: Iterable[str] | None = None) -> None:
        report = self.missing_report(spec, ids)
        if report:
            raise SilhouetteDataError(report)


def scan(root: str | os.PathLike, spec: DatasetSpec | None = None) -> SequenceIndex:
    """Index ``<root>/<id>/<type>/<view>/`` folders holding ``<view>.pkl`` (or any single .pkl) or frames.

    With ``spec``, types and views outside the spec are recorded in ``problems`` and skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"silhouette dataset root {root} does not exist")
    records: list[SequenceRecord] = []
    problems: list[str] = []
    for id_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for type_dir in sorted(p for p in id_dir.iterdir() if p.is_dir()):
            if spec is not None and type_dir.name not in spec.types:
                problems.append(f"{id_dir.name}/{type_dir.name}: type not in {spec.name}, skipped")
                continue
            for view_dir in sorted(p for p in type_dir.iterdir() if p.is_dir()):
                name = f"{id_dir.name}/{type_dir.name}/{view_dir.name}"
                if spec is not None and view_dir.name not in spec.views:
                    problems.append(f"{name}: view not in {spec.name}, skipped")
                    continue
                pkl = view_dir / f"{view_dir.name}.pkl"
                if not pkl.is_file():
                    pkls = sorted(view_dir.glob("*.pkl"))
                    pkl = pkls[0] if len(pkls) == 1 else None
                if pkl is not None:
                    records.append(SequenceRecord(id_dir.name, type_dir.name, view_dir.name, pkl, "pkl"))
                elif list_frame_files(view_dir):
                    records.append(SequenceRecord(id_dir.name, type_dir.name, view_dir.name, view_dir, "frames"))
                else:
                    problems.append(f"{name}: no {view_dir.name}.pkl and no image frames in {view_dir}")
    return SequenceIndex(root, records, problems)


# --------------------------------------------------------------------------------------------------
# Reading and writing sequences

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # protocol-2 pickles encode raw bytes this way; it only builds bytes
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # pickle API
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        # Pickles written under NumPy 2 name numpy._core, under NumPy 1 numpy.core: accept either here.
        modern = module.replace("numpy.core", "numpy._core")
        legacy = module.replace("numpy._core", "numpy.core")
        for candidate in ((modern, legacy) if hasattr(np, "_core") else (legacy,)):
            try:
                return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"cannot resolve {module}.{name} in this NumPy")


def _check_frames(arr: object, where: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise SilhouetteDataError(f"{where}: expected a numpy uint8 array, got {type(arr).__name__}")
    if arr.dtype != np.uint8:
        raise SilhouetteDataError(f"{where}: expected dtype uint8, got {arr.dtype}")
    if arr.ndim != 3 or arr.shape[1:] != (FRAME_SIZE, FRAME_SIZE) or arr.shape[0] == 0:
        raise SilhouetteDataError(f"{where}: expected shape [T>0, {FRAME_SIZE}, {FRAME_SIZE}], got {list(arr.shape)}")
    return arr


def load_pkl(path: str | os.PathLike, name: str | None = None) -> np.ndarray:
    """Load one ``<view>.pkl`` safely -> uint8 [T, 64, 64]; anything else is a ``SilhouetteDataError``."""
    path = Path(path)
    where = f"sequence {name} ({path})" if name else str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SilhouetteDataError(f"{where}: cannot read: {exc}") from exc
    try:
        arr = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # a corrupt pickle raises many kinds of errors
        raise SilhouetteDataError(f"{where}: corrupt or unsafe pickle: {type(exc).__name__}: {exc}") from exc
    return _check_frames(arr, where)


def dumps_frames(frames: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(_check_frames(frames, "frames to write"))
    return pickle.dumps(arr, protocol=PICKLE_PROTOCOL)


def write_pkl(path: str | os.PathLike, frames: np.ndarray) -> None:
    atomic_write_bytes(path, dumps_frames(frames))


def sequence_pkl_path(root: str | os.PathLike, sid: str, stype: str, view: str) -> Path:
    return Path(root) / sid / stype / view / f"{view}.pkl"


def load_sequence(record: SequenceRecord) -> np.ndarray:
    """uint8 [T, 64, 64] for one indexed sequence (pretreating raw frames when needed)."""
    if record.layout == "pkl":
        return load_pkl(record.path, record.name)
    if record.layout == "frames":
        try:
            return pretreat_directory(record.path, name=f"sequence {record.name} ({record.path})").frames
        except ValueError as exc:
            raise SilhouetteDataError(str(exc)) from exc
    raise SilhouetteDataError(f"sequence {record.name}: unknown layout {record.layout!r}")


def convert_frames_to_pkl(index: SequenceIndex, out_root: str | os.PathLike) -> dict[str, int]:
    """Pretreat every raw-frame sequence of ``index`` into ``<out_root>/<id>/<type>/<view>/<view>.pkl``."""
    n_seq = n_skipped = 0
    for rec in index:
        if rec.layout != "frames":
            continue
        res = pretreat_directory(rec.path, name=f"sequence {rec.name} ({rec.path})")
        write_pkl(sequence_pkl_path(out_root, rec.id, rec.type, rec.view), res.frames)
        n_seq += 1
        n_skipped += res.n_skipped
    return {"sequences": n_seq, "skipped_frames": n_skipped}
