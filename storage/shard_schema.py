"""The shard schema: the one contract between ingest (writer) and training (reader).

A shard is a POSIX tar (WebDataset layout) holding clips of ONE split. Each clip is a
sample whose ``__key__`` is ``{video_id}/{clip:03d}`` (the main face, face 0) or
``{video_id}/{clip:03d}_f{face}`` (the video's other faces, 1..9) and whose members are:

- ``f00.jpg`` .. ``f{T-1}.jpg``  face crops, RGB, ``size x size``, JPEG (see docs/ingest.md)
- ``mel.npy``                     log-mel, float16, shape ``(F, Tm)`` = (n_mels, mel frames)
- ``json``                        :class:`ClipMeta` as UTF-8 JSON

Readers decode with :func:`decode_sample` only: explicit decoders for these member
names, ``np.load(allow_pickle=False)``, and a refusal of any other member (a shard
carrying ``.pickle``/``.pyd`` is rejected, never executed).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import asdict, dataclass, field

import numpy as np

SCHEMA_VERSION = 1
REAL, FAKE = "REAL", "FAKE"  # the two labels, as the manifest and shard metadata spell them
LABELS = {REAL: 0, FAKE: 1}  # label -> target (FAKE is the positive class)
SPLITS = ("train", "val", "test")
FRAME_EXT = "jpg"
MEL_MEMBER = "mel.npy"
META_MEMBER = "json"
_FRAME_RE = re.compile(r"^f(\d{2})\.jpg$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+/\d{3}(?:_f[1-9])?$")


# fields added after shards were first written: absent from the json when None, so a box-crop
# ingest writes the bytes it wrote before them (and old shards read back with None)
_OMITTED_WHEN_NONE = ("crop", "mouth_box", "landmark_frac", "lip_shape", "lip_track")
LIP_TRACK_FPS = 25.0  # a stored lip track's rate (tasks/ingest/landmarks.lip_track)


class ShardFormatError(ValueError):
    """A shard sample that does not follow this schema (or carries unsafe members)."""


@dataclass(frozen=True)
class ClipMeta:
    """Per-clip metadata stored as the sample's ``json`` member."""

    video_id: str
    clip: int
    label: str  # "REAL" | "FAKE"
    split: str
    group: str  # the REAL original's id: a fake and its original share it
    original: str | None
    start_s: float  # clip start in the video, seconds
    fps: float  # sampling rate of the face frames (5.0 by default)
    num_frames: int
    face_box: list[float]  # mean smoothed box [x0, y0, x1, y1], pixels of the upright frame
    det_score: float  # mean detector score over the clip's frames (0 where tracked only)
    detected_frac: float  # fraction of the clip's frames with a real detection
    mel_hop_s: float
    part: str = ""
    manipulation: str | None = None  # generator fakes carry their type; DFDC has none
    frame_times: list[float] = field(default_factory=list)  # each frame's presentation time, seconds
    mel_start_s: float | None = None  # the mel window's start: the first frame's time, on the mel hop grid
    # landmark crops (docs/ingest.md, "Landmarks"); None in box crops and in shards written before them
    crop: str | None = None  # "landmarks": aligned by landmarks; "box_fallback": too few landmarks, detector box
    mouth_box: list[float] | None = None  # [x0, y0, x1, y1] in crop pixels (avff_model/crop_geometry.py)
    landmark_frac: float | None = None  # of the clip's frames with their own landmarks
    # (T, 2) per frame the mouth's opening and width over the eyes-to-mouth distance (tasks/ingest/landmarks.lip_shape)
    lip_shape: list[list[float]] | None = None
    # (K, 2) the same at LIP_TRACK_FPS over the clip's span, K = num_frames / fps * LIP_TRACK_FPS (ingest's lip_track)
    lip_track: list[list[float]] | None = None
    schema: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict)
    # which face of the video: 0 the main one, 1.. the others (each its own label); written only
    # when not 0, so a single-face video's samples are the bytes they were before faces existed
    face: int = 0

    @property
    def target(self) -> int:
        return LABELS[self.label]


def sample_key(video_id: str, clip: int, face: int = 0) -> str:
    key = f"{video_id}/{clip:03d}" + (f"_f{face}" if face else "")
    if not _KEY_RE.match(key):
        raise ShardFormatError(f"invalid sample key {key!r}: video ids must match [A-Za-z0-9_-]+")
    return key


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> (H, W, 3) uint8 RGB."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.format != "JPEG":
            raise ShardFormatError(f"frame is {im.format}, expected JPEG")
        return np.asarray(im.convert("RGB"))


def encode_npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def encode_sample(
    frames: np.ndarray, mel: np.ndarray, meta: ClipMeta, jpeg_quality: int = 90
) -> dict[str, bytes | str]:
    """frames (T, H, W, 3) uint8, mel (F, Tm) -> a WebDataset sample dict of bytes."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ShardFormatError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if frames.shape[0] != meta.num_frames:
        raise ShardFormatError(f"{frames.shape[0]} frames but meta says {meta.num_frames}")
    if len(frames) > 100:
        raise ShardFormatError("at most 100 frames per clip")
    sample: dict[str, bytes | str] = {"__key__": sample_key(meta.video_id, meta.clip, meta.face)}
    for i, frame in enumerate(frames):
        sample[f"f{i:02d}.{FRAME_EXT}"] = encode_jpeg(frame, jpeg_quality)
    sample[MEL_MEMBER] = encode_npy(np.ascontiguousarray(mel, dtype=np.float16))
    fields = {k: v for k, v in asdict(meta).items() if not (k in _OMITTED_WHEN_NONE and v is None)}
    if not meta.face:
        del fields["face"]  # see ClipMeta.face
    sample[META_MEMBER] = json.dumps(fields, sort_keys=True).encode("utf-8")
    return sample


def _names(meta: ClipMeta, key: str) -> bool:
    """``meta`` is the metadata of the sample ``key`` (its video, clip and face)."""
    try:
        return sample_key(meta.video_id, meta.clip, meta.face) == key
    except ShardFormatError:
        return False


@dataclass
class DecodedClip:
    key: str
    frames: np.ndarray  # (T, H, W, 3) uint8
    mel: np.ndarray  # (F, Tm) float16
    meta: ClipMeta


def decode_sample(sample: dict) -> DecodedClip:
    """A raw WebDataset sample (member name -> bytes) -> DecodedClip.

    Only this schema's member names are accepted; anything else raises
    ShardFormatError, so nothing in a shared shard is ever unpickled or imported.
    """
    key = sample.get("__key__")
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ShardFormatError(f"invalid sample key {key!r}")
    frames: dict[int, np.ndarray] = {}
    mel = meta = None
    for name, value in sample.items():
        if name.startswith("__"):  # __key__, __url__, __local_path__ added by webdataset
            continue
        if not isinstance(value, (bytes, bytearray)):
            raise ShardFormatError(f"{key}: member {name!r} is not raw bytes")
        m = _FRAME_RE.match(name)
        if m:
            frames[int(m.group(1))] = decode_jpeg(value)
        elif name == MEL_MEMBER:
            mel = decode_npy(value)
        elif name == META_MEMBER:
            raw = json.loads(value.decode("utf-8"))
            if not isinstance(raw, dict):
                raise ShardFormatError(f"{key}: json member is not an object")
            try:
                meta = ClipMeta(**raw)
            except TypeError as e:  # missing or unknown fields
                raise ShardFormatError(f"{key}: json member is not a ClipMeta ({e})") from e
        else:
            raise ShardFormatError(f"{key}: unexpected member {name!r} (refused: only frames, mel.npy, json)")
    if meta is None or mel is None or not frames:
        raise ShardFormatError(f"{key}: incomplete sample (needs frames, mel.npy and json)")
    if not isinstance(meta.clip, int) or not isinstance(meta.face, int) or not _names(meta, key):
        raise ShardFormatError(
            f"{key}: json names video {meta.video_id!r} clip {meta.clip!r} face {meta.face!r}, not this sample"
        )
    if meta.label not in LABELS or meta.split not in SPLITS:
        raise ShardFormatError(f"{key}: label {meta.label!r} / split {meta.split!r} not in {sorted(LABELS)} / {SPLITS}")
    # compare the count first: num_frames comes from the shard and may be absurd (10**12)
    if meta.num_frames != len(frames) or sorted(frames) != list(range(len(frames))):
        raise ShardFormatError(f"{key}: frames {sorted(frames)} do not match num_frames={meta.num_frames}")
    if mel.ndim != 2 or mel.dtype != np.float16:
        raise ShardFormatError(f"{key}: mel must be 2-D float16, got {mel.shape} {mel.dtype}")
    stacked = np.stack([frames[i] for i in range(meta.num_frames)])  # (T, H, W, 3)
    _check_mouth_box(key, meta.mouth_box, stacked.shape[1:3])
    _check_lip_shape(key, meta.lip_shape, meta.num_frames)
    _check_lip_shape(key, meta.lip_track, lip_track_steps(meta.num_frames, meta.fps), "lip_track")
    return DecodedClip(key=key, frames=stacked, mel=mel, meta=meta)


def lip_track_steps(num_frames: int, fps: float) -> int:
    """A clip's lip track length: its span (num_frames / fps seconds) at LIP_TRACK_FPS."""
    return int(round(num_frames / fps * LIP_TRACK_FPS))


def _check_lip_shape(key: str, shape, frames: int, name: str = "lip_shape") -> None:
    """A stored lip shape (or track) is None or ``frames`` rows of two finite numbers >= 0."""
    if shape is None:
        return
    ok = isinstance(shape, list) and len(shape) == frames and all(
        isinstance(row, list) and len(row) == 2 and all(isinstance(v, (int, float)) and np.isfinite(v) and v >= 0
                                                         for v in row) for row in shape)  # fmt: skip
    if not ok:
        raise ShardFormatError(f"{key}: {name} is not {frames} rows of [opening, width] (finite, >= 0)")


def _check_mouth_box(key: str, box, hw: tuple[int, int]) -> None:
    """A stored mouth box is None or [x0, y0, x1, y1] with 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H."""
    if box is None:
        return
    ok = isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) and np.isfinite(v) for v in box)
    h, w = hw
    if not ok or not (0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h):
        raise ShardFormatError(f"{key}: mouth_box {box!r} is not [x0, y0, x1, y1] inside the {w}x{h} crop")
