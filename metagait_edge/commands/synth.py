"""``metagait-edge synth-silhouettes``: write a synthetic CASIA-B-like silhouette set (OpenGait layout)."""

from __future__ import annotations

import argparse

NAME = "synth-silhouettes"
HELP = "generate synthetic gait silhouettes (11 views, NM/BG/CL) into the OpenGait .pkl layout"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output root: <out>/<id>/<type>/<view>/<view>.pkl")
    parser.add_argument("--ids", type=int, default=20, help="number of identities (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed; the same seed gives byte-identical files")
    parser.add_argument("--first-id", type=int, default=1, help="number of the first identity (default 1)")
    parser.add_argument("--views", default=None, help="comma-separated view angles (default 0,18,...,180)")
    parser.add_argument("--types", default=None, help="comma-separated types (default nm-01..06,bg-01..02,cl-01..02)")
    parser.add_argument("--frames", default="50-70", help="frames per sequence, N or MIN-MAX (default 50-70)")
    parser.add_argument("--no-defects", action="store_true", help="clean masks: no noise, holes, jitter")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--config", default=None, help="YAML with SynthConfig keys (flags given override it)")
    parser.add_argument("--preview", default=None, help="also write PNG strips of two identities into this folder")


def _frames(text: str) -> tuple[int, int]:
    try:
        lo, _, hi = text.partition("-")
        return int(lo), int(hi or lo)
    except ValueError:
        raise ValueError(f"--frames {text!r}: use N or MIN-MAX") from None


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tqdm import tqdm

    from metagait_edge.config import from_dict, load_config
    from metagait_edge.synth.dataset import SynthConfig, generate, jobs

    cfg = load_config(SynthConfig, args.config) if args.config else from_dict(SynthConfig, {})
    lo, hi = _frames(args.frames)
    changes = dict(ids=args.ids, seed=args.seed, first_id=args.first_id, min_frames=lo, max_frames=hi)
    if args.views:
        changes["views"] = [int(v) for v in args.views.split(",")]
    if args.types:
        changes["types"] = [t.strip() for t in args.types.split(",")]
    if args.no_defects:
        changes["defects"] = False
    cfg = replace(cfg, **changes)
    n = len(jobs(cfg))
    summary = generate(args.out, cfg, workers=args.workers,
                       progress=lambda it: tqdm(it, total=n, unit="seq", desc="synth"))
    per = summary["seconds"] / max(1, summary["frames"] + summary["skipped_frames"]) * 1e3
    print(f"wrote {summary['sequences']} sequences ({cfg.ids} ids x {len(cfg.types)} types x {len(cfg.views)} views), "
          f"{summary['frames']} frames (+{summary['skipped_frames']} empty frames skipped), "
          f"{summary['bytes'] / 1e6:.1f} MB to {summary['root']} in {summary['seconds']:.1f} s "
          f"({per:.2f} ms/frame, {args.workers} worker(s))")
    if args.preview:
        from metagait_edge.synth.preview import write_doc_images

        for p in write_doc_images(args.preview, seed=cfg.seed):
            print(f"preview: {p}")
    return 0
