"""Camera front end throughput: frames per second for one and for three walkers in view, one core.

    taskset -c 0 python benchmarks/bench_camera.py [--methods mog2 segmentation] [--frames 60] [--json PATH]
    taskset -c 0 python benchmarks/bench_camera.py --video PATH [--methods mog2]   # a real fixed-camera video

Scenes are rendered by ``runtime.walker_scene`` (walkers painted in clothes over a textured background,
640 x 240). Each method runs the whole ``CameraFrontEnd`` (person boxes, tracking, masks, quality gates,
pretreatment) over the scene; the figure counts only the frames after the background warm-up, all of them
with every walker in view. ``segmentation+hog`` takes the boxes from OpenCV's HOG people detector instead of
the foreground. ``segmentation`` needs the optional mediapipe (``pip install
'metagait-edge[camera-models]'``) and is skipped, with a note, without it. One thread: OpenCV, OpenMP and
TFLite's XNNPACK all get one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

WARMUP = 20  # background-model frames before the measured ones (the front end emits nothing then)


def scene_walkers(n: int):
    from metagait_edge.runtime.walker_scene import SceneWalker

    shirts = [(170, 90, 40), (40, 140, 60), (60, 60, 170)]
    # Similar speeds and 2.5 m apart: every walker stays whole and apart in view for the measured frames.
    return [SceneWalker(160 + 8 * k, 55 + 10 * k, "MF"[k % 2], 105, x0=2.5 * (k - (n - 1) / 2) - 0.3,
                        shirt_bgr=shirts[k], seed=k + 1) for k in range(n)]


def measure(method: str, scene, n_walkers: int) -> dict:
    from metagait_edge.runtime.camera_frontend import CameraConfig, CameraFrontEnd

    silhouette_method, _, detector = method.partition("+")  # "segmentation+hog": HOG boxes, model masks
    front_end = CameraFrontEnd(CameraConfig(silhouette_method=silhouette_method, detector=detector or "motion",
                                            warmup_frames=WARMUP, max_walkers=n_walkers))
    for frame in scene.frames[:WARMUP + front_end.config.track_min_hits]:
        front_end.process(frame)  # learn the background, confirm the tracks
    measured = scene.frames[WARMUP + front_end.config.track_min_hits:]
    t0, c0 = time.perf_counter(), time.process_time()
    silhouettes = 0
    for frame in measured:
        silhouettes += len(front_end.process(frame).silhouettes)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    front_end.close()
    return {"method": method, "walkers": n_walkers, "frames": len(measured), "fps": round(len(measured) / wall, 2),
            "fps_cpu": round(len(measured) / max(cpu, 1e-9), 2),
            "ms_per_frame": round(1e3 * wall / len(measured), 1), "cpu_ms_per_frame": round(1e3 * cpu / len(measured), 1),
            "silhouettes_per_frame": round(silhouettes / len(measured), 2), "counters": front_end.counters.as_dict()}


def measure_video(method: str, path: str, max_walkers: int) -> dict:
    """The front end over a whole real video, every walker in it (a fixed camera: motion boxes)."""
    import cv2
    from tqdm import tqdm

    from metagait_edge.runtime.camera_frontend import CameraConfig, CameraFrontEnd

    silhouette_method, _, detector = method.partition("+")
    front_end = CameraFrontEnd(CameraConfig(silhouette_method=silhouette_method, detector=detector or "motion",
                                            max_walkers=max_walkers))
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise SystemExit(f"cannot open video {path}")
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    wall = cpu = 0.0
    silhouettes, per_track, frames = 0, {}, 0
    for _ in tqdm(range(total or 10**9), desc=f"{method} on {os.path.basename(path)}", unit="frame", leave=False):
        ok, frame = capture.read()
        if not ok:
            break
        t0, c0 = time.perf_counter(), time.process_time()
        result = front_end.process(frame)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        frames += 1
        silhouettes += len(result.silhouettes)
        for sil in result.silhouettes:
            per_track[sil.track] = per_track.get(sil.track, 0) + 1
    front_end.close()
    lengths = sorted(per_track.values(), reverse=True)
    return {"method": method, "video": os.path.basename(path), "frame_size": [int(capture.get(3)), int(capture.get(4))],
            "frames": frames, "fps": round(frames / wall, 2), "fps_cpu": round(frames / max(cpu, 1e-9), 2),
            "ms_per_frame": round(1e3 * wall / frames, 1), "cpu_ms_per_frame": round(1e3 * cpu / frames, 1),
            "silhouettes_per_frame": round(silhouettes / frames, 2),
            "tracks_with_silhouettes": len(lengths), "tracks_with_30_or_more": sum(1 for n in lengths if n >= 30),
            "counters": front_end.counters.as_dict()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["mog2", "segmentation"], choices=["mog2", "knn", "segmentation", "segmentation+hog"])
    ap.add_argument("--walkers", nargs="+", type=int, default=[1, 3], choices=[1, 2, 3])
    ap.add_argument("--frames", type=int, default=60, help="measured frames per scene")
    ap.add_argument("--video", default=None, help="a real video (fixed camera) instead of the rendered scenes: the "
                    "front end over all its frames and walkers")
    ap.add_argument("--max-walkers", type=int, default=8, help="with --video: tracks at once")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import cv2
    from tqdm import tqdm

    from metagait_edge.runtime.walker_scene import render_scene

    cv2.setNumThreads(1)
    rows, notes = [], []
    methods = list(args.methods)
    if any(m.startswith("segmentation") for m in methods):
        try:
            from metagait_edge.runtime.camera_masks import import_mediapipe_pose

            import_mediapipe_pose()
        except ImportError as exc:
            notes.append(f"segmentation skipped: {exc}")
            methods = [m for m in methods if not m.startswith("segmentation")]
    if args.video:
        rows = [measure_video(method, args.video, args.max_walkers) for method in methods]
    else:
        scenes = {n: render_scene(scene_walkers(n), n_frames=args.frames + 3, lead_in=WARMUP, size=(640, 240))
                  for n in tqdm(args.walkers, desc="rendering scenes", unit="scene")}
        for method in tqdm(methods, desc="front ends", unit="method"):
            for n in args.walkers:
                rows.append(measure(method, scenes[n], n))
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    out = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, affinity {affinity}",
           "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None, "rows": rows, "notes": notes}
    # fps counts wall time (other jobs on the core slow it); fps_cpu is what the core alone would do.
    print(f"{'method':<17} {'walkers':>7} {'fps':>7} {'fps_cpu':>8} {'ms/frame':>9} {'CPU ms':>7} {'sil/frame':>9}")
    for r in rows:
        print(f"{r['method']:<17} {r.get('walkers', 'all'):>7} {r['fps']:>7} {r['fps_cpu']:>8} {r['ms_per_frame']:>9} "
              f"{r['cpu_ms_per_frame']:>7} {r['silhouettes_per_frame']:>9}")
        if "counters" in r and args.video:
            print(f"  {r['tracks_with_silhouettes']} tracks with silhouettes ({r['tracks_with_30_or_more']} with >= 30); "
                  f"counters {r['counters']}")
    for note in notes:
        print(note)
    print(f"summary: {len(rows)} measurements on CPUs {affinity}, load average {out['load_average']}")
    if args.json:
        from metagait_edge.atomic import atomic_write_text

        atomic_write_text(args.json, json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
