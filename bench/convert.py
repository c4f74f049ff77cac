"""What the YUV -> RGB conversion of ingest's picked frames costs, today's way and the alternatives.

    python bench/convert.py                  # the real 1080p DFDC clips in ../shared/data/dfdc_sample
    python bench/convert.py --frames 48 --reps 5

Each clip's frames at ingest's spread (every 0.2 s, ``--frames`` per clip) are decoded once and kept
as PyAV frames; every variant then converts the same frames, all variants one after another in each
repetition (their order rotated between repetitions). A variant's per-video setup (a converter it
builds for the video's frames) is inside its time. Numbers are CPU milliseconds per frame
(``time.process_time``: every thread of this process, so swscale's slice threads are counted), the
median over repetitions, and each variant's ratio to ``to_ndarray`` measured in the same run.
Minor page faults per frame are counted too (a fresh 6 MB output buffer faults in ~1,500 pages).
Every variant's pixels are compared with ``to_ndarray``'s: ``equal`` (np.array_equal on every
frame) and the largest absolute difference per channel (R, G, B).

- ``to_ndarray``   ingest before issue 26: ``frame.to_ndarray(format="rgb24")``; PyAV builds a new
                   swscale context (and its slice-thread pool, one thread per CPU) for every frame.
- ``threads1``     the same, one thread: ``frame.reformat(format="rgb24", threads=1)``.
- ``reused``       one ``VideoReformatter`` for the video's frames (its swscale context is kept).
- ``rgb_frames``   what ingest ships: :class:`tasks.ingest.video.RGBConverter`, one per video.
- ``cv2_i420``     OpenCV's ``cvtColor(COLOR_YUV2RGB_I420)`` on the planes (other coefficients).
- ``scaled_640``   swscale converting straight to the detector's 640 x 360 (cost only: other pixels).

``--pipeline``: the same question inside ingest, where the frames' memory matters more than the
conversion: ``preprocess_video`` over every clip (``--reps`` passes after a warm-up video, one face
detector), its stage clock's CPU per video (``tasks.ingest.stages``) and the process's minor page
faults per video, in two fresh child processes: with the allocator as it comes (as before issue 26) and
after :func:`tasks.ingest.video.keep_frame_memory` (what an ingest worker calls at set-up).

Results go to bench/results/convert.json (``--pipeline``: convert-pipeline.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from tasks.ingest.preprocess import PreprocessConfig, face_detector, preprocess_video
from tasks.ingest.stages import NAMES, OTHER, measuring
from tasks.ingest.video import RGBConverter, keep_frame_memory

RESULTS = Path(__file__).resolve().parent / "results" / "convert.json"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "dfdc_sample"
REFERENCE = "to_ndarray"


def picked_frames(path: Path, frames: int, every_s: float = 0.2) -> list:
    """The video's decoded frames nearest 0, every_s, 2 every_s, ... (``frames`` of them), as PyAV frames."""
    out, want = [], 0.0
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        v.thread_type = "NONE"
        for frame in c.decode(v):
            if frame.time is not None and frame.time + 1e-6 >= want:
                out.append(frame)
                want += every_s
                if len(out) == frames:
                    break
    return out


def _reused(frames: list) -> list[np.ndarray]:
    sws = VideoReformatter()
    return [sws.reformat(f, format="rgb24").to_ndarray() for f in frames]


def _rgb_frames(frames: list) -> list[np.ndarray]:
    to_rgb = RGBConverter()
    return [to_rgb(f) for f in frames]


def _cv2_i420(frames: list) -> list[np.ndarray]:
    return [cv2.cvtColor(f.to_ndarray(), cv2.COLOR_YUV2RGB_I420) for f in frames]  # (H*3/2, W) -> (H, W, 3)


def _scaled(frames: list, side: int = 640) -> list[np.ndarray]:
    sws = VideoReformatter()
    out = []
    for f in frames:
        scale = side / max(f.width, f.height)
        w, h = int(f.width * scale), int(f.height * scale)
        out.append(sws.reformat(f, width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray())
    return out


VARIANTS = {
    REFERENCE: lambda frames: [f.to_ndarray(format="rgb24") for f in frames],
    "threads1": lambda frames: [f.reformat(format="rgb24", threads=1).to_ndarray() for f in frames],
    "reused": _reused,
    "rgb_frames": _rgb_frames,
    "cv2_i420": _cv2_i420,
    "scaled_640": _scaled,
}
COST_ONLY = {"scaled_640"}  # other sizes: no pixel comparison


def _diff(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[bool, list[int]]:
    """(every frame equal, max |a - b| per channel over all frames)."""
    worst = np.zeros(3, dtype=int)
    for x, y in zip(a, b):
        worst = np.maximum(worst, np.abs(x.astype(np.int16) - y.astype(np.int16)).reshape(-1, 3).max(axis=0))
    return bool(all(np.array_equal(x, y) for x, y in zip(a, b))), worst.tolist()


def run(videos: list[list], reps: int, names: list[str]) -> dict:
    n_frames = sum(len(v) for v in videos)
    cpu: dict[str, list[float]] = {n: [] for n in names}
    faults: dict[str, list[float]] = {n: [] for n in names}
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
            for frames in videos:
                VARIANTS[name](frames)  # the video's outputs are held until its last frame, as ingest holds them
            cpu[name].append((time.process_time() - t0) / n_frames * 1000)
            faults[name].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / n_frames)
    ref = [VARIANTS[REFERENCE](v) for v in videos]
    rows = {}
    for name in names:
        med = statistics.median(cpu[name])
        row = {"ms_per_frame": round(med, 3), "reps_ms": [round(x, 3) for x in cpu[name]],
               "page_faults_per_frame": round(statistics.median(faults[name]), 1)}  # fmt: skip
        if REFERENCE in cpu:
            row["ratio_to_reference"] = round(med / statistics.median(cpu[REFERENCE]), 3)
        if name not in COST_ONLY:
            out = [VARIANTS[name](v) for v in videos]
            row["equal"], row["max_abs_diff_rgb"] = map(list, zip(*[_diff(o, r) for o, r in zip(out, ref)]))
            row["equal"] = all(row["equal"])
            row["max_abs_diff_rgb"] = np.max(row["max_abs_diff_rgb"], axis=0).tolist()
        rows[name] = row
    return {"frames": n_frames, "variants": rows}


def pipeline_child(paths: list[Path], reps: int, keep: bool) -> dict:
    """In this process: preprocess_video over paths ``reps`` times -> stage CPU and page faults per video."""
    cfg = PreprocessConfig()
    kept = keep_frame_memory() if keep else None
    cpu: dict[str, float] = {}
    with face_detector(cfg) as detector:
        preprocess_video(str(paths[0]), cfg, detector)  # warm-up: graphs, imports
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(reps):
            for p in paths:
                with measuring() as clock:
                    preprocess_video(str(p), cfg, detector)
                for k, v in clock.cpu.items():
                    cpu[k] = cpu.get(k, 0.0) + v
        n = reps * len(paths)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / n
    stages = {k: round(v / n, 4) for k, v in cpu.items()}
    return {"keep_frame_memory": kept, "videos": n, "page_faults_per_video": round(faults), "cpu_s_per_video": stages,
            "total_cpu_s_per_video": round(sum(cpu.values()) / n, 4)}  # fmt: skip


def pipeline(data: Path, reps: int) -> dict:
    """:func:`pipeline_child` with the allocator as it comes and after keep_frame_memory, each in a
    fresh process (the setting is process-wide), one after the other."""
    out = {}
    for mode in ("default_malloc", "keep_frame_memory"):
        cmd = [sys.executable, __file__, "--data", str(data), "--reps", str(reps), "--child", mode]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def print_pipeline(result: dict) -> None:
    before, after = result["default_malloc"], result["keep_frame_memory"]
    print(
        f"preprocess_video, {after['videos']} videos per process, CPU s per video (load average {result['load_average']})"
    )
    print(f"{'stage':<10} {'default':>10} {'kept':>10}")
    for k in [n for n in (*NAMES, OTHER) if n in before["cpu_s_per_video"] or n in after["cpu_s_per_video"]]:
        print(f"{k:<10} {before['cpu_s_per_video'].get(k, 0):>10.3f} {after['cpu_s_per_video'].get(k, 0):>10.3f}")
    print(f"{'total':<10} {before['total_cpu_s_per_video']:>10.3f} {after['total_cpu_s_per_video']:>10.3f}")
    print(
        f"{'faults':<10} {before['page_faults_per_video']:>10} {after['page_faults_per_video']:>10}  (minor page faults per video)"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED, help="folder of .mp4 files (default: the real DFDC sample)")
    ap.add_argument("--frames", type=int, default=48, help="frames per clip (ingest picks 48: 3 clips x 16)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--pipeline", action="store_true", help="the convert stage inside preprocess_video instead")
    ap.add_argument("--child", choices=["default_malloc", "keep_frame_memory"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    paths = sorted(args.data.glob("*.mp4"))
    if not paths:
        raise SystemExit(f"no .mp4 files in {args.data}: nothing to measure")
    if args.child:  # one side of --pipeline, in its own process
        print(json.dumps(pipeline_child(paths, args.reps, keep=args.child == "keep_frame_memory")))
        return
    if args.pipeline:
        load = os.getloadavg()[0]
        result = {**pipeline(args.data, args.reps), "load_average": [round(load, 2), round(os.getloadavg()[0], 2)]}
        out = args.out if args.out != RESULTS else RESULTS.with_name("convert-pipeline.json")
        out.write_text(json.dumps(result, indent=1))
        print_pipeline(result)
        print(f"-> {out}")
        return
    cv2.setNumThreads(1)  # as ingest runs: one video per core
    names = [REFERENCE, *[n for n in args.only if n != REFERENCE]]
    videos = [picked_frames(p, args.frames) for p in paths]
    size = {f"{v[0].width}x{v[0].height} {v[0].format.name}" for v in videos if v}
    load_before = os.getloadavg()
    result = run(videos, args.reps, names)
    result.update(
        videos=[p.name for p in paths], sizes=sorted(size), reps=args.reps, cpus=os.cpu_count(),
        machine=platform.processor() or platform.machine(), pyav=av.__version__,
        load_average=[round(x, 2) for x in (*load_before, *os.getloadavg())],
    )  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"{result['frames']} frames ({', '.join(result['sizes'])}), {args.reps} reps, "
          f"load average {result['load_average'][0]} -> {result['load_average'][3]}")  # fmt: skip
    print(f"{'variant':<12} {'CPU ms/frame':>12} {'ratio':>7} {'faults/frame':>12}  equal  max |diff| R,G,B")
    for name, row in result["variants"].items():
        eq = "" if name in COST_ONLY else str(row["equal"])
        diff = "" if name in COST_ONLY else ",".join(map(str, row["max_abs_diff_rgb"]))
        print(f"{name:<12} {row['ms_per_frame']:>12.3f} {row.get('ratio_to_reference', 1.0):>6.3f}x "
              f"{row['page_faults_per_frame']:>12.1f}  {eq:<5}  {diff}")  # fmt: skip
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
