"""A tiny, learnable ingest output for tests and smoke runs of training (no videos needed).

FAKE clips carry a bright square in every frame and REAL clips do not, so a model that
learns anything separates them; the layout (shards, shards.parquet, manifest.parquet) is
exactly what ingest writes, through :mod:`storage.schema` and :mod:`storage.fs`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import webdataset as wds

from storage import fs
from storage.schema import ClipMeta, encode_sample


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
) -> fs.IngestLayout:
    """Write ``videos[split]`` videos of ``clips_per_video`` clips into ``shards[split]`` shards.

    Videos alternate labels so every shard holds both; ids are ``{split}{i:03d}``.
    """
    videos = dict(videos or {"train": 16, "val": 8, "test": 8})
    shards = dict(shards or {"train": 4, "val": 2, "test": 2})
    layout = fs.IngestLayout(str(root))
    rng = np.random.default_rng(seed)
    index_rows: list[dict] = []
    manifest_rows: list[dict] = []
    for split, n_videos in videos.items():
        n_shards = max(1, min(shards.get(split, 1), n_videos))
        # FAKE where floor((i+1)f) steps up: labels spread evenly (alternating at f=0.5)
        labels = ["FAKE" if int((i + 1) * fake_fraction) > int(i * fake_fraction) else "REAL" for i in range(n_videos)]
        chunks = np.array_split(np.arange(n_videos), n_shards)  # contiguous: each holds both labels
        for s in range(n_shards):
            uri = layout.shard(split, "synthetic", s)
            n_samples = 0
            mine = chunks[s].tolist()
            with fs.atomic_open(uri) as f:
                with wds.TarWriter(f) as sink:
                    for i in mine:
                        vid = f"{split}{i:03d}"
                        for c in range(clips_per_video):
                            meta = ClipMeta(
                                video_id=vid, clip=c, label=labels[i], split=split, group=vid, original=None,
                                start_s=c * num_frames / 5.0, fps=5.0, num_frames=num_frames,
                                face_box=[0.0, 0.0, float(img_size), float(img_size)], det_score=1.0,
                                detected_frac=1.0, mel_hop_s=0.01, part="synthetic",
                            )  # fmt: skip
                            frames = _frames(rng, labels[i] == "FAKE", num_frames, img_size)
                            mel = rng.normal(-4.0, 2.0, size=(n_mels, mel_frames)).astype(np.float16)
                            sink.write(encode_sample(frames, mel, meta))
                            n_samples += 1
            data = fs.read_bytes(uri)
            index_rows.append({
                "path": uri, "split": split, "samples": n_samples, "videos": len(mine),
                "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            })  # fmt: skip
            for i in mine:
                vid = f"{split}{i:03d}"
                manifest_rows.append({
                    "video_id": vid, "label": labels[i], "split": split, "group": vid,
                    "fold": i % 5, "part": "synthetic", "status": "ingested", "clips": clips_per_video,
                })  # fmt: skip
    fs.write_parquet(pa.Table.from_pylist(index_rows), layout.shard_index)
    fs.write_parquet(pa.Table.from_pylist(manifest_rows), layout.manifest)
    return layout
