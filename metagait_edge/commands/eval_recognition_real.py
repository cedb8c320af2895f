"""``metagait-edge eval-recognition-real DIR``: do the recognition checkpoints separate REAL people?

``DIR`` holds real silhouettes that stay on your machine (they cannot be shipped):
``DIR/<person>/<sequence>/*.png`` (one folder of frames per walk) or ``DIR/<person>/<sequence>.mp4`` (a video of
one walk, through the runtime's camera front end). Frames are pretreated and embedded exactly as the runtime
does (``metagait_edge.runtime.real_eval``). For each checkpoint (default: the shipped ones) and for a
no-network average-silhouette (GEI) baseline, prints same-vs-different-person ROC AUC, EER, and rank-1 with
each sequence left out in turn; ``--json PATH`` writes ``{"data": {...}, "results": {method: {"auc", "eer",
"rank1", "rank1_chance", ...}}}`` (rates 0..1). ``--tracks-of VIDEO`` scores a multi-walker video without
labels instead: the halves of each walker track are one person, tracks in view side by side are two
(``real_eval.video_track_halves``).
"""

from __future__ import annotations

import argparse

NAME = "eval-recognition-real"
HELP = ("score the recognition checkpoints and a GEI baseline on a local folder of REAL silhouettes "
        "(person/sequence/frames.png): same-vs-different-person AUC, EER, rank-1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", metavar="DIR", nargs="?", default=None,
                        help="DIR/<person>/<sequence>/*.png or DIR/<person>/<sequence>.mp4")
    parser.add_argument("--tracks-of", default=None, metavar="VIDEO",
                        help="instead of DIR: a multi-walker video without labels; each walker track's first and "
                             "second half are one person, tracks in view side by side at one moment two people, "
                             "other pairs are not compared")
    parser.add_argument("--silhouette-method", default="mog2", choices=["mog2", "knn", "segmentation"],
                        help="with --tracks-of: the camera front end's person masks (default mog2; segmentation "
                             "needs the camera-models extra)")
    parser.add_argument("--max-walkers", type=int, default=8,
                        help="with --tracks-of: walkers tracked at once (default 8; the runtime's default is 3)")
    parser.add_argument("--half-frames", type=int, default=15,
                        help="with --tracks-of: silhouettes per half (a track needs twice this; default 15)")
    parser.add_argument("--checkpoints", default=None, metavar="DIR",
                        help="folder with <variant>.safetensors + .json (default: the shipped checkpoints)")
    parser.add_argument("--variants", default=None,
                        help="comma-separated checkpoint names in that folder (default: every *.safetensors there)")
    parser.add_argument("--no-gei", action="store_true", help="skip the average-silhouette (GEI) baseline")
    parser.add_argument("--min-frames", type=int, default=5,
                        help="refuse a sequence with fewer usable frames than this (default 5)")
    parser.add_argument("--across-recordings", action="store_true",
                        help="compare only sequences of different recordings: sequences with the same folder name "
                             "under different people (e.g. person_a/video3, person_b/video3: walkers filmed together) "
                             "are never paired")
    parser.add_argument("--nearest", action="store_true", help="also print each sequence's nearest sequence")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON here")


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    import torch

    from metagait_edge.atomic import atomic_write_text
    from metagait_edge.recognition import shipped_checkpoint_dir
    from metagait_edge.runtime import real_eval as R
    from metagait_edge.runtime.camera import load_recognition_model

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ckpt_dir = Path(args.checkpoints) if args.checkpoints else shipped_checkpoint_dir()
    if args.variants:
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    else:
        variants = sorted(p.stem for p in ckpt_dir.glob("*.safetensors")) if ckpt_dir.is_dir() else []
    if not variants and args.no_gei:
        raise ValueError(f"nothing to evaluate: no checkpoint in {ckpt_dir} and --no-gei")
    models = {}
    for v in variants:
        path = ckpt_dir / f"{v}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {v!r} not found: {path}")
        models[v] = load_recognition_model(path)
    if (args.root is None) == (args.tracks_of is None):
        raise ValueError("give either DIR (labelled sequences) or --tracks-of VIDEO, not both or neither")
    comparable = None
    if args.tracks_of:
        if args.across_recordings:
            raise ValueError("--across-recordings compares folders of DIR; --tracks-of has one recording")
        from metagait_edge.runtime.camera_frontend import CameraConfig

        front_end = CameraConfig(silhouette_method=args.silhouette_method, max_walkers=args.max_walkers)
        sequences, comparable = R.video_track_halves(args.tracks_of, half_frames=args.half_frames, progress=True,
                                                     config=front_end)
    else:
        sequences = R.load_real_sequences(args.root, progress=True, min_frames=args.min_frames)
    data = R.describe_sequences(sequences)
    if comparable is not None:
        data["silhouette_method"], data["max_walkers"] = args.silhouette_method, args.max_walkers
        data["pairs_of_tracks_in_view_together"] = R.people_compared(sequences, comparable)
    results = R.evaluate_real(sequences, models, progress=True, include_gei=not args.no_gei,
                             across_recordings=args.across_recordings, comparable=comparable)
    print(f"{args.root or args.tracks_of}: {data['people']} people, {data['sequences']} sequences "
          f"({data['frames_min']}-{data['frames_max']} frames, median {data['frames_median']:.0f}; "
          f"{data['frames_skipped']} empty frames skipped); checkpoints {ckpt_dir}"
          + ("; only pairs across recordings" if args.across_recordings else "")
          + (f"; tracks: halves of a track are one person, {data['pairs_of_tracks_in_view_together']} pairs of "
             "tracks in view side by side are two" if comparable is not None else ""))
    print(R.format_table(results))
    if args.nearest:
        for name, r in results.items():
            print(f"{name}: " + ", ".join(f"{p} -> {q}" for p, q in r.nearest.items()))
    for line in R.verdict(results):
        print(line)
    if args.json:
        payload = {"data": {"root": str(args.root or args.tracks_of), "checkpoints": str(ckpt_dir),
                            "across_recordings": bool(args.across_recordings), **data},
                   "results": {k: r.as_dict() for k, r in results.items()}}
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}")
    print(f"eval-recognition-real took {time.perf_counter() - t0:.0f} s")
    return 0
