"""Recognition evaluation: whole-sequence embeddings, the CASIA-B protocol, open-set FAR / FRR, ablation.

* ``extract_embeddings``: every sequence of an index through the model at full length (sequences of equal
  length are batched together, so nothing is padded and the result equals batch-1 inference).
* ``evaluate_index``: CASIA-B protocol (gallery nm-01..04; probes NM = nm-05/06, BG, CL; identical view
  excluded) with ``metagait_edge.recognition.metrics.evaluate_casia_b``.
* ``open_set``: the gallery (``metagait_edge.recognition.gallery.Gallery``) enrolls the first half of a set of
  identities with their nm-01..04 sequences; probes are the other sequences (nm-05/06, bg, cl) of the
  enrolled identities (genuine: distance to their own walker) and of the other half (impostors: distance
  to the nearest walker). The acceptance threshold is fitted on the *validation* identities for a target
  FAR and then applied, unchanged, to the held-out *test* identities.
* ``run_ablation``: trains the variants (baseline = temporal max pooling without MTA, +MTA, +MTP, full
  MetaGait) for each seed with the same budget and evaluates each on the test identities.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from metagait_edge.atomic import atomic_write_text
from metagait_edge.recognition.config import VARIANTS, RecognitionConfig, downsample_factor, with_variant
from metagait_edge.recognition.data import DataConfig

GALLERY_TYPES = ("nm-01", "nm-02", "nm-03", "nm-04")
PROBE_TYPES = ("nm-05", "nm-06", "bg-01", "bg-02", "cl-01", "cl-02")


# LTA merges 3 frames with stride 3, so the network needs at least this many frames.
MIN_FRAMES = 3


@dataclass
class Embeddings:
    embeddings: np.ndarray  # [N, P, D]
    ids: np.ndarray
    types: np.ndarray
    views: np.ndarray
    padded: tuple[str, ...] = ()  # sequences shorter than MIN_FRAMES, embedded with their frames repeated

    def select(self, mask: np.ndarray) -> "Embeddings":
        return Embeddings(self.embeddings[mask], self.ids[mask], self.types[mask], self.views[mask], self.padded)


def repeat_to_min_frames(frames: np.ndarray, name: str, min_frames: int = MIN_FRAMES) -> np.ndarray:
    """``frames`` [T, ...] with its frames repeated cyclically up to ``min_frames`` when T is shorter.

    A 1- or 2-frame sequence (a walker seen briefly) still gets an embedding instead of aborting a whole
    evaluation; an empty one has nothing to embed and is an error naming it.
    """
    if len(frames) == 0:
        raise ValueError(f"sequence {name} has no frames")
    if len(frames) >= min_frames:
        return frames
    reps = -(-min_frames // len(frames))
    return np.concatenate([frames] * reps)[:min_frames]


def load_frames(index) -> list[np.ndarray]:
    """uint8 [T, 64, 64] of every sequence of ``index`` (load once, embed with several models)."""
    from metagait_edge.data.silhouettes import load_sequence

    return [load_sequence(r) for r in index]


def extract_embeddings(model, index, factor: Optional[float] = None, device: str = "cpu", max_batch: int = 32,
                       progress: bool = False, desc: str = "embed",
                       frames: Optional[list[np.ndarray]] = None) -> Embeddings:
    """Whole-sequence ``embeddings`` of every sequence in ``index`` (model in eval mode, no gradients).

    ``frames`` (from :func:`load_frames`) skips reading the files again. Sequences shorter than
    ``MIN_FRAMES`` are embedded with their frames repeated (:func:`repeat_to_min_frames`) and listed in
    ``Embeddings.padded``.
    """
    import torch
    from tqdm import tqdm

    from metagait_edge.data.pretreatment import to_model_input
    from metagait_edge.recognition.train import prepare_input

    records = list(index)
    if not records:
        raise ValueError("no sequences to embed (empty index)")
    factor = factor or downsample_factor(model.config)
    frames = load_frames(records) if frames is None else frames
    if len(frames) != len(records):
        raise ValueError(f"{len(frames)} preloaded sequences for an index of {len(records)}")
    padded = tuple(r.name for r, f in zip(records, frames) if len(f) < MIN_FRAMES)
    frames = [repeat_to_min_frames(f, r.name) for r, f in zip(records, frames)]
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, f in enumerate(frames):
        by_len[len(f)].append(i)
    out: list[Optional[np.ndarray]] = [None] * len(records)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(records), desc=desc, unit="seq", disable=not progress)
    with torch.no_grad():
        for length, members in sorted(by_len.items()):
            for s in range(0, len(members), max_batch):
                chunk = members[s:s + max_batch]
                x = torch.from_numpy(np.stack([to_model_input(frames[i]) for i in chunk])).to(device)
                emb = model(prepare_input(x, factor))["embeddings"].float().cpu().numpy()
                for j, i in enumerate(chunk):
                    out[i] = emb[j]
                bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    return Embeddings(np.stack(out), np.array([r.id for r in records]), np.array([r.type for r in records]),
                      np.array([r.view for r in records]), padded)


def evaluate_embeddings(emb: Embeddings, metric: str = "euclidean", dataset: str = "synthetic"):
    """The dataset's protocol: OU-MVLP (``dataset == "ou-mvlp"``) or CASIA-B (CASIA-B and the synthetic set)."""
    from metagait_edge.recognition.metrics import evaluate_casia_b, evaluate_ou_mvlp

    evaluator = evaluate_ou_mvlp if dataset == "ou-mvlp" else evaluate_casia_b
    result = evaluator(emb.embeddings, emb.ids, emb.types, emb.views, metric=metric)
    result.dataset = dataset
    return result


def summary_numbers(result) -> dict[str, float]:
    """{condition: rank-1 %} (NM, BG, CL on CASIA-B; NM on OU-MVLP) and "mAP": the conditions' mean mAP %."""
    out = {c: round(float(v), 2) for c, v in result.mean.items()}
    out["mAP"] = round(float(np.mean([result.map[c] for c in result.mean])), 2)
    return out


# ---------------------------------------------------------------------------------------------------
# Open set


@dataclass
class OpenSetResult:
    threshold: float
    target_far: float
    val_far: float
    val_frr: float
    far: float
    frr: float
    identification: float  # enrolled probes accepted AND identified correctly, %
    eer: float
    enrolled: list[str]
    unknown: list[str]
    n_genuine: int
    n_impostor: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _split_half(ids: list[str]) -> tuple[list[str], list[str]]:
    ids = sorted(ids)
    if len(ids) < 2:
        raise ValueError(f"open-set evaluation needs at least 2 identities (some enrolled, some unknown), got {ids}")
    half = (len(ids) + 1) // 2
    return ids[:half], ids[half:]


def open_set_distances(emb: Embeddings, metric: str = "cosine", mode: str = "mean"):
    """Genuine / impostor distances and identification hits for one identity set (see module docstring);
    ``mode``: one mean template per walker or every gallery sequence a template (``Gallery`` modes)."""
    from metagait_edge.recognition.gallery import Gallery

    enrolled, unknown = _split_half(sorted(set(emb.ids.tolist())))
    gallery = Gallery(metric=metric, mode=mode)
    for walker in enrolled:
        mask = (emb.ids == walker) & np.isin(emb.types, GALLERY_TYPES)
        if not mask.any():
            raise ValueError(f"open set: walker {walker} has no gallery sequences ({', '.join(GALLERY_TYPES)})")
        gallery.enroll(walker, emb.embeddings[mask])
    genuine, impostor, hits = [], [], []
    probes = np.flatnonzero(np.isin(emb.types, PROBE_TYPES))
    if probes.size == 0:
        raise ValueError(f"open set: no probe sequences of types {', '.join(PROBE_TYPES)}")
    for i in probes:
        per_walker = gallery.distances(emb.embeddings[i])
        nearest = min(per_walker, key=per_walker.get)
        if emb.ids[i] in per_walker:
            genuine.append(per_walker[emb.ids[i]])
            hits.append((nearest == emb.ids[i], per_walker[nearest]))
        else:
            impostor.append(per_walker[nearest])
    return np.array(genuine), np.array(impostor), hits, enrolled, unknown


def open_set(val: Embeddings, test: Embeddings, target_far: float = 0.05, metric: str = "cosine") -> OpenSetResult:
    """Threshold fitted on ``val`` identities for ``target_far``, FAR / FRR measured on ``test`` identities."""
    from metagait_edge.recognition.gallery import equal_error_rate, far_frr_curve, fit_threshold

    vg, vi, _, _, _ = open_set_distances(val, metric)
    threshold = fit_threshold(vg, vi, target_far)
    _, vfar, vfrr = far_frr_curve(vg, vi, [threshold])
    tg, ti, hits, enrolled, unknown = open_set_distances(test, metric)
    _, far, frr = far_frr_curve(tg, ti, [threshold])
    ident = 100.0 * float(np.mean([ok and d <= threshold for ok, d in hits]))
    eer, _ = equal_error_rate(tg, ti)
    return OpenSetResult(threshold=float(threshold), target_far=target_far, val_far=100 * float(vfar[0]),
                         val_frr=100 * float(vfrr[0]), far=100 * float(far[0]), frr=100 * float(frr[0]),
                         identification=ident, eer=100 * eer, enrolled=enrolled, unknown=unknown,
                         n_genuine=int(tg.size), n_impostor=int(ti.size))


# ---------------------------------------------------------------------------------------------------
# Test sets


def test_indices(data: DataConfig, quick: bool = True, log=print):
    """(validation index, test index) of ``data``; synthetic ranges are disjoint from the training ids.

    Real datasets have no validation identities here, so they get no open-set numbers (None).
    """
    from metagait_edge.recognition.data import real_index, synthetic_index

    if data.dataset == "synthetic":
        s = data.synthetic
        val = synthetic_index(s, "val", log=log) if s.val_ids >= 2 else None
        return val, synthetic_index(s, "test", quick=quick, log=log)
    return None, real_index(data, "test")


def evaluate_model(model, cfg: RecognitionConfig, val_index, test_index, progress: bool = False,
                   name: str = "", frames: Optional[dict] = None) -> dict:
    """CASIA-B protocol on ``test_index`` and (with ``val_index``) open-set FAR / FRR.

    ``frames`` may hold preloaded sequences {"test": [...], "val": [...]}.
    """
    frames = frames or {}
    t0 = time.perf_counter()
    test = extract_embeddings(model, test_index, progress=progress, desc=f"embed test {name}".strip(),
                              frames=frames.get("test"))
    result = evaluate_embeddings(test, cfg.eval.metric,
                                 dataset="synthetic" if cfg.data.dataset == "synthetic" else cfg.data.dataset)
    out = {"result": result, "summary": summary_numbers(result), "padded_sequences": list(test.padded)}
    if val_index is not None:
        val = extract_embeddings(model, val_index, progress=progress, desc=f"embed val {name}".strip(),
                                 frames=frames.get("val"))
        out["open_set"] = open_set(val, test, cfg.eval.target_far, cfg.eval.gallery_metric)
    out["seconds"] = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------------------------------------------
# Ablation


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else float("nan")


def ablation_table(runs: list[dict]) -> str:
    """Markdown table: one row per variant, mean (and std over seeds) of NM / BG / CL rank-1 and mAP."""
    by_variant: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        by_variant[r["variant"]].append(r)
    lines = ["| variant | MTA | MTP | seeds | NM | BG | CL | mAP | open-set EER | train s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for variant in [v for v in VARIANTS if v in by_variant]:
        rs = by_variant[variant]
        cells = []
        for key in ("NM", "BG", "CL", "mAP"):
            if any(key not in r["summary"] for r in rs):  # OU-MVLP has no BG / CL
                cells.append("-")
                continue
            m, s = _mean_std([r["summary"][key] for r in rs])
            cells.append(f"{m:.1f}" + ("" if math.isnan(s) else f" ± {s:.1f}"))
        eer = [r["open_set"]["eer"] for r in rs if r.get("open_set")]
        eer_cell = f"{np.mean(eer):.1f}" if eer else "-"
        secs = np.mean([r["train_seconds"] for r in rs])
        flags = VARIANTS[variant]
        lines.append(f"| {variant} | {'yes' if flags['mta'] != 'none' else 'no'} | "
                     f"{'yes' if flags['mtp'] != 'max' else 'no'} | {','.join(str(r['seed']) for r in rs)} | "
                     + " | ".join(cells) + f" | {eer_cell} | {secs:.0f} |")
    return "\n".join(lines)


def run_ablation(cfg: RecognitionConfig, variants: list[str], seeds: list[int], out_dir: Optional[str] = None,
                 iterations: Optional[int] = None, ship_dir: Optional[str] = None, progress: bool = True,
                 quick: bool = False, log=print) -> dict:
    """Train and evaluate every (variant, seed); writes ``ablation.json`` after each run (and to ``ship_dir``)."""
    from metagait_edge.recognition.train import load_model, train

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"unknown ablation variant(s) {unknown}; allowed: {', '.join(VARIANTS)}")
    if not seeds:
        raise ValueError("--seeds: at least one seed is needed")
    root = Path(out_dir or cfg.output_dir or f"runs/recognition/{cfg.name}") / "ablation"
    val_index, test_index = test_indices(cfg.data, quick=quick, log=log)
    frames = {"test": load_frames(test_index), "val": load_frames(val_index) if val_index is not None else None}
    runs: list[dict] = []
    summary: dict = {}
    for seed in seeds:
        for variant in variants:
            vcfg = with_variant(cfg, variant, seed)
            res = train(vcfg, root / vcfg.name, progress=progress, iterations=iterations, log=log)
            model, _ = load_model(res.checkpoint)
            ev = evaluate_model(model, vcfg, val_index, test_index, name=vcfg.name, frames=frames)
            run = {"variant": variant, "seed": seed, "iterations": res.iterations,
                   "train_seconds": round(res.seconds, 1), "first_loss": res.first_loss, "last_loss": res.last_loss,
                   "summary": ev["summary"], "checkpoint": str(res.checkpoint),
                   "open_set": ev["open_set"].as_dict() if "open_set" in ev else None}
            runs.append(run)
            if log:
                log(f"{vcfg.name}: {ev['summary']}")
            if ship_dir and seed == seeds[0]:
                ship_checkpoint(res.checkpoint, Path(ship_dir), variant)
            summary = {"config": cfg.name, "test_set": describe_test_set(cfg.data, quick),
                       "seeds": seeds, "variants": variants, "runs": runs, "table": ablation_table(runs)}
            atomic_write_text(root / "ablation.json", json.dumps(summary, indent=1) + "\n")
            if ship_dir:
                atomic_write_text(Path(ship_dir) / "ablation.json", json.dumps(summary, indent=1) + "\n")
    return summary


def ship_checkpoint(checkpoint: Path, ship_dir: Path, variant: str, log=print) -> Path:
    """Copy a trained checkpoint pair to ``<ship_dir>/<variant>.safetensors`` + ``.json`` and fit its open-set
    threshold on the validation identities (``recognition.calibration``): identification refuses a checkpoint
    without one, so a retrained checkpoint is never shipped uncalibrated when its data has validation ids."""
    from metagait_edge.checkpoint import sidecar_path
    from metagait_edge.recognition.calibration import calibrate_checkpoint

    ship_dir.mkdir(parents=True, exist_ok=True)
    dst = ship_dir / f"{variant}.safetensors"
    meta = json.loads(sidecar_path(checkpoint).read_text())
    meta["weights_file"] = dst.name
    shutil.copyfile(checkpoint, dst)
    atomic_write_text(sidecar_path(dst), json.dumps(meta, indent=2) + "\n")
    try:
        record, _, _ = calibrate_checkpoint(dst, command=f"train-recognition --ship (variant {variant})", log=log)
        log(f"{dst.name}: open-set threshold {record.describe()}")
    except ValueError as exc:  # no validation identities (real datasets): say so, identification will refuse it
        log(f"{dst.name}: shipped WITHOUT an open-set threshold ({exc}); run `metagait-edge calibrate-threshold "
            f"--checkpoint {dst}` where validation identities exist")
    return dst


def describe_test_set(data: DataConfig, quick: bool) -> str:
    if data.dataset != "synthetic":
        return f"{data.dataset} test split under {data.root}"
    s = data.synthetic
    test = s.id_range("test", quick)
    val = s.id_range("val")
    return (f"synthetic seed {s.seed}, {'quick' if quick else 'full'} test set: ids {test[0]:03d}..{test[-1]:03d} "
            f"({len(test)} identities, disjoint from training ids 001..{s.train_ids:03d} and validation ids "
            f"{val[0]:03d}..{val[-1]:03d}), {len(s.views)} views x {len(s.types)} types, "
            f"{s.min_frames}-{s.max_frames} frames" if val else
            f"synthetic seed {s.seed}, {'quick' if quick else 'full'} test set: ids {test[0]:03d}..{test[-1]:03d}")


# ---------------------------------------------------------------------------------------------------
# Model size


def profile_model(model, frames: int = 30, height: int = 64, width: int = 44, repeats: int = 10,
                  threads: int = 1) -> dict:
    """Parameters, MACs and CPU latency at batch 1 for one ``frames``-frame ``height`` x ``width`` clip.

    The clip is downsampled to the model's input size first, as in training; MACs are half the FLOPs
    counted by ``torch.utils.flop_counter`` (convolutions, matmuls, einsums); latency is the median of
    ``repeats`` runs after one warm-up, with ``threads`` torch threads.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from metagait_edge.recognition.train import prepare_input

    factor = downsample_factor(model.config)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    was_training = model.training
    model.eval()
    try:
        x = torch.rand(1, frames, height, width)
        with torch.no_grad():
            counter = FlopCounterMode(display=False)
            with counter:
                model(prepare_input(x, factor))
            model(prepare_input(x, factor))
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(prepare_input(x, factor))
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old_threads)
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    # The BNNeck and the classifier only serve the training losses; inference stops at the embeddings.
    inference = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("classifier.", "bnneck.")))
    return {"parameters": int(params), "inference_parameters": int(inference), "macs": int(counter.get_total_flops() // 2),
            "latency_ms": 1e3 * float(np.median(times)), "input": f"1x{frames}x{height}x{width}",
            "model_input": f"1x{frames}x{int(height / factor)}x{int(width / factor)}", "threads": threads}
