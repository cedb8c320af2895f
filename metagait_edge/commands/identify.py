"""``metagait-edge identify``: who walks in a video, against an enrolled gallery (``metagait-edge enroll``).

Per walker track: the accepted walker or unknown, the nearest enrolled walker, the confidence, and why a
walker was not accepted (beyond the threshold: unknown; two walkers within it: uncertain). ``--json`` prints
``{"video", "gallery", "model", "threshold", "tracks": [{"track", "walker_id", "accepted", "nearest_id",
"confidence", "distance", "silhouettes", "reason", "windows": [...]}]}`` instead of the table.
"""

from __future__ import annotations

import argparse

NAME = "identify"
HELP = "identify the walkers of a video against an enrolled gallery (accept / reject per track)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from metagait_edge.commands.enroll import add_source_arguments

    parser.add_argument("--video", required=True, metavar="PATH", help="the video file")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_source_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    import torch

    from metagait_edge.commands.enroll import default_gallery
    from metagait_edge.recognition.identification import open_gallery
    from metagait_edge.runtime.camera import FrameSource, Recognizer, load_recognition_model
    from metagait_edge.runtime.camera_frontend import track_silhouettes
    from metagait_edge.runtime.enrollment import identify_tracks, read_frames

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    gallery_path = Path(args.gallery) if args.gallery else default_gallery()
    model = load_recognition_model(args.model)
    gallery = open_gallery(model, gallery_path)
    recognizer = Recognizer(model, gallery)
    frames = read_frames(FrameSource("video", args.video), progress=not args.json)
    tracks = identify_tracks(recognizer, track_silhouettes(frames), args.window)
    if args.json:
        print(json.dumps({"video": str(args.video), "gallery": str(gallery_path), "model": getattr(model, "source", "?"),
                          "threshold": gallery.threshold, "tracks": [t.as_dict() for t in tracks]},
                         indent=1, allow_nan=False))
        return 0
    print(f"{args.video}: {len(frames)} frames, {len(tracks)} walker track(s); gallery {gallery_path} "
          f"({len(gallery)} walkers), threshold {gallery.threshold:.6g}")
    for t in tracks:
        verdict = f"ACCEPTED {t.walker_id}" if t.walker_id else "REJECTED (unknown: generic model)"
        print(f"  track {t.track}: {verdict}; nearest {t.nearest_id} at distance {t.distance:.4g}, confidence "
              f"{t.confidence:.2f}, {len(t.windows)} window(s) of {t.silhouettes} silhouettes"
              + (f"; {t.reason}" if t.reason else ""))
    if not tracks:
        print("  nobody in view (no silhouettes)")
    print(f"identified {len(tracks)} track(s) in {time.perf_counter() - t0:.1f} s")
    return 0
