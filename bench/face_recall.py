"""Face detection recall on real clips and on harder copies of them.

    python bench/face_recall.py [--data DIR ...]    # default: every clip under ../shared/data

For each clip, the 48 frames ingest samples (3 clips x 16 at 5 fps) are decoded exactly, and
recall is the share of frames where the detector finds a face on the whole frame
(``FaceDetector.detect``, no tracking) and where the tracker has a real detection
(``track_face``). The harder copies are made from the same frames:

- ``small``: the frame shrunk to a third inside a black canvas of the same size (a face of
  ~40 px in 1080p);
- ``portrait``: a 9:16 crop around the face, as phones film;
- ``dark``: the frame at a quarter of its brightness.

Real faces looking up or down are not in the sample; they are not measured here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from tasks.ingest.faces import FaceDetector, track_face
from tasks.ingest.video import probe, sample_frames

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TIMES = [s + i / 5 for s in (0.0, 3.2, 6.4) for i in range(16)]


def small(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    out = np.zeros_like(frame)
    tiny = cv2.resize(frame, (w // 3, h // 3), interpolation=cv2.INTER_AREA)
    out[h // 3 : h // 3 + tiny.shape[0], w // 3 : w // 3 + tiny.shape[1]] = tiny
    return out


def portrait(frame: np.ndarray, cx: float) -> np.ndarray:
    h, w = frame.shape[:2]
    cw = min(w, int(h * 9 / 16)) // 2 * 2
    x0 = int(np.clip(cx - cw / 2, 0, w - cw))
    return np.ascontiguousarray(frame[:, x0 : x0 + cw])


def dark(frame: np.ndarray) -> np.ndarray:
    return (frame // 4).astype(np.uint8)


def recall(frames: np.ndarray, detector: FaceDetector) -> dict[str, float]:
    detected = np.mean([bool(detector.detect(f)) for f in frames])
    try:
        tracked = float(track_face(frames, detector).detected.mean())
    except ValueError:
        tracked = 0.0
    return {"detect": float(detected), "track": tracked}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, nargs="*", default=[SHARED])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "face_recall.json")
    args = ap.parse_args(argv)
    clips = sorted(p for d in args.data for p in d.rglob("*.mp4"))
    if not clips:
        raise SystemExit(f"no .mp4 under {args.data}")
    rows = {}
    with FaceDetector() as detector:
        for path in clips:
            info = probe(str(path))
            times = [t for t in TIMES if t < info.duration - 0.1]
            frames, _ = sample_frames(str(path), times, rotation=info.rotation)  # (N, H, W, 3)
            track = track_face(frames, detector)
            cx = float(np.median((track.boxes[:, 0] + track.boxes[:, 2]) / 2))
            rows[path.name] = {
                "size": f"{info.width}x{info.height}",
                "as is": recall(frames, detector),
                "small": recall(np.stack([small(f) for f in frames]), detector),
                "portrait": recall(np.stack([portrait(f, cx) for f in frames]), detector),
                "dark": recall(np.stack([dark(f) for f in frames]), detector),
            }
            print(path.name, json.dumps(rows[path.name]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    kinds = ("as is", "small", "portrait", "dark")
    print(f"{'clip':<16}{'size':>11}" + "".join(f"{k:>18}" for k in kinds))
    for name, r in rows.items():
        cells = "".join(f"{r[k]['detect']:>9.0%} /{r[k]['track']:>6.0%}" for k in kinds)
        print(f"{name:<16}{r['size']:>11}{cells}")
    print("cells: whole-frame detection / tracked detection")


if __name__ == "__main__":
    main()
