"""Data for recognition training and evaluation: the synthetic set (generated once into the cache) or a
user's CASIA-B / OU-MVLP folder in the OpenGait layout.

Synthetic identities are numbered in disjoint ranges from one seed::

    1 .. train_ids                      training identities (the classifier's classes)
    next val_ids                        validation identities (open-set threshold calibration)
    next full_test_ids                  test identities; the quick evaluation uses the first test_ids

Each identity is generated once into ``cache_dir()/synthetic/recognition-s<seed>-<hash>`` (the hash
covers every rendering setting, so a changed setting never reuses stale files) and marked complete with
an empty file ``.complete/<id>``; later runs reuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Literal, Optional

from metagait_edge import paths

CASIA_B_VIEWS = list(range(0, 181, 18))
CASIA_B_TYPES = [f"nm-{i:02d}" for i in range(1, 7)] + ["bg-01", "bg-02", "cl-01", "cl-02"]
FRAME_HEIGHT, FRAME_WIDTH = 64, 44  # the pretreated network input before any downsampling


@dataclass
class SyntheticDataConfig:
    """How the synthetic set is drawn; see the module docstring for the identity ranges."""

    seed: int = 0
    train_ids: int = 24
    val_ids: int = 8
    test_ids: int = 8
    full_test_ids: int = 24
    views: list[int] = field(default_factory=lambda: list(CASIA_B_VIEWS))
    types: list[str] = field(default_factory=lambda: list(CASIA_B_TYPES))
    min_frames: int = 30
    max_frames: int = 40
    defects: bool = True

    def __post_init__(self) -> None:
        for name in ("train_ids", "val_ids", "test_ids", "full_test_ids"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.train_ids < 2:
            raise ValueError(f"train_ids must be >= 2 (triplets need two identities), got {self.train_ids}")
        if self.full_test_ids < self.test_ids:
            raise ValueError(f"full_test_ids ({self.full_test_ids}) must be >= test_ids ({self.test_ids}): "
                             f"the quick test set is the first test_ids of the full one")
        if not 1 <= self.min_frames <= self.max_frames:
            raise ValueError(f"need 1 <= min_frames <= max_frames, got {self.min_frames}..{self.max_frames}")

    def id_range(self, part: str, quick: bool = True) -> list[int]:
        """Identity numbers of ``part`` (train, val, test)."""
        if part == "train":
            return list(range(1, self.train_ids + 1))
        if part == "val":
            return list(range(self.train_ids + 1, self.train_ids + self.val_ids + 1))
        if part == "test":
            first = self.train_ids + self.val_ids + 1
            return list(range(first, first + (self.test_ids if quick else self.full_test_ids)))
        raise ValueError(f"unknown identity range {part!r}; use train, val or test")


@dataclass
class DataConfig:
    """``synthetic`` (generated, see ``synthetic``) or a real dataset under ``root`` (OpenGait layout).

    A relative ``root`` is taken under ``$METAGAIT_DATA``. ``partition`` is an optional OpenGait
    partition JSON (TRAIN_SET / TEST_SET) for the real datasets.
    """

    dataset: Literal["synthetic", "casia-b", "ou-mvlp"] = "synthetic"
    root: str = ""
    partition: str = ""
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)


def render_key(cfg: SyntheticDataConfig) -> str:
    """Hash of every setting that changes the rendered pixels (not the identity counts)."""
    key = {"seed": cfg.seed, "views": list(cfg.views), "types": list(cfg.types), "min_frames": cfg.min_frames,
           "max_frames": cfg.max_frames, "defects": cfg.defects, "version": 1}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def synthetic_root(cfg: SyntheticDataConfig) -> Path:
    return paths.cache_dir() / "synthetic" / f"recognition-s{cfg.seed}-{render_key(cfg)}"


def _runs(numbers: list[int]) -> Iterator[tuple[int, int]]:
    """Contiguous runs (first, count) of sorted integers."""
    start = prev = None
    for n in numbers:
        if start is None:
            start = prev = n
        elif n == prev + 1:
            prev = n
        else:
            yield start, prev - start + 1
            start = prev = n
    if start is not None:
        yield start, prev - start + 1


def ensure_synthetic(cfg: SyntheticDataConfig, id_numbers: list[int], workers: int = 1,
                     progress: Optional[Callable[[Iterator], Iterator]] = None, log=print) -> Path:
    """Generate the identities ``id_numbers`` that are not yet complete in the cache; return the root."""
    from metagait_edge.synth.dataset import SynthConfig, generate, id_name

    root = synthetic_root(cfg)
    done = root / ".complete"
    todo = sorted(n for n in set(id_numbers) if not (done / id_name(n)).is_file())
    for first, count in _runs(todo):
        scfg = SynthConfig(ids=count, seed=cfg.seed, first_id=first, views=list(cfg.views), types=list(cfg.types),
                           min_frames=cfg.min_frames, max_frames=cfg.max_frames, defects=cfg.defects)
        if log:
            log(f"generating synthetic identities {id_name(first)}..{id_name(first + count - 1)} into {root} "
                f"(once; reused afterwards)")
        # A separate folder per run keeps each run's identities.json (generate() rewrites it).
        summary = generate(root, scfg, workers=workers, progress=progress)
        os.replace(root / "identities.json", root / f"identities-{id_name(first)}-{id_name(first + count - 1)}.json")
        done.mkdir(parents=True, exist_ok=True)
        for n in range(first, first + count):
            (done / id_name(n)).touch()
        if log:
            log(f"  {summary['sequences']} sequences, {summary['frames']} frames in {summary['seconds']:.1f} s")
    return root


def synthetic_index(cfg: SyntheticDataConfig, part: str, quick: bool = True, workers: int = 1, log=print):
    """SequenceIndex of one identity range, generating it first when needed."""
    from metagait_edge.data import silhouettes as S
    from metagait_edge.synth.dataset import id_name

    numbers = cfg.id_range(part, quick)
    if not numbers:
        raise ValueError(f"synthetic data: the {part} range is empty (check data.synthetic.{part}_ids)")
    root = ensure_synthetic(cfg, numbers, workers=workers, log=log)
    names = [id_name(n) for n in numbers]
    index = S.scan(root).select(ids=names)
    spec = S.DatasetSpec(name="synthetic", ids=tuple(names), types=tuple(cfg.types),
                         views=tuple(f"{v:03d}" for v in cfg.views), train_ids=tuple(names), test_ids=tuple(names),
                         gallery_types=tuple(cfg.types[:4]))
    index.check_complete(spec, names)
    return index


def real_index(cfg: DataConfig, split: str):
    """SequenceIndex of the train or test split of a user's CASIA-B / OU-MVLP folder."""
    from metagait_edge.data import silhouettes as S

    if not cfg.root:
        raise ValueError(f"data.root must name the {cfg.dataset} folder (OpenGait layout) for dataset {cfg.dataset}")
    root = Path(cfg.root).expanduser()
    if not root.is_absolute():
        root = paths.data_root() / root
    spec = S.get_spec(cfg.dataset)
    if cfg.partition:
        spec = S.load_partition(spec, cfg.partition)
    index = S.scan(root, spec)
    part = index.split(spec, split)
    if len(part) == 0:
        raise ValueError(f"{cfg.dataset} under {root}: no sequences of the {split} split")
    return part


def training_index(cfg: DataConfig, log=print):
    if cfg.dataset == "synthetic":
        return synthetic_index(cfg.synthetic, "train", log=log)
    return real_index(cfg, "train")


def fingerprint(index) -> str:
    """Hash of the sequences a model was trained on (names and file sizes)."""
    h = hashlib.sha256()
    for rec in sorted(index, key=lambda r: r.name):
        size = rec.path.stat().st_size if rec.path.is_file() else 0
        h.update(f"{rec.name}:{size}\n".encode())
    return h.hexdigest()[:16]
