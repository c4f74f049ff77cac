"""What landmark crops cost, and what they look like.

    python bench/landmarks.py [--data ../shared/data/dfdc_sample] [--figure docs/img/landmarks.png]
                              [--mouth-boxes 20 --work /tmp/avff-mouth] [--template]

Cost: every video of ``--data`` is preprocessed as ingest does (``preprocess_video``), once with
``crop="box"`` and once with ``crop="landmarks"``; the CPU seconds of each stage come from the
the ingest stage clock (tasks/ingest/stages.py). Reported: the face mesh's CPU ms per sampled frame (its "landmarks"
stage over the frames sampled) and the whole preprocessing's CPU with landmarks over without.

Figure (``--figure``): one real frame as is and rotated by 25 degrees about the face; left, the box
crop with the template mouth box (what every clip used before landmarks); right, the landmark crop
with the clip's stored mouth box. The dots are the lip landmarks found afresh on each crop.

Mouth boxes (``--mouth-boxes N``): N generated REAL videos and one fake of each type
(``tasks/synthetic``), one clip each through the ingest preprocessing and the shard round trip at
64 px; the AUC of the hand-made ``lip_sync`` statistic, REAL against each fake type, with the mouth
box the statistic used before ``avff_model/crop_geometry.py`` and with the template's.

Template (``--template``): where the eyes and the mouth fall in *box* crops of real faces (the DFDC
sample and every 12th realav clip, 8 frames each), the numbers ``crop_geometry``'s template is set to.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from pathlib import Path

import cv2
import numpy as np

from avff_model.crop_geometry import default_mouth_box
from tasks.ingest.faces import crop_track, track_face
from tasks.ingest.landmarks import LIPS, LandmarkFaceDetector, align, crop_landmarks, find_landmarks, mouth_box, pose_of
from tasks.ingest.preprocess import PreprocessConfig, face_detector, preprocess_video
from tasks.ingest.stages import measuring
from tasks.ingest.video import sample_frames

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "dfdc_sample"
OLD_HANDMADE_BOX = (
    0.62,
    0.85,
    0.35,
    0.65,
)  # (top, bottom, left, right): tasks/evaluate/handmade.py before crop_geometry


def cost(videos: list[str]) -> None:
    """Print per video and in total: sampled frames, box CPU s, landmark CPU s, mesh ms/frame."""
    totals = {"box": 0.0, "landmarks": 0.0, "mesh": 0.0, "frames": 0}
    for crop in ("box", "landmarks"):
        cfg = PreprocessConfig(crop=crop)
        with face_detector(cfg) as det:
            preprocess_video(videos[0], cfg, det)  # warm-up: the graphs' first call allocates
            for v in videos:
                with measuring() as clock:
                    out = preprocess_video(v, cfg, det)
                totals[crop] += clock.total()
                if crop == "landmarks":
                    frames = cfg.frames_per_clip * cfg.max_clips  # spread clips back to back: no shared frames
                    totals["mesh"] += clock.cpu["landmarks"]
                    totals["frames"] += frames
                    print(f"{Path(v).name}: landmarks {clock.cpu['landmarks'] / frames * 1e3:.1f} CPU ms/frame, "
                          f"found in {out.landmark_frac:.0%} of frames, crop={out.crop}")  # fmt: skip
    print(f"face mesh: {totals['mesh'] / totals['frames'] * 1e3:.1f} CPU ms per sampled frame "
          f"({totals['frames']} frames, {len(videos)} videos)")  # fmt: skip
    print(f"preprocessing CPU: box {totals['box']:.2f} s, landmarks {totals['landmarks']:.2f} s "
          f"= {totals['landmarks'] / totals['box']:.2f}x")  # fmt: skip


def _rotated(frame: np.ndarray, box: np.ndarray, degrees: float) -> np.ndarray:
    m = cv2.getRotationMatrix2D(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), degrees, 1.0)
    return cv2.warpAffine(frame, m, (frame.shape[1], frame.shape[0]))


def _draw(crop: np.ndarray, box: list[float], det: LandmarkFaceDetector, title: str) -> np.ndarray:
    out = np.ascontiguousarray(crop.copy())
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    cv2.rectangle(out, (x0, y0), (x1, y1), (255, 220, 0), 2)
    pts = det.landmarks(crop, np.array([0, 0, crop.shape[1], crop.shape[0]], dtype=float))
    for x, y in pts[list(LIPS)] if pts is not None else []:
        cv2.circle(out, (int(round(x)), int(round(y))), 2, (0, 255, 0), -1)
    cv2.putText(out, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def figure(video: str, out: str, size: int = 224, degrees: float = 25.0) -> None:
    """Box crop + template mouth box beside landmark crop + stored mouth box, as is and tilted."""
    times = [1.0 + 0.2 * k for k in range(5)]  # a few frames: the tracker and the smoothing need neighbours
    frames = sample_frames(video, times)[0]  # (5, H, W, 3)
    rows = []
    with LandmarkFaceDetector() as det:
        upright = track_face(frames, det)
        for deg in (0.0, degrees):
            tilted = np.stack([_rotated(f, upright.boxes.mean(0), deg) for f in frames]) if deg else frames
            track = track_face(tilted, det)
            old = crop_track(tilted, track, size, 1.3)[2]
            lm = align(find_landmarks(tilted, track, det), size)
            new = crop_landmarks(tilted, lm, size)[2]
            label = f"tilted {deg:g} deg" if deg else "as is"
            rows.append(np.concatenate([_draw(old, default_mouth_box(size), det, f"box crop, {label}"),
                                        _draw(new, mouth_box(lm.lips, size), det, f"landmarks, {label}")], axis=1))  # fmt: skip
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    cv2.imwrite(out, cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
    print(f"wrote {out}")


def mouth_boxes(n_real: int, work: Path) -> None:
    """Print, per fake type, the lip_sync AUC with the old hand-made box and with the template's."""
    from sklearn.metrics import roc_auc_score

    from avff_model.crop_geometry import MOUTH_BOX
    from tasks.evaluate.handmade import sync_correlation
    from tasks.serve.predict import decoded_clips
    from tasks.synthetic.dfdc_sample import make_dfdc_sample

    data = make_dfdc_sample(work / "data", n_real=n_real, duration_s=4.0)
    kinds = {}
    for meta in glob.glob(str(data / "*" / "metadata.json")):
        for name, entry in json.load(open(meta)).items():
            kinds[os.path.join(os.path.dirname(meta), name)] = entry.get("manipulation") or entry["label"]
    pre = PreprocessConfig(face_size=64)
    scores: dict[str, list[tuple[float, float]]] = {}
    with face_detector(pre) as det:
        for path, kind in sorted(kinds.items()):
            for c in decoded_clips(path, pre, det)[0]:
                size = c.frames.shape[1]
                boxes = [[left * size, top * size, right * size, bottom * size]
                         for top, bottom, left, right in (OLD_HANDMADE_BOX, MOUTH_BOX)]  # fmt: skip
                lip_sync = [-sync_correlation(c.frames, c.mel, c.meta.fps, c.meta.mel_hop_s, b) for b in boxes]
                scores.setdefault(kind, []).append(tuple(lip_sync))
    real = np.nan_to_num(np.array(scores.pop("REAL")))  # (n, 2)
    print(
        f"REAL: {len(real)} clips, mean correlation old box {-real[:, 0].mean():+.2f}, template {-real[:, 1].mean():+.2f}"
    )
    for kind, rows in sorted(scores.items()):
        fake = np.nan_to_num(np.array(rows))
        y = [0] * len(real) + [1] * len(fake)
        auc = [roc_auc_score(y, np.concatenate([real[:, i], fake[:, i]])) for i in (0, 1)]
        print(f"{kind}: {len(fake)} clips, lip_sync AUC old box {auc[0]:.2f}, template {auc[1]:.2f}")


def template(videos: list[str], size: int = 224, margin: float = 1.3) -> None:
    """Print the median (p10, p90) of the eyes' row, the mouth's row and the eyes-to-mouth distance
    in box crops, as fractions of the crop side, and the lips' width and height."""
    stats: dict[str, list[float]] = {k: [] for k in ("eyes_y", "mouth_y", "eye_mouth", "lips_w", "lips_h")}
    with LandmarkFaceDetector() as det:
        for v in videos:
            try:
                frames = sample_frames(v, [0.5 * k for k in range(8)])[0]
                track = track_face(frames, det)
            except Exception as e:  # a clip too short or faceless: not part of the measurement
                print(f"{Path(v).name}: skipped ({e})")
                continue
            for frame, box in zip(frames, track.boxes):
                pts = det.landmarks(frame, box)
                if pts is None:
                    continue
                side = margin * max(box[2] - box[0], box[3] - box[1])
                centre = np.array([box[0] + box[2], box[1] + box[3]]) / 2
                q = (pts - (centre - side / 2)) / side  # (468, 2) fractions of the box crop
                eyes, _, dist = pose_of(q)
                lips = q[list(LIPS)]
                for k, x in zip(stats, (eyes[1], lips.mean(0)[1], dist, np.ptp(lips[:, 0]), np.ptp(lips[:, 1]))):
                    stats[k].append(float(x))
    for k, xs in stats.items():
        print(
            f"{k}: median {np.median(xs):.3f} (p10 {np.percentile(xs, 10):.3f}, p90 {np.percentile(xs, 90):.3f}), {len(xs)} frames"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(SHARED), help="folder of videos (default: the DFDC sample)")
    ap.add_argument("--figure", default=None, help="also write the crop comparison picture here (.png)")
    ap.add_argument("--figure-video", default=str(SHARED / "lynaeydofd.mp4"))
    ap.add_argument(
        "--mouth-boxes", type=int, default=0, help="also compare the mouth boxes on N generated REAL videos"
    )
    ap.add_argument("--work", default="/tmp/avff-mouth", help="where --mouth-boxes writes its generated videos")
    ap.add_argument("--template", action="store_true", help="also measure eyes and mouth in box crops of real faces")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # one core per video, as ingest runs
    videos = sorted(glob.glob(os.path.join(args.data, "*.mp4")))
    if not videos:
        raise SystemExit(f"{args.data}: no .mp4 files")
    cost(videos)
    if args.figure:
        figure(args.figure_video, args.figure)
    if args.template:
        realav = sorted(glob.glob(str(SHARED.parent / "realav" / "*" / "*.mp4")))[::12]
        template(videos + realav)
    if args.mouth_boxes:
        mouth_boxes(args.mouth_boxes, Path(args.work))


if __name__ == "__main__":
    main()
