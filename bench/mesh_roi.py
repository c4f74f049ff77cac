"""The face mesh on the tracked box's region (``mesh_roi="box"``) against the whole mesh (``"detect"``).

    python bench/mesh_roi.py [--data ../shared/data/dfdc_sample] [--reps 3]

Every video of ``--data``: the 48 frames ingest samples (3 clips x 16 at 5 fps), every face track
(``track_faces``), landmarks found both ways on the same frames and boxes (``find_landmarks``).
Reported, over all frames of all tracks:

- CPU ms per frame of ``find_landmarks`` each way (median of ``--reps``);
- frames where one way finds the face and the other does not;
- the points' distance, per frame the mean over the 468 points in frame pixels (median, 95th
  percentile, max), beside the same for the whole mesh against itself with the box moved by half a
  pixel (how far its own points move for a change that small);
- the aligned crops (``align`` at 224 px): how far the crop's corners move, crop pixels (and the same
  for the whole mesh against itself with the box moved by half a pixel);
- the same frames rotated by +-25 degrees about the face: frames found each way and point distance.

Results go to bench/results/mesh_roi.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from tasks.ingest.faces import FaceTrack, track_faces
from tasks.ingest.landmarks import LandmarkFaceDetector, align, find_landmarks
from tasks.ingest.video import read_frames

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "dfdc_sample"
RESULTS = Path(__file__).resolve().parent / "results" / "mesh_roi.json"
TIMES = [s + i / 5 for s in (0.0, 3.2, 6.4) for i in range(16)]  # what ingest samples from a 10 s video


def point_distance(ref: list, new: list) -> dict:
    """Two lists of per-frame (468, 2) points or None -> found counts and the per-frame mean distance."""
    both = [(p, q) for p, q in zip(ref, new) if p is not None and q is not None]
    d = np.array([np.linalg.norm(p - q, axis=1).mean() for p, q in both])  # (M,) pixels
    return {
        "frames": len(ref),
        "found_ref": sum(p is not None for p in ref),
        "found_new": sum(q is not None for q in new),
        "found_ref_only": sum(p is not None and q is None for p, q in zip(ref, new)),
        "found_new_only": sum(p is None and q is not None for p, q in zip(ref, new)),
        "px_median": float(np.median(d)) if d.size else None,
        "px_p95": float(np.percentile(d, 95)) if d.size else None,
        "px_max": float(d.max()) if d.size else None,
    }


def corner_shift(ref: np.ndarray, new: np.ndarray, size: int) -> np.ndarray:
    """(N, 2, 3) two alignments -> (N,) how far the crop's corners move from one to the other, crop pixels."""
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], float)  # (4, 2)
    out = []
    for a, b in zip(ref, new):
        inv = cv2.invertAffineTransform(a)  # crop -> frame
        frame_pts = corners @ inv[:, :2].T + inv[:, 2]  # (4, 2)
        moved = frame_pts @ b[:, :2].T + b[:, 2]  # (4, 2) where the fast crop puts them
        out.append(np.linalg.norm(moved - corners, axis=1).max())
    return np.array(out)


def _crop_shift(ref_tracks: list[list], new_tracks: list[list], size: int = 224) -> np.ndarray:
    """Per track, per-frame points both ways -> (M,) corner shifts of their aligned crops, every frame."""
    shifts = [corner_shift(align(ref, size).matrices, align(new, size).matrices, size)
              for ref, new in zip(ref_tracks, new_tracks)
              if any(p is not None for p in ref) and any(p is not None for p in new)]  # fmt: skip
    return np.concatenate(shifts)


def _spread(x: np.ndarray) -> dict:
    return {"median": float(np.median(x)), "p95": float(np.percentile(x, 95)), "max": float(x.max())}


def _rotated(frames: list[np.ndarray], box: np.ndarray, degrees: float) -> list[np.ndarray]:
    m = cv2.getRotationMatrix2D(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), degrees, 1.0)
    return [cv2.warpAffine(f, m, (f.shape[1], f.shape[0])) for f in frames]


def compare(videos: list[str], reps: int) -> dict:
    fast, slow = LandmarkFaceDetector(mesh_roi="box"), LandmarkFaceDetector(mesh_roi="detect")
    work: list[tuple[list[np.ndarray], FaceTrack]] = []
    for v in videos:
        frames, _ = read_frames(v, TIMES)
        work += [(frames, t) for t in track_faces(frames, slow)]
    n = sum(len(f) for f, _ in work)
    cpu = {"box": [], "detect": []}
    points = {}
    for _ in range(reps):
        for name, det in (("detect", slow), ("box", fast)):
            t0 = time.process_time()
            points[name] = [find_landmarks(f, t, det) for f, t in work]
            cpu[name].append((time.process_time() - t0) / n * 1e3)
    flat = {k: [p for track in v for p in track] for k, v in points.items()}
    half = [find_landmarks(f, FaceTrack(t.boxes + 0.5, t.scores, t.detected), slow) for f, t in work]
    shift, floor = _crop_shift(points["detect"], points["box"]), _crop_shift(points["detect"], half)
    tilted = {}
    for deg in (-25, 25):
        ref, new = [], []
        for frames, t in work:
            turned = _rotated(frames, t.boxes.mean(0), deg)
            ref += find_landmarks(turned, t, slow)
            new += find_landmarks(turned, t, fast)
        tilted[str(deg)] = point_distance(ref, new)
    fast.close()
    slow.close()
    return {
        "videos": [Path(v).name for v in videos],
        "tracks": len(work),
        "cpu_ms_per_frame": {k: statistics.median(v) for k, v in cpu.items()},
        "cpu_ms_per_frame_runs": cpu,
        "box_vs_detect": point_distance(flat["detect"], flat["box"]),
        "detect_vs_itself_box_moved_half_px": point_distance(flat["detect"], [p for t in half for p in t]),
        "aligned_crop_corner_shift_px": _spread(shift),
        "aligned_crop_corner_shift_px_detect_box_moved_half_px": _spread(floor),
        "tilted": tilted,
        "load_avg": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(SHARED), help="folder of videos (default: the DFDC sample)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    videos = sorted(glob.glob(os.path.join(args.data, "*.mp4")))
    if not videos:
        raise SystemExit(f"{args.data}: no .mp4 files")
    result = compare(videos, args.reps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
