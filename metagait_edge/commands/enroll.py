"""``metagait-edge enroll``: enroll a walker from a video file or the live camera into a gallery file.

Each run is one pass: its silhouettes (camera front end) are cut into windows and every window becomes one
template of the walker, labelled with the source, so several passes (views, days, clothes) add templates. The
gallery file is written atomically and records the fingerprint of the recognition model that made its
templates and the open-set threshold used (the model's calibrated one, ``metagait-edge calibrate-threshold``);
a model without a calibrated threshold, or a gallery made by another model, is refused.
"""

from __future__ import annotations

import argparse

NAME = "enroll"
HELP = "enroll a walker from a video file or the live camera (several passes add templates) into a gallery file"


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``enroll`` and ``identify`` share: the model, the gallery, the window."""
    from metagait_edge.runtime.enrollment import DEFAULT_WINDOW

    parser.add_argument("--gallery", default=None, metavar="FILE",
                        help="gallery file (default: $METAGAIT_CACHE/galleries/walkers.safetensors)")
    parser.add_argument("--model", default=None, metavar="CHECKPOINT",
                        help="recognition checkpoint (default: the shipped MetaGait)")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                        help=f"silhouettes per template / query (default {DEFAULT_WINDOW}, the runtime's)")


def default_gallery():
    from metagait_edge import paths

    return paths.cache_dir() / "galleries" / "walkers.safetensors"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--walker", required=True, help="the walker's name (gallery id)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", default=None, metavar="PATH", help="a video file of the walker alone in view")
    source.add_argument("--camera", type=int, default=None, metavar="N", help="live camera device index")
    parser.add_argument("--seconds", type=float, default=10.0, help="with --camera: how long to record (default 10)")
    add_source_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import torch

    from metagait_edge.recognition.identification import open_gallery
    from metagait_edge.runtime.camera import FrameSource, Recognizer, load_recognition_model
    from metagait_edge.runtime.camera_frontend import track_silhouettes
    from metagait_edge.runtime.enrollment import describe_source, enroll_tracks, read_frames

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if not args.walker.strip():
        raise ValueError("--walker: empty name")
    gallery_path = Path(args.gallery) if args.gallery else default_gallery()
    model = load_recognition_model(args.model)
    gallery = open_gallery(model, gallery_path, create=True)  # refuses another model's gallery, or no threshold
    recognizer = Recognizer(model, gallery)
    if args.video is not None:
        source = FrameSource("video", args.video)
        frames = read_frames(source, progress=True)
    else:
        source = FrameSource("camera", index=args.camera)
        print(f"recording camera {args.camera} for {args.seconds:g} s: walk across the view, alone")
        try:
            frames = read_frames(source, seconds=args.seconds, progress=True)
        except OSError as exc:  # no such device, or it stopped delivering frames: one clear line, no traceback
            raise ValueError(f"--camera {args.camera}: {exc}") from exc
    label = describe_source(args.video, args.camera) + time.strftime(" %Y-%m-%d %H:%M")
    result = enroll_tracks(recognizer, args.walker, track_silhouettes(frames), label, args.window)
    gallery.save(gallery_path)
    print(f"enrolled {args.walker!r}: {len(result.added)} template(s) from {len(frames)} frames "
          f"({result.silhouettes} silhouettes), {result.templates} in the gallery now")
    print(f"gallery {gallery_path}: {len(gallery)} walker(s) {gallery.walkers}, model {gallery.model_fingerprint[:16]} "
          f"({getattr(model, 'source', '?')}), threshold {gallery.threshold:.6g} ({gallery.threshold_source}); "
          f"{time.perf_counter() - t0:.1f} s")
    return 0
