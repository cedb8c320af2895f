"""Recognition on REAL silhouettes: do the embeddings separate real people?

It lives with the runtime because it runs the runtime's own camera front end and ``Recognizer`` (the
recognition package sits below the runtime and must not import it).

Real silhouette data cannot be shipped; this module evaluates a local folder of it. Layout::

    ROOT/<person>/<sequence>/*.png     one walk of one person: binary (or 0..255) silhouette frames, name order
    ROOT/<person>/<sequence>.mp4       or a video of that walk (.mp4 .avi .mov .mkv): the runtime's camera
                                       front end (metagait_edge.runtime.camera_frontend) extracts the
                                       silhouettes; its longest walker track is the sequence

Every frame goes through the runtime's own path: ``pretreat_frame`` (tight crop, height 64, centring on the
column-mass median, 64x64) and ``Recognizer.embed`` (10 px cut per side -> 64x44, resized to the model's
input); nothing is tuned to the data. Scores, over every pair of sequences (no template, no threshold):

- ``auc``: ROC AUC of "same person" vs "different person" from the pair distance (1: every same-person pair
  is closer than every different-person pair; 0.5: chance);
- ``eer``: equal error rate of the accept-when-close rule on the same pairs (``gallery.equal_error_rate``);
- ``rank1``: leave-one-sequence-out, each sequence of a person with at least 2 sequences is a probe against
  all the other sequences; correct when its nearest one is the same person. ``rank1_chance`` is the expected
  rank-1 of a random ordering.

A multi-walker video without identity labels (``video_track_halves``): each walker track of the camera front end
is cut into its first and second half (the same person, certainly); two tracks are a different-person pair only
when they were in view at the same time, side by side (certainly two people); other pairs of tracks are never
compared, since they may be one person seen twice. Scores as above over those pairs only; rank-1 is then among
the walkers in view together.

Methods: every recognition checkpoint given (cosine distance, as the runtime's gallery) and ``gei``, a
no-network baseline: the average silhouette (gait energy image) of the same pretreated 64x44 frames,
euclidean distance.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
GEI = "gei"
LAYOUT = "ROOT/<person>/<sequence>/*.png (one folder of silhouette frames per walk) or ROOT/<person>/<sequence>.mp4"


class RealDataError(ValueError):
    """The folder does not hold real silhouette sequences in the expected layout; the message says why."""


@dataclass
class RealSequence:
    person: str
    name: str  # <person>/<sequence>
    frames: np.ndarray  # uint8 [T, 64, 64], pretreated as the runtime does
    n_input: int  # frames read (images) or silhouettes of the chosen track (video)
    n_skipped: int  # frames with too little foreground (skipped by the pretreatment)


@dataclass
class PairScores:
    auc: float
    eer: float
    rank1: float
    rank1_chance: float
    probes: int
    rank1_correct: int
    genuine_pairs: int
    impostor_pairs: int
    mean_genuine: float
    mean_impostor: float
    metric: str
    nearest: Dict[str, str] = field(default_factory=dict)  # probe sequence -> its nearest sequence

    def as_dict(self) -> dict:
        return asdict(self)


def _frame_files(directory: Path) -> List[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _video_silhouettes(path: Path) -> np.ndarray:
    """The longest walker track of a video through the runtime's camera front end: uint8 [T, 64, 64]."""
    from metagait_edge.runtime.camera import FrameSource
    from metagait_edge.runtime.camera_frontend import track_silhouettes
    from metagait_edge.runtime.enrollment import read_frames

    tracks = track_silhouettes(read_frames(FrameSource("video", path)))
    if not tracks:
        raise RealDataError(f"{path}: the camera front end found no walker in this video")
    return max(tracks.values(), key=len)


def list_sequences(root: str | os.PathLike) -> Dict[str, List[Path]]:
    """{person: [sequence folder or video, ...]} in name order; RealDataError when the layout is not :data:`LAYOUT`."""
    root = Path(root)
    if not root.is_dir():
        raise RealDataError(f"{root}: not a directory (expected {LAYOUT})")
    people: Dict[str, List[Path]] = {}
    stray = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if stray:
        raise RealDataError(f"{root}: image files directly under the root ({stray[0]}, ...): expected one folder per "
                            f"person, one folder of frames per sequence inside ({LAYOUT})")
    for person in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        seqs = []
        for entry in sorted(person.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                if not _frame_files(entry):
                    raise RealDataError(f"{entry}: a sequence folder without image frames "
                                        f"({', '.join(IMAGE_SUFFIXES)}; expected {LAYOUT})")
                seqs.append(entry)
            elif entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES:
                seqs.append(entry)
            elif entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
                raise RealDataError(f"{person}: image files directly in a person folder ({entry.name}): put each "
                                    f"sequence's frames in its own folder ({LAYOUT})")
        if not seqs:
            raise RealDataError(f"{person}: no sequence (expected {LAYOUT})")
        people[person.name] = seqs
    if len(people) < 2:
        raise RealDataError(f"{root}: {len(people)} person folder(s); need at least 2 people to tell apart "
                            f"({LAYOUT})")
    if not any(len(s) >= 2 for s in people.values()):
        raise RealDataError(f"{root}: every person has a single sequence; need a person with at least 2 sequences "
                            f"for same-person pairs ({LAYOUT})")
    return people


def load_real_sequences(root: str | os.PathLike, progress: bool = False,
                        min_frames: int = 1) -> List[RealSequence]:
    """Read and pretreat every sequence under ``root`` (layout :data:`LAYOUT`) as the runtime does."""
    from tqdm import tqdm

    from metagait_edge.data.pretreatment import PretreatmentError, pretreat_frames, read_frame

    people = list_sequences(root)
    entries = [(person, path) for person, paths in people.items() for path in paths]
    out: List[RealSequence] = []
    for person, path in tqdm(entries, desc="read sequences", unit="seq", disable=not progress):
        name = f"{person}/{path.name}"
        try:
            raw = _video_silhouettes(path) if path.is_file() else (read_frame(f) for f in _frame_files(path))
            seq = pretreat_frames(raw, name=name)
        except PretreatmentError as exc:
            raise RealDataError(str(exc)) from exc
        if len(seq.frames) < min_frames:
            raise RealDataError(f"{name}: {len(seq.frames)} usable frame(s) of {seq.n_input}, need {min_frames}")
        out.append(RealSequence(person, name, seq.frames, seq.n_input, seq.n_skipped))
    return out


def gei_embeddings(sequences: Sequence[RealSequence]) -> np.ndarray:
    """[N, 1, 64*44] average silhouettes (gait energy images) of the pretreated network input frames."""
    from metagait_edge.data.pretreatment import to_model_input

    return np.stack([to_model_input(s.frames).mean(0).reshape(1, -1) for s in sequences]).astype(np.float64)


def model_embeddings(model, sequences: Sequence[RealSequence], progress: bool = False,
                     desc: str = "embed") -> np.ndarray:
    """[N, P, D] embeddings through the runtime's ``Recognizer.embed`` (whole sequence, one forward pass)."""
    from tqdm import tqdm

    from metagait_edge.runtime.camera import Recognizer

    recognizer = Recognizer(model)
    embs = [np.asarray(recognizer.embed(s.frames), dtype=np.float64)
            for s in tqdm(sequences, desc=desc, unit="seq", disable=not progress)]
    return np.stack([e if e.ndim == 2 else e.reshape(1, -1) for e in embs])


def roc_auc(genuine, impostor) -> float:
    """P(impostor distance > genuine distance), ties counting 1/2 (Mann-Whitney): 1 perfect, 0.5 chance."""
    g = np.asarray(genuine, dtype=np.float64).reshape(-1)
    i = np.asarray(impostor, dtype=np.float64).reshape(-1)
    if g.size == 0 or i.size == 0:
        raise RealDataError("ROC AUC needs at least one same-person and one different-person pair")
    i_sorted = np.sort(i)
    greater = i.size - np.searchsorted(i_sorted, g, side="right")
    ties = np.searchsorted(i_sorted, g, side="right") - np.searchsorted(i_sorted, g, side="left")
    return float((greater + 0.5 * ties).sum() / (g.size * i.size))


def pair_scores(distances: np.ndarray, people: Sequence[str], names: Optional[Sequence[str]] = None,
                metric: str = "", recordings: Optional[Sequence[str]] = None,
                comparable: Optional[np.ndarray] = None) -> PairScores:
    """AUC / EER over all pairs i < j and leave-one-sequence-out rank-1 from a symmetric [N, N] distance matrix.

    ``recordings``: one recording name per sequence; pairs of the same recording (e.g. two walkers filmed in
    one video: same view, scene and segmentation) are left out of every score, so that only sequences of
    different recordings are compared. ``comparable``: a symmetric boolean [N, N] mask; only pairs marked True
    are scored (e.g. only tracks known to be two people, :func:`video_track_halves`).
    """
    from metagait_edge.recognition.gallery import equal_error_rate

    d = np.asarray(distances, dtype=np.float64)
    n = len(people)
    if d.shape != (n, n):
        raise ValueError(f"distance matrix {d.shape} does not match {n} sequences")
    if not np.isfinite(d).all():
        raise ValueError("distance matrix has NaN or infinite values")
    labels = np.asarray(people)
    names = list(names) if names is not None else [str(k) for k in range(n)]
    rec = np.asarray(recordings) if recordings is not None else np.arange(n).astype(str)
    if rec.shape != (n,):
        raise ValueError(f"{rec.shape[0]} recording names for {n} sequences")
    mask = rec[:, None] != rec[None, :]
    if comparable is not None:
        comparable = np.asarray(comparable, dtype=bool)
        if comparable.shape != (n, n) or not (comparable == comparable.T).all():
            raise ValueError(f"comparable must be a symmetric [{n}, {n}] mask, got shape {comparable.shape}")
        mask &= comparable
    comparable = mask
    np.fill_diagonal(comparable, False)
    iu, ju = np.triu_indices(n, k=1)
    keep = comparable[iu, ju]
    iu, ju = iu[keep], ju[keep]
    same = labels[iu] == labels[ju]
    genuine, impostor = d[iu, ju][same], d[iu, ju][~same]
    if genuine.size == 0 or impostor.size == 0:
        raise RealDataError("need both same-person and different-person pairs (at least 2 people, one with 2 "
                            "sequences)")
    auc = roc_auc(genuine, impostor)
    eer, _ = equal_error_rate(genuine, impostor)
    correct, probes, chance = 0, 0, 0.0
    nearest = {}
    for k in range(n):
        others = comparable[k]
        mates = int((labels[others] == labels[k]).sum())
        if mates == 0:
            continue  # a person's only (comparable) sequence has nobody to be found with
        row = np.where(others, d[k], np.inf)
        j = int(np.argmin(row))
        nearest[names[k]] = names[j]
        probes += 1
        correct += int(labels[j] == labels[k])
        chance += mates / int(others.sum())
    return PairScores(auc=auc, eer=float(eer), rank1=correct / probes, rank1_chance=chance / probes, probes=probes,
                      rank1_correct=correct, genuine_pairs=int(genuine.size), impostor_pairs=int(impostor.size),
                      mean_genuine=float(genuine.mean()), mean_impostor=float(impostor.mean()), metric=metric,
                      nearest=nearest)


def recording_of(sequence: RealSequence) -> str:
    """The recording a sequence comes from: its folder (or video) name without the person, e.g. ``probe1``."""
    return Path(sequence.name).stem


def score_embeddings(embeddings: np.ndarray, sequences: Sequence[RealSequence], metric: str,
                     across_recordings: bool = False, comparable: Optional[np.ndarray] = None) -> PairScores:
    from metagait_edge.recognition.metrics import distance_matrix

    d = distance_matrix(embeddings, embeddings, metric)
    d = (d + d.T) / 2.0  # exact symmetry (float rounding)
    recordings = [recording_of(s) for s in sequences] if across_recordings else None
    return pair_scores(d, [s.person for s in sequences], [s.name for s in sequences], metric=metric,
                       recordings=recordings, comparable=comparable)


def evaluate_real(sequences: Sequence[RealSequence], models: Dict[str, object], progress: bool = False,
                  include_gei: bool = True, across_recordings: bool = False,
                  comparable: Optional[np.ndarray] = None) -> Dict[str, PairScores]:
    """{method: PairScores}: every model in ``models`` (cosine, as the runtime gallery) and the GEI baseline.
    ``across_recordings``: compare only sequences whose folder names differ; ``comparable``: only the pairs
    this mask marks (see :func:`pair_scores`)."""
    results: Dict[str, PairScores] = {}
    for name, model in models.items():
        results[name] = score_embeddings(model_embeddings(model, sequences, progress, desc=f"embed {name}"),
                                         sequences, "cosine", across_recordings, comparable)
    if include_gei:
        results[GEI] = score_embeddings(gei_embeddings(sequences), sequences, "euclidean", across_recordings,
                                        comparable)
    return results


def video_track_halves(path: str | os.PathLike, half_frames: int = 15, progress: bool = False,
                       config=None) -> Tuple[List[RealSequence], np.ndarray]:
    """A multi-walker video without labels -> (sequences, comparable mask) for :func:`evaluate_real`.

    Every track of the camera front end (``config``: its ``CameraConfig``) with at least ``2 * half_frames``
    silhouettes gives two sequences, its first and its second half (person ``track<id>``). The mask pairs the
    two halves of a track, and the halves of two tracks that had silhouettes in one frame with boxes side by
    side (no column in common): two people, certainly. A person is never split into two tracks at one moment
    by the front end (a blob cut in two leaves a part too short for the partial-body gate), so these are the
    only pairs whose truth is known without labels.
    """
    from tqdm import tqdm

    from metagait_edge.data.pretreatment import PretreatmentError, pretreat_frames
    from metagait_edge.runtime.camera import FrameSource
    from metagait_edge.runtime.camera_frontend import CameraFrontEnd, emitted

    if half_frames < 1:
        raise ValueError(f"half_frames must be >= 1, got {half_frames}")
    path = Path(path)
    if not path.is_file():
        raise RealDataError(f"{path}: no such video file")
    front_end = CameraFrontEnd(config)
    per_track = emitted((frame for frame, _ in tqdm(FrameSource("video", path), desc=f"tracks of {path.name}",
                                                    unit="frame", disable=not progress)), front_end)
    front_end.close()
    tracks = sorted(t for t, s in per_track.items() if len(s) >= 2 * half_frames)
    if len(tracks) < 2:
        raise RealDataError(f"{path}: {len(tracks)} walker track(s) with >= {2 * half_frames} silhouettes; "
                            f"need 2 (tracks: {sorted(len(s) for s in per_track.values())})")
    # track -> frame -> (x0, x1) of its box
    columns = {t: {s.frame_index: (s.box[0], s.box[2]) for s in per_track[t]} for t in tracks}
    sequences: List[RealSequence] = []
    for t in tracks:
        frames = [s.silhouette for s in per_track[t]]
        cut = len(frames) // 2
        for half, part in (("first", frames[:cut]), ("second", frames[cut:])):
            name = f"track{t}/{half}"
            try:
                seq = pretreat_frames(part, name=name)
            except PretreatmentError as exc:
                raise RealDataError(str(exc)) from exc
            sequences.append(RealSequence(f"track{t}", name, seq.frames, seq.n_input, seq.n_skipped))

    def apart(a: int, b: int) -> bool:
        return any(columns[a][f][1] <= columns[b][f][0] or columns[b][f][1] <= columns[a][f][0]
                   for f in columns[a].keys() & columns[b].keys())

    n = len(sequences)
    comparable = np.zeros((n, n), dtype=bool)
    for i, a in enumerate(tracks):
        comparable[2 * i, 2 * i + 1] = comparable[2 * i + 1, 2 * i] = True
        for j in range(i + 1, len(tracks)):
            if apart(a, tracks[j]):
                comparable[2 * i:2 * i + 2, 2 * j:2 * j + 2] = comparable[2 * j:2 * j + 2, 2 * i:2 * i + 2] = True
    if not any(comparable[2 * i, 2 * j] for i in range(len(tracks)) for j in range(len(tracks)) if i != j):
        raise RealDataError(f"{path}: no two tracks were in view at the same time, side by side: no pair known "
                            f"to be two people")
    return sequences, comparable


def people_compared(sequences: Sequence[RealSequence], comparable: np.ndarray) -> int:
    """Pairs of different people with at least one pair of sequences the ``comparable`` mask compares."""
    return len({frozenset((a.person, b.person)) for i, a in enumerate(sequences) for j, b in enumerate(sequences)
                if i < j and a.person != b.person and comparable[i, j]})


def describe_sequences(sequences: Sequence[RealSequence]) -> dict:
    people = sorted({s.person for s in sequences})
    lengths = [len(s.frames) for s in sequences]
    return {"people": len(people), "sequences": len(sequences),
            "sequences_per_person": {p: sum(s.person == p for s in sequences) for p in people},
            "frames_min": int(min(lengths)), "frames_median": float(np.median(lengths)),
            "frames_max": int(max(lengths)), "frames_skipped": int(sum(s.n_skipped for s in sequences))}


def format_table(results: Dict[str, PairScores]) -> str:
    lines = [f"{'method':10s} {'metric':9s} {'AUC':>6s} {'EER %':>6s} {'rank-1':>12s} {'chance':>7s} "
             f"{'d same':>8s} {'d diff':>8s}"]
    for name, r in results.items():
        lines.append(f"{name:10s} {r.metric:9s} {r.auc:6.3f} {100 * r.eer:6.1f} "
                     f"{r.rank1_correct:4d}/{r.probes:<3d}{100 * r.rank1:4.0f}% {100 * r.rank1_chance:6.0f}% "
                     f"{r.mean_genuine:8.4g} {r.mean_impostor:8.4g}")
    return "\n".join(lines)


def verdict(results: Dict[str, PairScores], goal_auc: float = 0.9) -> List[str]:
    out = []
    gei = results.get(GEI)
    for name, r in results.items():
        if name == GEI:
            continue
        parts = [f"AUC {r.auc:.3f} {'>=' if r.auc >= goal_auc else '<'} goal {goal_auc}"]
        if gei is not None:
            parts.append(f"{'above' if r.auc > gei.auc else 'not above'} the GEI baseline ({gei.auc:.3f})")
        if r.auc < 0.6:
            parts.append("near chance: does not separate these people")
        out.append(f"{name}: " + "; ".join(parts))
    return out
