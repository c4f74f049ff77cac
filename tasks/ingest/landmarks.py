"""Face landmarks per frame, aligned crops (eyes level, fixed scale) and the mouth box, offline.

The landmark model is mediapipe's face mesh (468 points), shipped inside the mediapipe wheel
(``mediapipe/modules/face_landmark/face_landmark.tflite``) like the BlazeFace detectors: nothing
is downloaded. It runs on a square crop around the tracked face box (twice its size), so the mesh's
own face detector sees a large face.

From the points, each frame gets a similarity transform (rotation, scale, shift) that puts the
eyes' midpoint and the mouth's centre where :mod:`avff_model.crop_geometry` says they are in an
aligned crop. The transform's parameters are smoothed over time like the face boxes; a frame
without landmarks takes the nearest frame's. The lip points, carried through the same transforms,
give the clip's mouth box in crop pixels. A video whose frames mostly lack landmarks is cropped by
the detector box instead (``tasks/ingest/preprocess.py``) and says so in its clips and in the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from avff_model.crop_geometry import EYE_MOUTH, EYE_Y, MOUTH_PAD, MOUTH_Y
from tasks.ingest.config import MESH_ROIS  # where the mesh's region comes from: LandmarkFaceDetector.landmarks
from tasks.ingest.faces import DARK, FaceDetector, FaceTrack, brighten, crop_square, smooth_boxes

# face mesh indices (the subject's right eye is on the image's left)
RIGHT_EYE = (33, 133)  # outer, inner corner
LEFT_EYE = (362, 263)  # inner, outer corner
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)  # outer contour
INNER_LIP_MIDDLE = (13, 14)  # the upper and lower lip's inner edge, on the centre line
MOUTH_CORNERS = (61, 291)


MESH_TURN = np.radians(10.0)  # a face found turned further than this from the region's angle: looked at again
MESH_REGION = 0.75  # the mesh's region in its crop: 1.5x the face box (mediapipe's detection-to-region scale), crop 2x
# mediapipe's landmark subgraph alone: an image and a region in, the 468 points out (no face detector)
_REGION_GRAPH = """
input_stream: "image"
input_stream: "roi"
output_stream: "landmarks"
node {
  calculator: "FaceLandmarkCpu"
  input_stream: "IMAGE:image"
  input_stream: "ROI:roi"
  output_stream: "LANDMARKS:landmarks"
}
"""


class LandmarkFaceDetector(FaceDetector):
    """The face detector plus mediapipe's face mesh; build once per worker, like the detector.

    ``mesh_roi``: "detect" runs the whole face mesh on every frame (its own short-range detector finds
    the face in the crop, then the landmark model runs on the region it gives); "box" gives the
    landmark model the tracked box's region directly and runs the whole mesh only where that finds
    no face (1.5 of 6.6 ms per frame saved, docs/performance.md "Landmarks").
    """

    def __init__(self, min_score: float = 0.5, detect_side: int = 640, refine_side: int = 256, mesh_side: int = 256,
                 mesh_roi: str = "box"):  # fmt: skip
        import mediapipe as mp

        if mesh_roi not in MESH_ROIS:
            raise ValueError(f"mesh_roi must be one of {', '.join(MESH_ROIS)}, got {mesh_roi!r}")
        super().__init__(min_score=min_score, detect_side=detect_side, refine_side=refine_side)
        self.mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=False, min_detection_confidence=min_score
        )
        self.region = _region_mesh(min_score) if mesh_roi == "box" else None
        self.mesh_side = mesh_side

    def close(self) -> None:
        super().close()
        self.mesh.close()
        if self.region is not None:
            self.region.close()

    def landmarks(self, rgb: np.ndarray, box: np.ndarray, angle: float = 0.0) -> np.ndarray | None:
        """(H, W, 3) uint8 frame, face box [x0, y0, x1, y1] -> (468, 2) points in frame pixels, or None.

        ``angle``: the eye line's expected angle (radians, :func:`pose_of`), e.g. the previous frame's;
        with ``mesh_roi="box"`` the region is turned by it (a face found turned further is looked at again).
        """
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = 2.0 * max(box[2] - box[0], box[3] - box[1], 2.0)
        x0, y0 = cx - side / 2, cy - side / 2
        crop = crop_square(rgb, np.array([x0, y0, x0 + side, y0 + side]), self.mesh_side)
        pts = self._in_region(crop, angle) if self.region is not None else None
        if pts is None:
            pts = self._whole_mesh(crop)
        return None if pts is None else pts * side + np.array([x0, y0])

    def _in_region(self, crop: np.ndarray, angle: float) -> np.ndarray | None:
        """(S, S, 3) crop of 2x the face box -> (468, 2) points in [0, 1] of the crop from the landmark
        model on the box's region turned by ``angle``, or None where it finds no face there. The model
        expects a level face, as the whole mesh's detector gives it: where the eye line it finds is more
        than MESH_TURN off ``angle``, it looks again with the region turned by that line."""
        pts = self._region_points(crop, angle)
        if pts is None or abs(pose_of(pts)[1] - angle) <= MESH_TURN:
            return pts
        again = self._region_points(crop, pose_of(pts)[1])
        return pts if again is None else again

    def _region_points(self, crop: np.ndarray, angle: float) -> np.ndarray | None:
        from mediapipe.framework.formats.rect_pb2 import NormalizedRect

        roi = NormalizedRect(x_center=0.5, y_center=0.5, width=MESH_REGION, height=MESH_REGION, rotation=angle)
        found = self.region.process(input_data={"image": crop, "roi": roi}).landmarks
        return _points(found.landmark) if found is not None and len(found.landmark) else None

    def _whole_mesh(self, crop: np.ndarray) -> np.ndarray | None:
        """The whole face mesh (its own detector, then the landmarks) -> (468, 2) in [0, 1] of the crop, or None."""
        result = self.mesh.process(crop)
        if not result.multi_face_landmarks and crop.mean() < DARK * 255:  # dim rooms, as the detector does
            result = self.mesh.process(brighten(crop))
        return _points(result.multi_face_landmarks[0].landmark) if result.multi_face_landmarks else None


def _points(landmarks) -> np.ndarray:
    return np.array([(p.x, p.y) for p in landmarks])  # (468, 2) in [0, 1]


def _region_mesh(min_score: float):
    """mediapipe's landmark model as a graph of its own: ``process(input_data={"image", "roi"})``;
    a face whose presence scores below ``min_score`` gives no landmarks, as in the whole mesh."""
    from google.protobuf import text_format
    from mediapipe.framework import calculator_pb2
    from mediapipe.python.solution_base import SolutionBase

    graph = text_format.Parse(_REGION_GRAPH, calculator_pb2.CalculatorGraphConfig())
    return SolutionBase(graph_config=graph, outputs=["landmarks"],
                        calculator_params={"facelandmarkcpu__ThresholdingCalculator.threshold": min_score})  # fmt: skip


@dataclass(frozen=True)
class Pose:
    """Per frame: where the face is, as the alignment needs it (frame pixels, radians)."""

    eyes: np.ndarray  # (N, 2) the eyes' midpoint
    angle: np.ndarray  # (N,) the eye line's angle (positive: the subject's left eye lower in the image)
    eye_mouth: np.ndarray  # (N,) distance from the eyes' midpoint to the mouth's centre


def pose_of(points: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(468, 2) mesh points -> (eyes' midpoint (2,), eye-line angle, eyes-to-mouth distance)."""
    right, left = points[list(RIGHT_EYE)].mean(0), points[list(LEFT_EYE)].mean(0)  # (2,), (2,)
    eyes = (right + left) / 2
    dx, dy = left - right
    mouth = points[list(LIPS)].mean(0)
    return eyes, float(np.arctan2(dy, dx)), float(np.linalg.norm(mouth - eyes))


def alignment_matrix(eyes: Sequence[float], angle: float, eye_mouth: float, size: int) -> np.ndarray:
    """(2, 3) affine frame pixels -> aligned-crop pixels: rotate by -angle about the eyes' midpoint,
    scale eyes-to-mouth to ``EYE_MOUTH * size``, and put the eyes' midpoint at (size / 2, EYE_Y * size)."""
    s = EYE_MOUTH * size / max(eye_mouth, 1e-6)
    c, n = np.cos(-angle) * s, np.sin(-angle) * s
    a = np.array([[c, -n], [n, c]])  # (2, 2) scaled rotation
    t = np.array([size / 2, EYE_Y * size]) - a @ np.asarray(eyes, dtype=float)
    return np.concatenate([a, t[:, None]], axis=1)  # (2, 3)


def transform_points(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(2, 3) affine, (K, 2) points -> (K, 2)."""
    return points @ m[:, :2].T + m[:, 2]


def crop_aligned(rgb: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 frame, (2, 3) alignment -> (size, size, 3) aligned crop, zero outside the frame.

    Large faces are shrunk with area averaging first (as :func:`crop_square` does), then warped.
    """
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:  # shrink by an integer-ish factor first so the warp does not alias
        f = scale * 2
        small = cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        m = m.copy()
        m[:, :2] /= f
        rgb = small
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


@dataclass(frozen=True)
class LandmarkTrack:
    matrices: np.ndarray  # (N, 2, 3) smoothed alignment per frame, frame -> crop pixels
    found: np.ndarray  # (N,) bool: the frame's own landmarks were found
    lips: np.ndarray  # (N, L, 2) lip points in crop pixels (a frame without landmarks: its neighbour's)
    shape: np.ndarray  # (N, 2) the mouth's opening and width per frame (:func:`lip_shape`), likewise


def find_landmarks(
    frames: Sequence[np.ndarray], track: FaceTrack, detector: LandmarkFaceDetector
) -> list[np.ndarray | None]:
    """N (H, W, 3) frames and their face track -> per frame (468, 2) mesh points in frame pixels, or None."""
    points, angle = [], 0.0
    for f, b in zip(frames, track.boxes):  # each frame's region turned by the last eye line found
        points.append(detector.landmarks(f, b, angle))
        angle = angle if points[-1] is None else pose_of(points[-1])[1]
    return points


def align(points: Sequence[np.ndarray | None], size: int, smooth_window: int = 5) -> LandmarkTrack:
    """Per-frame mesh points (None where not found; at least one found) -> the aligned crops'
    smoothed transforms; a frame without points takes the nearest frame's."""
    found = np.array([p is not None for p in points])
    if not found.any():
        raise ValueError("no landmarks in any frame")
    have = np.flatnonzero(found)
    nearest = have[np.abs(np.arange(len(points))[:, None] - have[None, :]).argmin(1)]  # (N,)
    filled = np.stack([points[i] for i in nearest])  # (N, 468, 2)
    poses = [pose_of(p) for p in filled]
    eyes = np.stack([e for e, _, _ in poses])  # (N, 2)
    angle = np.unwrap(np.array([a for _, a, _ in poses]))
    dist = np.array([d for _, _, d in poses])
    eyes, angle, dist = _smooth(eyes, angle, dist, smooth_window)
    mats = np.stack([alignment_matrix(e, a, d, size) for e, a, d in zip(eyes, angle, dist)])  # (N, 2, 3)
    lips = np.stack([transform_points(m, p[list(LIPS)]) for m, p in zip(mats, filled)])  # (N, L, 2)
    shape = np.stack([lip_shape(p, d) for p, d in zip(filled, dist)])  # (N, 2)
    return LandmarkTrack(matrices=mats, found=found, lips=lips, shape=shape)


def lip_shape(points: np.ndarray, eye_mouth: float) -> np.ndarray:
    """(468, 2) mesh points of one frame, the face's eyes-to-mouth distance -> (2,): the gap between
    the lips' inner edges and the distance between the mouth's corners, both over ``eye_mouth``.

    The lip-sync signal of a real face: in 3 clips of 16 frames at 5 fps, the opening minus the width
    correlates with loudness where a shifted or swapped sound does not, at AUC 0.76 / 0.81 on 39 real
    talking clips of 5 people and 0.70 / 0.67 on 47 of 10 others, where the mouth region's darkness
    gives 0.64 / 0.67 and 0.49 / 0.48 (``bench/lip_signal.py``; :func:`tasks.evaluate.handmade.lip_opening`).
    Scale-free, so the same number whatever the crop size or the face's distance to the camera.
    """
    opening = np.linalg.norm(points[INNER_LIP_MIDDLE[0]] - points[INNER_LIP_MIDDLE[1]])
    width = np.linalg.norm(points[MOUTH_CORNERS[0]] - points[MOUTH_CORNERS[1]])
    return np.array([opening, width]) / max(eye_mouth, 1e-6)


def lip_track(times: np.ndarray, shapes: Sequence[np.ndarray | None], grid: np.ndarray,
              min_found: float = 0.5) -> np.ndarray | None:  # fmt: skip
    """Per-frame lip shapes (:func:`lip_shape`, None where the mesh found no face) at ``times`` (N,) ->
    (K, 2) on ``grid`` (K,) seconds, linear between frames and held at the ends; None when fewer than
    ``min_found`` of the frames have one.

    Why a clip carries its lips at the video's own rate (``PreprocessConfig.lip_track``): on real
    talking faces, where in lag the lips' opening over a clip's 3.2 s span at 25 fps correlates best
    with the sound's 500-2000 Hz loudness (:func:`tasks.evaluate.handmade.sync_peak`) separates own
    from shifted / swapped sound at AUC 0.87 / 0.80 on 10 people, where the lag-0 correlation at the
    clip's 5 fps gives 0.70 / 0.67 (``bench/lip_signal.py``, docs/results.md "Real footage").
    """
    have = np.array([s is not None for s in shapes], bool)
    if not len(shapes) or have.mean() < min_found:
        return None
    t, v = np.asarray(times, np.float64)[have], np.stack([s for s in shapes if s is not None])  # (M,), (M, 2)
    return np.stack([np.interp(grid, t, v[:, j]) for j in range(v.shape[1])], axis=1)  # (K, 2)


def _smooth(eyes: np.ndarray, angle: np.ndarray, dist: np.ndarray, window: int):
    """The same centred moving average as the face boxes (:func:`smooth_boxes`), on (x, y, angle, distance)."""
    as_boxes = np.stack([eyes[:, 0] - dist / 2, eyes[:, 1] - dist / 2, eyes[:, 0] + dist / 2, eyes[:, 1] + dist / 2], 1)
    smoothed = smooth_boxes(as_boxes, window)  # (N, 4): centre and side averaged
    if window > 1 and len(angle) > 1:
        pad = window // 2
        angle = np.convolve(np.pad(angle, pad, mode="edge"), np.ones(window) / window, mode="valid")
    centre = (smoothed[:, :2] + smoothed[:, 2:]) / 2
    return centre, angle, smoothed[:, 2] - smoothed[:, 0]


def crop_landmarks(frames: Sequence[np.ndarray], lm: LandmarkTrack, size: int) -> np.ndarray:
    """N (H, W, 3) frames + landmark track -> (N, size, size, 3) uint8 aligned crops."""
    return np.stack([crop_aligned(f, m, size) for f, m in zip(frames, lm.matrices)])


def mouth_box(lips: np.ndarray, size: int, pad: float = MOUTH_PAD) -> list[float]:
    """(T, L, 2) lip points of a clip's frames, crop pixels -> [x0, y0, x1, y1]: the box holding
    every frame's lips, padded by ``pad`` of its size on each side, inside the crop."""
    lo, hi = lips.reshape(-1, 2).min(0), lips.reshape(-1, 2).max(0)  # (2,), (2,)
    margin = pad * (hi - lo)
    x0, y0 = np.clip(lo - margin, 0, size)
    x1, y1 = np.clip(hi + margin, 0, size)
    return [round(float(v), 2) for v in (x0, y0, x1, y1)]


def template_mouth_centre(size: int) -> tuple[float, float]:
    """Where an aligned crop puts the mouth's centre, (x, y) pixels."""
    return size / 2, MOUTH_Y * size
