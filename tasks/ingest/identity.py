"""Identities from faces (``identities=auto``): embed each video's face, cluster, name the clusters.

DFDC's metadata names no actor, so without an identity map one person filmed in several REAL
videos can sit in several splits. Here each video gets one face embedding, the mean of dlib's
128-d face descriptors (ResNet, 99.38 % on LFW) over a few frames spread through it; videos
whose embeddings lie within ``threshold`` (Euclidean) by average linkage are one identity.

**Threshold 0.4, not dlib's 0.6.** dlib recommends 0.6 for single photos; per-video means of
5 frames are less noisy, and on the real footage (docs/ingest.md, ``bench/identities.py``)
0.6 paired 252 pairs of videos of which 30 were one person (precision 0.12), mostly East Asian
faces, where dlib's training data is thin, while 0.4 gives precision 0.97 at recall 0.93. :func:`tasks.ingest.splits.identity_groups` then unions each cluster
like an identity map does, so an identity's videos share one split.

The weights ship inside the ``face-recognition-models`` package (CC0 model files; the 5-point
landmark model aligns the face the way the descriptor was trained); ``dlib-bin`` is a prebuilt
dlib wheel. Nothing is downloaded at run time. The face box comes from ingest's own mediapipe
detector (:class:`tasks.ingest.faces.FaceDetector`).

Only *root* videos are embedded: REAL videos and fakes whose ``original`` is absent. A fake
follows its original through the metadata link, and embedding it would be wrong: a face swap
shows the donor's face, and unioning on it would chain the donor's group to the original's
until most of DFDC is one group.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from storage.shard_schema import FAKE
from tasks.ingest.faces import FaceDetector, _main_face
from tasks.ingest.scan import VideoEntry
from tasks.ingest.video import VideoError, probe, read_frames

SAME_PERSON = 0.4  # Euclidean distance of per-video mean descriptors below which two videos are one person
CLUSTER_PREFIX = "face-"


def _model_file(name: str) -> str:
    """A model file shipped in face-recognition-models, located without importing the package
    (its ``__init__`` imports the deprecated pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("identities=auto needs the face-recognition-models package (a project dependency)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: model file missing from the face-recognition-models package")
    return path


class FaceEmbedder:
    """dlib's 5-point aligner and 128-d face descriptor; build once per worker (~0.4 s to load)."""

    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        self.landmarks = dlib.shape_predictor(_model_file("shape_predictor_5_face_landmarks.dat"))
        self.descriptor = dlib.face_recognition_model_v1(_model_file("dlib_face_recognition_resnet_model_v1.dat"))

    def embed(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB + a face box [x0, y0, x1, y1] in pixels -> (128,) float32 descriptor."""
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        rect = self._dlib.rectangle(max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1))
        image = np.ascontiguousarray(rgb)
        shape = self.landmarks(image, rect)
        return np.asarray(self.descriptor.compute_face_descriptor(image, shape), dtype=np.float32)  # (128,)


@dataclass(frozen=True)
class VideoFace:
    """One video's identity evidence: the mean descriptor of the frames where a face was found."""

    embedding: np.ndarray | None  # (128,) float32; None when no sampled frame showed a face
    faces: int  # frames that contributed
    frames: int  # frames sampled


def frame_times(duration: float, n: int, read_seconds: float) -> list[float]:
    """``n`` times spread evenly inside the first ``read_seconds`` of a video, away from its ends."""
    span = min(duration, read_seconds) if np.isfinite(duration) and duration > 0 else min(read_seconds, 1.0)
    return [round(span * (i + 0.5) / n, 6) for i in range(n)]


def embed_video(
    path: str, detector: FaceDetector, embedder: FaceEmbedder, *, frames: int = 5, read_seconds: float = 60.0
) -> VideoFace:
    """Decode ``frames`` frames of ``path``, take the main face of each and average the descriptors.

    Raises :class:`tasks.ingest.video.VideoError` for a video that cannot be decoded (its name and why).
    """
    info = probe(path)
    images, _ = read_frames(path, frame_times(info.duration, frames, read_seconds), rotation=info.rotation,
                            read_seconds=read_seconds)  # fmt: skip
    found = []
    for rgb in images:
        dets = detector.detect(rgb)
        if dets:
            found.append(embedder.embed(rgb, _main_face(dets)[0]))
    if not found:
        return VideoFace(None, 0, len(images))
    return VideoFace(np.mean(found, axis=0).astype(np.float32), len(found), len(images))


def cluster_faces(embeddings: Mapping[str, np.ndarray], threshold: float = SAME_PERSON) -> dict[str, str]:
    """video id -> cluster name: average-linkage agglomerative clustering cut at ``threshold`` (Euclidean).

    A cluster is named ``face-<its smallest video id>``, so names do not depend on the order
    of the input. Average linkage: a chain of near pairs (single linkage) would merge
    look-alikes through intermediate faces.
    """
    ids = sorted(embeddings)
    if not ids:
        return {}
    if len(ids) == 1:
        return {ids[0]: CLUSTER_PREFIX + ids[0]}
    from sklearn.cluster import AgglomerativeClustering

    x = np.stack([np.asarray(embeddings[v], dtype=np.float64) for v in ids])  # (N, 128)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"face embeddings must be finite vectors of one length, got shape {x.shape}")
    labels = AgglomerativeClustering(
        n_clusters=None, distance_threshold=threshold, linkage="average", metric="euclidean"
    ).fit_predict(x)
    first: dict[int, str] = {}
    for vid, label in zip(ids, labels):
        first.setdefault(int(label), vid)  # ids are sorted: the first seen is the smallest
    return {vid: CLUSTER_PREFIX + first[int(label)] for vid, label in zip(ids, labels)}


def roots(entries: Iterable[VideoEntry]) -> list[VideoEntry]:
    """The videos worth embedding: REAL ones and fakes whose original is not in the scan."""
    entries = list(entries)
    present = {e.video_id for e in entries}
    return [e for e in entries if e.label != FAKE or not e.original or e.original not in present]


@dataclass
class Embedded:
    """Per-video face embeddings of a batch of videos, and the videos that gave none."""

    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # video id -> (128,) float32
    no_face: list[str] = field(default_factory=list)  # no sampled frame showed a face
    failed: dict[str, str] = field(default_factory=dict)  # video id -> why it could not be decoded

    def add(self, other: Embedded) -> Embedded:
        self.embeddings.update(other.embeddings)
        self.no_face += other.no_face
        self.failed.update(other.failed)
        return self


def embed_videos(videos: Iterable[tuple[str, str]], *, frames: int = 5, read_seconds: float = 60.0) -> Embedded:
    """``(video id, path)`` pairs -> their :func:`embed_video` embeddings, with one detector and one
    embedder for the whole batch. A video that cannot be decoded is listed, not raised."""
    out = Embedded()
    embedder = FaceEmbedder()
    with FaceDetector() as detector:
        for vid, path in videos:
            try:
                face = embed_video(path, detector, embedder, frames=frames, read_seconds=read_seconds)
            except VideoError as err:
                out.failed[vid] = str(err)
                continue
            if face.embedding is None:
                out.no_face.append(vid)
            else:
                out.embeddings[vid] = face.embedding
    return out


def root_videos(data: str, entries: Iterable[VideoEntry]) -> list[tuple[str, str]]:
    """``(video id, path)`` of every video :func:`roots` picks, for :func:`embed_videos`."""
    return [(e.video_id, os.path.join(data, e.rel_path)) for e in roots(entries)]


def face_identities(
    data: str,
    entries: Iterable[VideoEntry],
    *,
    threshold: float = SAME_PERSON,
    frames: int = 5,
    read_seconds: float = 60.0,
) -> tuple[dict[str, str], Embedded]:
    """Embed every root video under ``data`` in this process and cluster them into identities:
    (video id -> cluster name, the embeddings and the videos without one).

    About 0.6 CPU-s per video (5 frames: decode, detection, descriptor); ingest fans the
    embedding out over Ray (flows/ingest.py) and clusters here with :func:`cluster_faces`.
    """
    embedded = embed_videos(root_videos(data, entries), frames=frames, read_seconds=read_seconds)
    return cluster_faces(embedded.embeddings, threshold), embedded
