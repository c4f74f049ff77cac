"""Shards -> batches: the WebDataset input pipeline of training and evaluation.

One pipeline, a list of small stages (webdataset style)::

    shard URLs of one or more splits (shards.parquet), permuted by (seed, epoch)
    -> split by node, then by DataLoader worker (each shard read by exactly one worker)
    -> open through fsspec, tar members -> raw samples (storage.shard_io's reader stages)
    -> [keep: video ids / clips, from the JSON member only]
    -> storage.shard_schema.decode_sample -> [REAL only] -> [frames resized to the model's size]
    -> seeded shuffle buffer (of uint8 clips) -> tensors [+ per-clip augmentation]
    -> exact per-worker epoch length -> batch

The shuffle buffer holds clips as decoded (uint8 frames, float16 mel): at 224 px and the default
256 clips that is ~0.64 GB per worker, where float32 tensors took ~2.5 GB (``bench/loader.py``).
Conversion to float is a pure function of the clip and its own generator, so doing it after the
buffer instead of before changes no batch.

Everything random is seeded from ``(seed, epoch, worker)`` (augmentation from ``(seed, epoch,
clip)``), so an epoch's batches are the same on every run: that is what makes resumed
training equal an uninterrupted one. Augmentation (:mod:`tasks.train.augment`) runs only in
shuffled (training) loaders; asking an evaluation loader for it raises.

Tensors (letters as in ``avff_model``): ``video`` (B, 3, T, H, W) float32 ImageNet-normalised,
``audio`` (B, 1, F, Tm) float32 normalised with :data:`AUDIO_MEAN` / :data:`AUDIO_STD`
(the model's input contract, :mod:`avff_model.inputs`),
``target`` (B,) float32 (FAKE = 1), ``video_id`` list[str], ``clip`` (B,) int64, ``face`` (B,) int64,
``mouth`` (B, 4) float32: the clip's mouth box as (top, bottom, left, right) fractions of its crop
(its stored box, or the template's: :mod:`avff_model.crop_geometry`), ``lips`` (B, T, 2) float32: its
mouth's opening and width per frame from landmarks, zeros without (:func:`avff_model.inputs.clip_lips`);
an evaluation loader asked for ``statistics`` (name -> function of a DecodedClip,
:data:`tasks.evaluate.handmade.STATISTICS`) adds ``handmade``: name -> (B,) float64, each measured on
the clip as stored, before the model's resize.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from avff_model.crop_geometry import mirrored
from avff_model.inputs import AUDIO_MEAN, AUDIO_STD, clip_to_tensors, resize_frames
from storage import fs, shard_io
from storage.shard_schema import META_MEMBER, REAL, SPLITS, DecodedClip, decode_sample
from storage.tables import ShardRow, read_table
from tasks.train.augment import ClipAugment, apply_video_params, augment_mel, clip_generator, sample_video_params


@dataclass(frozen=True)
class InputShape:
    """The clip shape a shard set holds; the model config must agree with it."""

    img_size: int
    num_frames: int
    n_mels: int
    mel_frames: int


def shard_urls(layout: fs.IngestLayout, split: str | Sequence[str]) -> list[str]:
    """The URIs of one split's shards (or of several splits', split by split), in index order."""
    splits = (split,) if isinstance(split, str) else tuple(split)
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise ValueError(f"unknown split {bad or split!r}; expected one of {SPLITS}")
    index = read_table(layout.shard_index, ShardRow)
    return [row.path for name in splits for row in index if row.split == name]


def split_counts(layout: fs.IngestLayout, split: str) -> int:
    """Number of samples (clips) in one split, from the shard index."""
    return sum(row.samples for row in read_table(layout.shard_index, ShardRow) if row.split == split)


def shrink_clip(clip: DecodedClip, img_size: int | None) -> DecodedClip:
    """The clip with its frames resized to ``img_size`` in uint8 (:func:`resize_frames`).

    The same clip if ``img_size`` is None or the frames already have that size.
    """
    if img_size is None or clip.frames.shape[1:3] == (img_size, img_size):
        return clip
    meta = clip.meta
    if meta.mouth_box is not None:  # crop pixels: scaled with the frames (the crop is square)
        meta = replace(meta, mouth_box=[v * img_size / clip.frames.shape[1] for v in meta.mouth_box])
    return replace(clip, frames=resize_frames(torch.from_numpy(clip.frames), img_size).numpy(), meta=meta)


def augmented_tensors(
    clip: DecodedClip, augment: ClipAugment | None, generator: torch.Generator | None,
    audio_mean: float = AUDIO_MEAN, audio_std: float = AUDIO_STD, img_size: int | None = None,
) -> dict:  # fmt: skip
    """:func:`avff_model.inputs.clip_to_tensors` with the clip's augmentation, drawn from ``generator``.

    ``augment`` transforms the clip before normalisation: frames in [0, 1], the raw log-mel.
    """
    if augment is None or not augment.enabled:
        return clip_to_tensors(clip, audio_mean, audio_std, img_size=img_size)
    if generator is None:
        raise ValueError("augmentation needs a seeded generator")

    def transform(video: torch.Tensor, mel: torch.Tensor, mouth: torch.Tensor):
        video, mouth = _augment_video(video, mouth, augment, generator)  # video's draws first, then the mel's
        return video, augment_mel(mel, augment.audio, generator), mouth

    return clip_to_tensors(clip, audio_mean, audio_std, img_size=img_size, transform=transform)


def _augment_video(video: torch.Tensor, mouth: torch.Tensor, augment: ClipAugment, g: torch.Generator):
    """:func:`augment_video` (the same draws), with the clip's mouth box (4,) mirrored when the clip is flipped."""
    if not augment.video.enabled:
        return video, mouth
    params = sample_video_params(augment.video, g)
    if params.flip:
        mouth = torch.tensor(mirrored(tuple(mouth.tolist())), dtype=torch.float32)
    return apply_video_params(video, params, g), mouth


Statistics = Mapping[str, Callable[[DecodedClip], float]]  # name -> a number of one clip (tasks/evaluate/handmade.py)


def collate(samples: list[dict]) -> dict:
    """List of samples -> batch dict (tensors stacked, ids kept as a list)."""
    if "handmade" in samples[0]:  # measured by an evaluation loader: name -> (B,)
        handmade = {n: torch.tensor([s["handmade"][n] for s in samples], dtype=torch.float64)
                    for n in samples[0]["handmade"]}  # fmt: skip
        return {**collate([{k: v for k, v in s.items() if k != "handmade"} for s in samples]), "handmade": handmade}
    return {
        "video": torch.stack([s["video"] for s in samples]),  # (B, 3, T, H, W)
        "audio": torch.stack([s["audio"] for s in samples]),  # (B, 1, F, Tm)
        "target": torch.tensor([s["target"] for s in samples], dtype=torch.float32),  # (B,)
        "video_id": [s["video_id"] for s in samples],
        "clip": torch.tensor([s["clip"] for s in samples], dtype=torch.int64),  # (B,)
        "face": torch.tensor([s.get("face", 0) for s in samples], dtype=torch.int64),  # (B,)
        "mouth": torch.stack([s["mouth"] for s in samples]),  # (B, 4) mouth box, fractions (crop_geometry)
        "lips": torch.stack([s["lips"] for s in samples]),  # (B, T, 2) mouth opening and width (inputs.clip_lips)
    }


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class _EpochShards(IterableDataset):
    """Stage 0: the shard URLs of an epoch, permuted by (seed, epoch, pass).

    Each iteration is one pass; a repeating pipeline iterates again and gets the next
    pass's permutation. Every worker computes the same order, then takes its slice.
    """

    def __init__(self, urls: list[str], *, shuffle: bool, seed: int, epoch: int):
        self.urls, self.shuffle, self.seed, self.epoch = urls, shuffle, seed, epoch
        self.passes = 0

    def __iter__(self) -> Iterator[dict]:
        order = list(self.urls)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch, self.passes])
            order = [order[i] for i in rng.permutation(len(order))]
        self.passes += 1
        return iter([{"url": u} for u in order])


class _SplitByNode:
    """Stage 1: this rank's shards, ``urls[rank::world]`` (webdataset's split_by_node, made explicit).

    The rank is read from torch.distributed when the pipeline is built, in the training
    process, not from ``RANK``/``WORLD_SIZE`` in the environment as webdataset does: after the
    process group closes, rank 0 alone reads every shard (the final test evaluation).
    """

    def __init__(self) -> None:
        on = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank, self.world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if on else (0, 1)

    def __call__(self, src: Iterable[dict]) -> Iterator[dict]:
        for i, item in enumerate(src):
            if i % self.world == self.rank:
                yield item


def _decode(src: Iterable[dict]) -> Iterator[DecodedClip]:
    return (decode_sample(sample) for sample in src)


def _real_only(src: Iterable[DecodedClip]) -> Iterator[DecodedClip]:
    return (c for c in src if c.meta.label == REAL)


class _Keep:
    """Keep raw samples whose video id (and (video id, clip)) is listed, before any JPEG decode.

    Reads only the schema's JSON member; a sample without one passes on to decode_sample,
    which rejects it with the schema's error.
    """

    def __init__(self, videos: frozenset[str] | None, clips: frozenset[tuple[str, int]] | None,
                 drop: frozenset[str] = frozenset()):  # fmt: skip
        self.videos, self.clips, self.drop = videos, clips, drop

    def __call__(self, src: Iterable[dict]) -> Iterator[dict]:
        for sample in src:
            raw = sample.get(META_MEMBER)
            if isinstance(raw, (bytes, bytearray)):
                meta = json.loads(raw)
                if self.videos is not None and meta.get("video_id") not in self.videos:
                    continue
                if meta.get("video_id") in self.drop:
                    continue
                if self.clips is not None and (meta.get("video_id"), meta.get("clip")) not in self.clips:
                    continue
            yield sample


class _Shrink:
    """Frames resized to the model's size (:func:`shrink_clip`), in uint8, before the shuffle buffer holds them."""

    def __init__(self, img_size: int | None):
        self.img_size = img_size

    def __call__(self, src: Iterable[DecodedClip]) -> Iterator[DecodedClip]:
        return (shrink_clip(c, self.img_size) for c in src)


class _ToTensors:
    """DecodedClip -> tensors; with ``augment``, each clip draws from its own (seed, epoch, pass, key) generator.

    With ``statistics`` (evaluation loaders), each is measured on the clip as it arrives (as stored), which is
    then resized to ``img_size`` here: the statistics are the same numbers whatever size the model reads.
    """

    def __init__(self, audio_mean: float, audio_std: float, augment: ClipAugment | None = None, seed: int = 0,
                 epoch: int = 0, statistics: Statistics | None = None, img_size: int | None = None):  # fmt: skip
        self.audio_mean, self.audio_std, self.augment = audio_mean, audio_std, augment
        self.seed, self.epoch, self.passes = seed, epoch, 0
        self.statistics, self.img_size = statistics, img_size

    def __call__(self, src: Iterable[DecodedClip]) -> Iterator[dict]:
        passes = self.passes
        self.passes += 1
        for c in src:
            measured = {n: float(fn(c)) for n, fn in self.statistics.items()} if self.statistics else None
            c = shrink_clip(c, self.img_size)
            g = clip_generator(self.seed, self.epoch, f"{c.key}#{passes}") if self.augment else None
            out = augmented_tensors(c, self.augment, g, self.audio_mean, self.audio_std)
            yield out if measured is None else {**out, "handmade": measured}


class _SeededShuffle:
    """A shuffle buffer whose RNG is seeded by (seed, epoch, worker id); it only moves items, never looks inside."""

    def __init__(self, bufsize: int, seed: int, epoch: int):
        self.bufsize, self.seed, self.epoch = bufsize, seed, epoch
        self.passes = 0

    def __call__(self, src: Iterable) -> Iterator:
        worker, _ = _worker()
        rng = random.Random(f"{self.seed}:{self.epoch}:{worker}:{self.passes}")
        self.passes += 1
        buf: list = []
        for sample in src:
            buf.append(sample)
            if len(buf) >= self.bufsize:
                # swap a random element to the end and yield it: O(1) per sample
                k = rng.randrange(len(buf))
                buf[k], buf[-1] = buf[-1], buf[k]
                yield buf.pop()
        rng.shuffle(buf)
        yield from buf


class _TakePerWorker:
    """Cut an (endless) stream so that all workers together yield exactly ``total`` samples.

    ``DataPipeline.with_epoch(n)`` counts per worker and cannot split a total that the
    worker count does not divide; worker k takes ``total // W`` plus one if k < total % W.
    Under multi-process (DDP) training the total is per process, like the shard split.
    """

    def __init__(self, total: int):
        self.total = total

    def __call__(self, src: Iterable[dict]) -> Iterator[dict]:
        worker, n_workers = _worker()
        n = self.total // n_workers + (1 if worker < self.total % n_workers else 0)
        for i, sample in enumerate(src):
            if i >= n:
                return
            yield sample


def make_dataset(
    urls: list[str],
    *,
    batch_size: int,
    shuffle: bool,
    shuffle_buffer: int = 0,
    seed: int = 0,
    epoch: int = 0,
    samples_per_epoch: int | None = None,
    real_only: bool = False,
    audio_mean: float = AUDIO_MEAN,
    audio_std: float = AUDIO_STD,
    augment: ClipAugment | None = None,
    keep_videos: frozenset[str] | None = None,
    keep_clips: frozenset[tuple[str, int]] | None = None,
    drop_videos: frozenset[str] = frozenset(),
    split_by_rank: bool = True,
    img_size: int | None = None,
    statistics: Statistics | None = None,
) -> shard_io.Pipeline:
    """The pipeline over ``urls`` (an IterableDataset yielding batch dicts).

    ``samples_per_epoch=None``: one pass, every sample exactly once across all workers.
    Otherwise passes repeat (each shuffled anew, the shuffle buffer flushed between passes,
    so no sample repeats before the data runs out) and the epoch is exactly that many samples.
    ``keep_videos`` / ``keep_clips`` (video id, clip) drop every other sample (CV folds,
    curriculum); ``drop_videos`` drops these videos' samples (a manipulation type held out); ``augment`` needs ``shuffle`` (training loaders only). ``split_by_rank=False``:
    every rank of a process group reads every shard. ``img_size``: frames of another size are
    resized to it (the model's image size; None keeps the shards' size). ``statistics``: each batch carries
    ``handmade``, every statistic of every clip, measured before that resize (evaluation loaders only).
    """
    if not urls:
        raise ValueError("no shards to read")
    if augment is not None and augment.enabled and not shuffle:
        raise ValueError("augmentation is for training loaders only (shuffle=True); evaluation never augments")
    if statistics and shuffle:
        raise ValueError("statistics are measured by evaluation loaders only (shuffle=False)")
    augment = augment if augment is not None and augment.enabled else None
    stages: list = [
        _EpochShards(urls, shuffle=shuffle, seed=seed, epoch=epoch),
        *([_SplitByNode()] if split_by_rank else []),
        shard_io.split_by_worker,
        shard_io.open_shards,
        shard_io.tar_samples,
    ]
    if keep_videos is not None or keep_clips is not None or drop_videos:
        stages.append(_Keep(keep_videos, keep_clips, drop_videos))
    stages.append(_decode)
    if real_only:
        stages.append(_real_only)
    if not statistics:  # else _ToTensors measures the clip first, then resizes it
        stages.append(_Shrink(img_size))
    if shuffle and shuffle_buffer > 1:
        stages.append(_SeededShuffle(shuffle_buffer, seed, epoch))  # holds uint8 clips: 4x fewer bytes than float32
    stages.append(_ToTensors(audio_mean, audio_std, augment, seed, epoch, statistics or None,
                             img_size if statistics else None))  # fmt: skip
    one_pass = shard_io.Pipeline(*stages)
    if samples_per_epoch is None:
        return shard_io.Pipeline(one_pass, shard_io.batched(batch_size, collate))
    return shard_io.Pipeline(
        one_pass.repeat(),  # endless passes, cut below
        _TakePerWorker(samples_per_epoch),
        shard_io.batched(batch_size, collate),
    )


def make_loader(
    layout: fs.IngestLayout,
    split: str | Sequence[str],
    *,
    batch_size: int,
    num_workers: int = 0,
    shuffle_buffer: int = 256,
    seed: int = 0,
    epoch: int = 0,
    samples_per_epoch: int | None = None,
    real_only: bool = False,
    shuffle: bool | None = None,
    pin_memory: bool | None = None,
    augment: ClipAugment | None = None,
    keep_videos: frozenset[str] | None = None,
    keep_clips: frozenset[tuple[str, int]] | None = None,
    drop_videos: frozenset[str] = frozenset(),
    extra_layouts: Sequence[fs.IngestLayout] = (),
    img_size: int | None = None,
    statistics: Statistics | None = None,
) -> DataLoader:
    """A DataLoader over one split's shards (or several splits') for one epoch (build a new one each epoch).

    ``shuffle`` defaults to ``split == "train"``. Workers are capped at the shard count so
    none starts without a shard. Batches are dicts (see the module docstring). ``augment``,
    ``keep_videos``, ``keep_clips``, ``img_size`` and ``statistics``: see :func:`make_dataset`.
    """
    urls = shard_urls(layout, split) + [url for extra in extra_layouts for url in shard_urls(extra, SPLITS)]
    if not urls:
        raise ValueError(f"no {split!r} shards in {layout.shard_index}")
    shuffle = split == "train" if shuffle is None else shuffle
    dataset = make_dataset(
        urls,
        batch_size=batch_size,
        shuffle=shuffle,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        epoch=epoch,
        samples_per_epoch=samples_per_epoch,
        real_only=real_only,
        augment=augment,
        keep_videos=keep_videos,
        keep_clips=keep_clips,
        img_size=img_size,
        drop_videos=drop_videos,
        statistics=statistics,
    )
    workers = min(num_workers, len(urls))
    return DataLoader(
        dataset,
        batch_size=None,  # batched inside the pipeline
        num_workers=workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        # worker torch RNGs (unused by the pipeline today) derive from this: deterministic too
        generator=torch.Generator().manual_seed(seed * 100_003 + epoch),
        persistent_workers=False,
        prefetch_factor=2 if workers > 0 else None,
    )


def infer_input_shape(layout: fs.IngestLayout, split: str = "train") -> InputShape:
    """Read the first clip of a split to learn its frame size, frame count and mel shape."""
    batch = next(iter(make_dataset(shard_urls(layout, split)[:1], batch_size=1, shuffle=False, split_by_rank=False)))
    _, _, t, h, w = batch["video"].shape  # (1, 3, T, H, W)
    _, _, f, tm = batch["audio"].shape  # (1, 1, F, Tm)
    if h != w:
        raise ValueError(f"face crops must be square, got {h}x{w}")
    return InputShape(img_size=h, num_frames=t, n_mels=f, mel_frames=tm)
