"""A tiny, learnable ingest output for tests and smoke runs of training (no videos needed).

FAKE clips carry a bright square in every frame and REAL clips do not, so a model that
learns anything separates them; the layout (shards, shards.parquet, manifest.parquet) is
exactly what ingest writes, through the same writers (:mod:`storage.shard_io`, :mod:`storage.tables`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from storage import fs
from storage.shard_schema import FAKE, REAL, ClipMeta, encode_sample
from storage.shard_io import ShardWriter
from storage.tables import ManifestRow, ShardRow, write_table


PART = "synthetic"


def _frames(rng: np.random.Generator, fake: bool, num_frames: int, size: int) -> np.ndarray:
    frames = rng.integers(40, 120, size=(num_frames, size, size, 3), dtype=np.uint8)  # (T, H, W, 3)
    if fake:
        side = max(size // 3, 2)
        y0, x0 = rng.integers(0, size - side + 1, size=2)
        frames[:, y0 : y0 + side, x0 : x0 + side, :] = 250
    return frames


def write_synthetic_shards(
    root: str,
    *,
    videos: Mapping[str, int] | None = None,
    shards: Mapping[str, int] | None = None,
    clips_per_video: int = 2,
    num_frames: int = 4,
    img_size: int = 32,
    n_mels: int = 32,
    mel_frames: int = 32,
    fake_fraction: float = 0.5,
    seed: int = 0,
    manipulations: tuple[str, ...] = (),
) -> fs.IngestLayout:
    """Write ``videos[split]`` videos of ``clips_per_video`` clips into ``shards[split]`` shards.

    Videos alternate labels so every shard holds both; ids are ``{split}{i:03d}``. The k-th FAKE
    video of a split is of manipulation type ``manipulations[k % len(manipulations)]`` in the
    manifest (None when ``manipulations`` is empty); the pixels do not depend on it.
    """
    videos = dict(videos or {"train": 16, "val": 8, "test": 8})
    shards = dict(shards or {"train": 4, "val": 2, "test": 2})
    layout = fs.IngestLayout(str(root))
    rng = np.random.default_rng(seed)
    index_rows: list[ShardRow] = []
    manifest_rows: list[ManifestRow] = []
    for split, n_videos in videos.items():
        n_shards = max(1, min(shards.get(split, 1), n_videos))
        # FAKE where floor((i+1)f) steps up: labels spread evenly (alternating at f=0.5)
        labels = [FAKE if int((i + 1) * fake_fraction) > int(i * fake_fraction) else REAL for i in range(n_videos)]
        chunks = np.array_split(np.arange(n_videos), n_shards)  # contiguous: each holds both labels
        kind_of: dict[int, str | None] = dict.fromkeys(range(n_videos))
        if manipulations:
            fakes = [i for i in range(n_videos) if labels[i] == FAKE]
            kind_of.update({i: manipulations[k % len(manipulations)] for k, i in enumerate(fakes)})
        for s in range(n_shards):
            uri = layout.shard(split, PART, s)
            mine = chunks[s].tolist()
            with ShardWriter(uri) as sink:
                for i in mine:
                    vid = f"{split}{i:03d}"
                    for c in range(clips_per_video):
                        meta = ClipMeta(
                            video_id=vid, clip=c, label=labels[i], split=split, group=vid, original=None,
                            start_s=c * num_frames / 5.0, fps=5.0, num_frames=num_frames,
                            face_box=[0.0, 0.0, float(img_size), float(img_size)], det_score=1.0,
                            detected_frac=1.0, mel_hop_s=0.01, part=PART,
                        )  # fmt: skip
                        frames = _frames(rng, labels[i] == FAKE, num_frames, img_size)
                        mel = rng.normal(-4.0, 2.0, size=(n_mels, mel_frames)).astype(np.float16)
                        sink.write(encode_sample(frames, mel, meta))
            index_rows.append(ShardRow(path=uri, split=split, part=PART, samples=sink.samples, videos=len(mine),
                                       bytes=sink.bytes, sha256=sink.sha256))  # fmt: skip
            manifest_rows += [_manifest_row(f"{split}{i:03d}", labels[i], split, i % 5, uri, clips_per_video,
                                            num_frames, img_size, kind_of[i]) for i in mine]  # fmt: skip
    write_table(layout.shard_index, ShardRow, index_rows)
    write_table(layout.manifest, ManifestRow, manifest_rows)
    return layout


def _manifest_row(
    vid: str,
    label: str,
    split: str,
    fold: int,
    shard: str,
    clips: int,
    num_frames: int,
    img_size: int,
    manipulation: str | None = None,
) -> ManifestRow:
    """Every manifest column, filled as ingest fills it for an ingested video; the probe facts describe the
    clips themselves (there is no video file: ``bytes`` is 0 and ``rel_path`` names none on disk)."""
    return ManifestRow(
        video_id=vid, part=PART, rel_path=f"{PART}/{vid}.mp4", label=label, original=None, manipulation=manipulation,
        bytes=0, duration=clips * num_frames / 5.0, fps=5.0, width=img_size, height=img_size, rotation=0,
        has_audio=True, audio_rate=16000, split=split, fold=fold, group=vid, status="ingested", clips=clips,
        shard=shard,
    )  # fmt: skip
