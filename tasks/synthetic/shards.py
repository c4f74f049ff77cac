"""A tiny, learnable ingest output for tests and smoke runs of training (no videos needed).

FAKE clips carry a bright square in every frame and REAL clips do not, so a model that
learns anything separates them; the layout (shards, shards.parquet, manifest.parquet) is
exactly what ingest writes, through the same writers (:mod:`storage.shard_io`, :mod:`storage.tables`).
"""

from __future__ import annotations

import dataclasses
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


def write_lipsync_shards(
    root: str,
    *,
    identities: Mapping[str, int] | None = None,
    img_size: int = 32,
    n_mels: int = 32,
    seed: int = 0,
) -> fs.IngestLayout:
    """Talking faces, not squares: per split, ``identities[split]`` people of the synthetic generator
    (:func:`tasks.synthetic.dfdc_sample.lipsync_clips`: its faces, voices and manipulations), each a REAL
    video and its ``lipsync_offset`` fake (the same frames, the voice shifted), one clip of 16 frames at
    5 fps (3.2 s) and its Kaldi log-mel (10 ms hop, 320 columns) per video, in one shard per split.

    The face crop is a square round the generator's known face centre (ingest's margin over a detector box),
    resized to ``img_size``: no video encode, no detector. Ids are ``{split}{i:03d}`` (REAL even, FAKE odd);
    a fake shares its original's group, as in DFDC. The hand-made lip-sync statistic separates the two
    (``tests/tasks/train/test_run.py``); the pixels alone cannot.
    """
    import torch

    from avff_model.inputs import resize_frames
    from tasks.ingest.audio import default_mel, log_mel
    from tasks.synthetic.dfdc_sample import lipsync_clips

    identities = dict(identities or {"train": 6, "val": 4, "test": 4})
    fps, frames_per_clip, mel_frames, spec = 5.0, 16, 320, dataclasses.replace(default_mel(), n_mels=n_mels)
    clips = lipsync_clips(sum(identities.values()), seed=seed, duration_s=frames_per_clip / fps, fps=25.0,
                          keep_every=5, audio_rate=spec.sample_rate)  # fmt: skip
    by_person = [c for c in clips if c.manipulation in (None, "lipsync_offset")]  # REAL, FAKE per identity
    layout = fs.IngestLayout(str(root))
    index_rows: list[ShardRow] = []
    manifest_rows: list[ManifestRow] = []
    first = 0
    for split, n in identities.items():
        uri = layout.shard(split, PART, 0)
        with ShardWriter(uri) as sink:
            for i, c in enumerate(by_person[2 * first : 2 * (first + n)]):
                vid, label = f"{split}{i:03d}", REAL if c.manipulation is None else FAKE
                frames = resize_frames(torch.from_numpy(_face_crop(c.frames, c.centre, c.face_side)), img_size).numpy()
                mel = log_mel(c.audio.astype(np.float32), spec)[:, :mel_frames]  # (F, <= Tm)
                mel = np.pad(mel, ((0, 0), (0, mel_frames - mel.shape[1])), constant_values=mel.min())  # (F, Tm)
                group = f"{split}{i - i % 2:03d}"  # the REAL original's id
                meta = ClipMeta(
                    video_id=vid, clip=0, label=label, split=split, group=group,
                    original=None if label == REAL else group, start_s=0.0, fps=fps, num_frames=frames_per_clip,
                    face_box=[0.0, 0.0, float(img_size), float(img_size)], det_score=1.0, detected_frac=1.0,
                    mel_hop_s=spec.hop_s, part=PART, manipulation=c.manipulation,
                )  # fmt: skip
                sink.write(encode_sample(frames, mel.astype(np.float16), meta))
                manifest_rows.append(_manifest_row(vid, label, split, (first + i // 2) % 5, uri, 1, frames_per_clip,
                                                   img_size, c.manipulation, group))  # fmt: skip
        index_rows.append(ShardRow(path=uri, split=split, part=PART, samples=sink.samples, videos=2 * n,
                                   bytes=sink.bytes, sha256=sink.sha256))  # fmt: skip
        first += n
    write_table(layout.shard_index, ShardRow, index_rows)
    write_table(layout.manifest, ManifestRow, manifest_rows)
    return layout


def _face_crop(frames: np.ndarray, centre: np.ndarray, face_side: float) -> np.ndarray:
    """frames (T, H, W, 3) uint8, face centres (T, 2) as (x, y) -> (T, S, S, 3): a square of ingest's margin
    (1.3) over a detector box ~15 % wider than the face, zero-padded where it leaves the frame."""
    side = int(round(1.3 * 1.15 * face_side))
    padded = np.pad(frames, ((0, 0), (side, side), (side, side), (0, 0)))  # (T, H + 2S, W + 2S, 3)
    out = []
    for t, (cx, cy) in enumerate(centre):
        y0, x0 = int(round(cy - side / 2)) + side, int(round(cx - side / 2)) + side
        out.append(padded[t, y0 : y0 + side, x0 : x0 + side])
    return np.stack(out)  # (T, S, S, 3)


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
    group: str | None = None,
) -> ManifestRow:
    """Every manifest column, filled as ingest fills it for an ingested video; the probe facts describe the
    clips themselves (there is no video file: ``bytes`` is 0 and ``rel_path`` names none on disk)."""
    return ManifestRow(
        video_id=vid, part=PART, rel_path=f"{PART}/{vid}.mp4", label=label, original=None, manipulation=manipulation,
        bytes=0, duration=clips * num_frames / 5.0, fps=5.0, width=img_size, height=img_size, rotation=0,
        has_audio=True, audio_rate=16000, split=split, fold=fold, group=group or vid, status="ingested", clips=clips,
        shard=shard,
    )  # fmt: skip
