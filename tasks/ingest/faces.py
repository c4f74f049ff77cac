"""Find, track, smooth and crop the main face with mediapipe, offline.

mediapipe 0.10.21 ships both BlazeFace models inside its wheel, so nothing is downloaded:
- full-range (192x192 input) finds small faces in a whole (downscaled) frame;
- short-range (128x128 input) refines on a crop around the last box, where the face is
  large. Frames where neither finds the face keep the tracked box.

Dark frames (DFDC has many dim rooms) are the main cause of missed faces: when a graph finds
nothing on an image whose mean brightness is below ``DARK``, it looks again at a gamma-brightened
copy (mean ~0.45). Only detection sees the brightened copy; crops keep the decoded pixels.
Measured recall on the real clips: docs/ingest.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from tasks.ingest.stages import stage

Box = np.ndarray  # (4,) float [x0, y0, x1, y1] in pixels


@dataclass(frozen=True)
class FaceTrack:
    boxes: np.ndarray  # (N, 4) smoothed square boxes [x0, y0, x1, y1], pixels
    scores: np.ndarray  # (N,) detector score, 0 where the box was tracked, not detected
    detected: np.ndarray  # (N,) bool


class FaceDetector:
    """Holds the two mediapipe graphs; build once per worker (they take ~100 ms to load)."""

    def __init__(self, min_score: float = 0.5, detect_side: int = 640, refine_side: int = 256):
        import mediapipe as mp

        fd = mp.solutions.face_detection
        self.full = fd.FaceDetection(model_selection=1, min_detection_confidence=min_score)
        self.short = fd.FaceDetection(model_selection=0, min_detection_confidence=min_score)
        self.detect_side = detect_side
        self.refine_side = refine_side

    def close(self) -> None:
        self.full.close()
        self.short.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _run(graph, rgb: np.ndarray) -> list[tuple[Box, float]]:
        found = FaceDetector._process(graph, rgb)
        if not found and rgb.mean() < DARK * 255:
            found = FaceDetector._process(graph, brighten(rgb))
        return found

    @staticmethod
    def _process(graph, rgb: np.ndarray) -> list[tuple[Box, float]]:
        h, w = rgb.shape[:2]
        result = graph.process(rgb)
        out = []
        for d in result.detections or []:
            bb = d.location_data.relative_bounding_box
            box = np.array([bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w, (bb.ymin + bb.height) * h])
            out.append((box, float(d.score[0])))
        return out

    def detect(self, rgb: np.ndarray) -> list[tuple[Box, float]]:
        """Full-range detection on the whole frame, downscaled so its long side is detect_side.

        When that finds nothing in a frame much larger than detect_side, the frame is searched
        again in 2 x 2 overlapping tiles, each seen at 1.7x the scale (small faces in 1080p); in a
        smaller frame, again inside a black border (a tight face crop whose face fills the frame).
        """
        with stage("detect"):
            return self._detect(rgb)

    def _detect(self, rgb: np.ndarray) -> list[tuple[Box, float]]:
        found = self._detect_scaled(rgb)
        h, w = rgb.shape[:2]
        if found:
            return found
        if max(h, w) < 1.5 * self.detect_side:
            return self._detect_framed(rgb)
        th, tw = int(h * 0.6), int(w * 0.6)  # 2 x 2 tiles overlapping by 20 % of the frame
        for y0 in (0, h - th):
            for x0 in (0, w - tw):
                offset = np.array([x0, y0, x0, y0], dtype=float)
                found += [(box + offset, s) for box, s in self._detect_scaled(rgb[y0 : y0 + th, x0 : x0 + tw])]
        return found

    def _detect_framed(self, rgb: np.ndarray, border: float = 0.25, min_side: float = 0.3) -> list[tuple[Box, float]]:
        """A face that fills a small frame and leaves it (tight crops: VoxCeleb, LRS2) is missed by
        the full-range model; framed in a black border of ``border`` times the long side, it is found.

        Only faces at least ``min_side`` of the frame's short side count: the search is for a face
        that fills the frame, and a small false hit here would start the track on it (LRS2 clip
        lrs2_demo_00009 lost its face that way).
        """
        pad = int(round(border * max(rgb.shape[:2])))
        framed = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        least = min_side * min(rgb.shape[:2])
        return [(box - pad, s) for box, s in self._detect_scaled(framed) if _side(box) >= least]

    def _detect_scaled(self, rgb: np.ndarray) -> list[tuple[Box, float]]:
        h, w = rgb.shape[:2]
        scale = min(1.0, self.detect_side / max(h, w))
        small = cv2.resize(rgb, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        return [(box / scale, s) for box, s in self._run(self.full, np.ascontiguousarray(small))]

    def refine(self, rgb: np.ndarray, box: Box) -> list[tuple[Box, float]]:
        """Short-range detection on a square crop twice the size of box, resized to refine_side."""
        (cx, cy), side = _center(box), 2.0 * _side(box)
        x0, y0 = cx - side / 2, cy - side / 2
        with stage("refine"):
            crop = crop_square(rgb, np.array([x0, y0, x0 + side, y0 + side]), self.refine_side)
            scale = side / self.refine_side
            return [(b * scale + np.array([x0, y0, x0, y0]), s) for b, s in self._run(self.short, crop)]


DARK = 0.35  # mean brightness (0..1) below which a missed face is looked for again, brightened


def brighten(rgb: np.ndarray, target: float = 0.45) -> np.ndarray:
    """(H, W, 3) uint8 -> the same image with a gamma that brings its mean brightness to ~target."""
    mean = max(float(rgb.mean()) / 255.0, 1e-3)
    gamma = np.log(target) / np.log(mean) if mean < 1.0 else 1.0
    lut = np.clip(((np.arange(256) / 255.0) ** gamma) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(rgb, lut)


def _center(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _side(box: Box) -> float:
    return float(max(box[2] - box[0], box[3] - box[1]))


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _main_face(dets: list[tuple[Box, float]]) -> tuple[Box, float]:
    """The largest confident face: area weighted by score."""
    return max(dets, key=lambda d: (d[0][2] - d[0][0]) * (d[0][3] - d[0][1]) * d[1])


def _follow(dets: list[tuple[Box, float]], last: Box, min_iou: float = 0.2) -> tuple[Box, float] | None:
    best = max(dets, key=lambda d: iou(d[0], last), default=None)
    return best if best is not None and iou(best[0], last) >= min_iou else None


def track_face(frames: Sequence[np.ndarray], detector: FaceDetector, smooth_window: int = 5) -> FaceTrack:
    """N (H, W, 3) uint8 frames (an array or a list) -> the main face's smoothed box per frame.

    Raises ValueError when no face is found in any frame.
    """
    n = len(frames)
    raw = np.zeros((n, 4))
    scores = np.zeros(n)
    detected = np.zeros(n, dtype=bool)
    last: Box | None = None
    for i, frame in enumerate(frames):
        hit = None
        if last is not None:
            hit = _follow(detector.refine(frame, last), last) or _follow(detector.detect(frame), last)
        else:
            dets = detector.detect(frame)
            hit = _main_face(dets) if dets else None
        if hit is not None:
            last = hit[0]
            raw[i], scores[i], detected[i] = hit[0], hit[1], True
        elif last is not None:
            raw[i] = last
    if not detected.any():
        raise ValueError("no face detected in any sampled frame")
    first = int(np.argmax(detected))
    raw[:first] = raw[first]  # frames before the first detection take its box
    return FaceTrack(boxes=smooth_boxes(raw, smooth_window), scores=scores, detected=detected)


def smooth_boxes(boxes: np.ndarray, window: int = 5) -> np.ndarray:
    """(N, 4) boxes -> (N, 4) square boxes with a centred moving average of centre and side."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    series = np.stack([cx, cy, side], axis=1)  # (N, 3)
    if window > 1 and len(boxes) > 1:
        pad = window // 2
        padded = np.pad(series, ((pad, pad), (0, 0)), mode="edge")  # (N + 2*pad, 3)
        kernel = np.ones(window) / window
        series = np.stack([np.convolve(padded[:, j], kernel, mode="valid") for j in range(3)], axis=1)
    half = series[:, 2] / 2
    return np.stack([series[:, 0] - half, series[:, 1] - half, series[:, 0] + half, series[:, 1] + half], axis=1)


def crop_square(rgb: np.ndarray, box: Box, size: int, margin: float = 1.0) -> np.ndarray:
    """Crop box (scaled by margin about its centre) from rgb, zero-padding outside, -> (size, size, 3)."""
    (cx, cy), side = _center(box), max(_side(box) * margin, 2.0)
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = int(round(side))
    h, w = rgb.shape[:2]
    crop = np.zeros((s, s, 3), dtype=rgb.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + s, w), min(y0 + s, h)
    if sx1 > sx0 and sy1 > sy0:
        crop[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


def crop_track(frames: Sequence[np.ndarray], track: FaceTrack, size: int, margin: float) -> np.ndarray:
    """N (H, W, 3) frames + track -> (N, size, size, 3) uint8 face crops."""
    return np.stack([crop_square(f, b, size, margin) for f, b in zip(frames, track.boxes)])


# -- every face: the main track above, then the others present in most frames --------------------


def track_faces(
    frames: Sequence[np.ndarray],
    detector: FaceDetector,
    smooth_window: int = 5,
    max_faces: int = 4,
    min_track_frac: float = 0.5,
    probes: int = 6,
) -> list[FaceTrack]:
    """N (H, W, 3) frames -> up to ``max_faces`` face tracks; track 0 is :func:`track_face`'s.

    The other faces are seeded from full-frame detections on ``probes`` frames spread over the
    video (a face present in most frames is seen on some of them) that overlap no track already
    kept, largest first; each is followed both ways from its seed like the main face, and kept
    when it is detected in at least ``min_track_frac`` of the frames. Extra tracks are ordered
    by size (largest first). Raises ValueError when no face is found in any frame.
    """
    looks = SeenFrames(detector)  # the probes look at frame 0 again, as the main track's first look did
    main = track_face(frames, looks, smooth_window)
    if max_faces <= 1 or len(frames) == 0:
        return [main]
    with stage("faces"):
        return [main, *_other_faces(frames, looks, main, smooth_window, max_faces, min_track_frac, probes)]


class SeenFrames:
    """A detector that remembers its full-frame looks (:meth:`FaceDetector.detect`) by frame, for the
    frames of one video: a frame looked at twice (the main track's first look and a probe for other
    faces, both on frame 0) gets the same detections without the ~12 ms second look. Keyed by the
    array's identity (read_frames gives a frame picked twice as one array), so it holds the frames it
    saw: make one per video. Second looks (:meth:`FaceDetector.refine`) depend on a box and pass through.
    """

    def __init__(self, detector: FaceDetector):
        self.detector = detector
        self._seen: dict[int, tuple[np.ndarray, list[tuple[Box, float]]]] = {}

    def detect(self, rgb: np.ndarray) -> list[tuple[Box, float]]:
        hit = self._seen.get(id(rgb))
        if hit is None or hit[0] is not rgb:
            hit = self._seen[id(rgb)] = (rgb, self.detector.detect(rgb))
        return list(hit[1])

    def refine(self, rgb: np.ndarray, box: Box) -> list[tuple[Box, float]]:
        return self.detector.refine(rgb, box)


def _other_faces(
    frames: Sequence[np.ndarray], detector: FaceDetector, main: FaceTrack, smooth_window: int, max_faces: int,
    min_track_frac: float, probes: int,
) -> list[FaceTrack]:  # fmt: skip
    """:func:`track_faces` beyond the main face: the other tracks, largest first."""
    tracks: list[FaceTrack] = []
    for seed, box in _seeds(frames, detector, [main], probes):
        if len(tracks) + 1 >= max_faces:
            break
        kept = [main, *tracks]
        if any(iou(box, t.boxes[seed]) > _SAME_FACE_IOU for t in kept):
            continue  # a face already tracked (the seed was taken before its track existed)
        track = _follow_from(frames, detector, seed, box, [t.boxes for t in kept], smooth_window)
        if track.detected.mean() >= min_track_frac:
            tracks.append(track)
    tracks.sort(key=lambda t: -float(np.mean((t.boxes[:, 2] - t.boxes[:, 0]) ** 2)))
    return tracks


_SAME_FACE_IOU = 0.3  # a detection overlapping a kept track this much is that track's face


def _seeds(
    frames: Sequence[np.ndarray], detector: FaceDetector, kept: list[FaceTrack], probes: int
) -> list[tuple[int, Box]]:
    """(frame index, box) of the detections on ``probes`` evenly spread frames that no kept track
    covers, largest (area x score) first."""
    n = len(frames)
    at = sorted(set(np.linspace(0, n - 1, min(probes, n)).round().astype(int).tolist()))
    found = []
    for i in at:
        for box, score in detector.detect(frames[i]):
            if all(iou(box, t.boxes[i]) <= _SAME_FACE_IOU for t in kept):
                found.append(((box[2] - box[0]) * (box[3] - box[1]) * score, i, box))
    found.sort(key=lambda f: -f[0])
    return [(i, box) for _, i, box in found]


def _follow_from(
    frames: Sequence[np.ndarray],
    detector: FaceDetector,
    seed: int,
    box: Box,
    avoid: list[np.ndarray],
    smooth_window: int,
) -> FaceTrack:
    """The track of the face at ``box`` in frame ``seed``, followed forward then backward from it
    as :func:`track_face` follows the main face. ``avoid``: (N, 4) boxes of the kept tracks; a
    detection overlapping one of them is that face's, never this one's."""
    n = len(frames)
    raw = np.zeros((n, 4))
    scores = np.zeros(n)
    detected = np.zeros(n, dtype=bool)
    for order in (range(seed, n), range(seed - 1, -1, -1)):
        last = box
        for i in order:
            hit = _follow_avoiding(detector.refine(frames[i], last), last, [a[i] for a in avoid])
            if hit is None:
                hit = _follow_avoiding(detector.detect(frames[i]), last, [a[i] for a in avoid])
            if hit is not None:
                last = hit[0]
                raw[i], scores[i], detected[i] = hit[0], hit[1], True
            else:
                raw[i] = last
    return FaceTrack(boxes=smooth_boxes(raw, smooth_window), scores=scores, detected=detected)


def _follow_avoiding(dets: list[tuple[Box, float]], last: Box, avoid: list[Box]) -> tuple[Box, float] | None:
    free = [d for d in dets if all(iou(d[0], a) <= _SAME_FACE_IOU for a in avoid)]
    return _follow(free, last)
