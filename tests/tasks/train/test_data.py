"""The training input pipeline on tiny synthetic shards (CPU, a few seconds)."""

from __future__ import annotations

import io
import tarfile

import pytest
import torch

from avff_model.inputs import IMAGENET_MEAN, IMAGENET_STD
from storage import fs
from storage.shard_schema import ShardFormatError
from tasks.synthetic.shards import write_synthetic_shards
from tasks.train.data import InputShape, infer_input_shape, make_loader

N_TRAIN = 32  # 16 videos x 2 clips in 4 shards


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return write_synthetic_shards(str(tmp_path_factory.mktemp("data")))


def _keys(loader) -> list[str]:
    return [f"{v}/{c}" for b in loader for v, c in zip(b["video_id"], b["clip"].tolist())]


def test_batches_have_contract_shapes_dtypes_and_labels(layout):
    batches = list(make_loader(layout, "train", batch_size=5, seed=0, epoch=0))
    b = batches[0]
    assert b["video"].shape == (5, 3, 4, 32, 32) and b["video"].dtype == torch.float32
    assert b["audio"].shape == (5, 1, 32, 32) and b["audio"].dtype == torch.float32
    assert b["target"].dtype == torch.float32 and b["clip"].dtype == torch.int64
    assert [len(x["video_id"]) for x in batches] == [5] * 6 + [2]  # partial last batch kept
    # labels: the synthetic FAKE clips carry a saturated square (pixel 250), REAL never exceed 120
    top = (250 / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    for x in batches:
        has_square = (x["video"][:, 0] > top - 1e-3).flatten(1).any(1)  # (B,)
        assert torch.equal(has_square.float(), x["target"])
    assert infer_input_shape(layout) == InputShape(img_size=32, num_frames=4, n_mels=32, mel_frames=32)


def test_the_loader_shrinks_frames_to_the_models_size_and_keeps_the_labels_visible(layout):
    b = next(iter(make_loader(layout, "train", batch_size=8, shuffle=False, img_size=16)))
    assert b["video"].shape == (8, 3, 4, 16, 16) and b["audio"].shape == (8, 1, 32, 32)
    top = (250 / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    has_square = (b["video"][:, 0] > top - 1e-3).flatten(1).any(1)  # the FAKE square's inside survives
    assert torch.equal(has_square.float(), b["target"])
    same = next(iter(make_loader(layout, "train", batch_size=8, shuffle=False, img_size=32)))
    plain = next(iter(make_loader(layout, "train", batch_size=8, shuffle=False)))
    assert torch.equal(same["video"], plain["video"])  # the shards' own size: untouched


def test_extra_layouts_add_every_split_of_another_ingest_to_the_loader(layout, tmp_path):
    extra = write_synthetic_shards(str(tmp_path / "extra"), videos={"train": 2, "val": 1, "test": 1}, seed=1)
    keys = _keys(make_loader(layout, "train", batch_size=8, shuffle=False, extra_layouts=[extra]))
    assert len(keys) == N_TRAIN + 4 * 2  # this ingest's train clips, then all 8 of the extra one's
    assert sorted(keys[N_TRAIN:]) == sorted(_keys(make_loader(extra, ["train", "val", "test"], batch_size=8)))


def test_drop_videos_removes_exactly_those_videos(layout):
    every = _keys(make_loader(layout, "train", batch_size=8))
    dropped = frozenset(sorted({k.split("/")[0] for k in every})[:3])
    kept = _keys(make_loader(layout, "train", batch_size=8, drop_videos=dropped))
    assert sorted(kept) == sorted(k for k in every if k.split("/")[0] not in dropped) and len(kept) == N_TRAIN - 6


def test_reads_only_the_requested_split(layout):
    train = _keys(make_loader(layout, "train", batch_size=8))
    val = _keys(make_loader(layout, "val", batch_size=8))
    assert len(train) == N_TRAIN and all(k.startswith("train") for k in train)
    assert len(val) == 16 and all(k.startswith("val") for k in val)
    with pytest.raises(ValueError, match="unknown split"):
        make_loader(layout, "holdout", batch_size=8)


def test_epoch_is_deterministic_in_seed_and_epoch(layout):
    a = _keys(make_loader(layout, "train", batch_size=8, seed=3, epoch=1, shuffle_buffer=16))
    b = _keys(make_loader(layout, "train", batch_size=8, seed=3, epoch=1, shuffle_buffer=16))
    c = _keys(make_loader(layout, "train", batch_size=8, seed=3, epoch=2, shuffle_buffer=16))
    assert a == b
    assert a != c and sorted(a) == sorted(c)


def test_two_workers_see_every_sample_exactly_once(layout):
    keys = _keys(make_loader(layout, "train", batch_size=4, num_workers=2, seed=0, epoch=0))
    assert len(keys) == N_TRAIN and len(set(keys)) == N_TRAIN


@pytest.mark.parametrize("workers", [0, 2])
def test_samples_per_epoch_sets_the_epoch_length_exactly(layout, workers):
    # 45 > one pass (32): the shard stream repeats; 45 is odd, so the workers' shares differ
    keys = _keys(make_loader(layout, "train", batch_size=8, num_workers=workers, samples_per_epoch=45))
    assert len(keys) == 45 and set(keys) <= set(_keys(make_loader(layout, "train", batch_size=8)))
    short = _keys(make_loader(layout, "train", batch_size=8, num_workers=workers, samples_per_epoch=10))
    assert len(short) == 10 and len(set(short)) == 10


def test_real_only_drops_every_fake(layout):
    targets = torch.cat([b["target"] for b in make_loader(layout, "train", batch_size=8, real_only=True)])
    assert len(targets) == N_TRAIN // 2 and targets.sum() == 0


def test_object_storage_urls_are_read_through_fsspec():
    root = "memory://avff-test-data"
    layout = write_synthetic_shards(root, videos={"train": 4, "val": 2}, shards={"train": 2, "val": 1})
    assert all(p.startswith("memory://") for p in fs.read_parquet(layout.shard_index)["path"].to_pylist())
    assert len(_keys(make_loader(layout, "train", batch_size=3))) == 8


def test_a_shard_with_a_foreign_member_raises(tmp_path):
    layout = write_synthetic_shards(str(tmp_path), videos={"train": 2}, shards={"train": 1})
    path = fs.read_parquet(layout.shard_index)["path"][0].as_py()
    with tarfile.open(path, "a") as tar:  # a pickle riding along with a valid sample
        data = b"cos\nsystem\n(S'true'\ntR."
        info = tarfile.TarInfo("train000/000.pickle")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ShardFormatError, match="unexpected member"):
        list(make_loader(layout, "train", batch_size=2))


def test_missing_split_is_an_error(tmp_path):
    layout = write_synthetic_shards(str(tmp_path), videos={"train": 2}, shards={"train": 1})
    with pytest.raises(ValueError, match="no 'test' shards"):
        make_loader(layout, "test", batch_size=2)


def _reference_batches(layout, *, batch_size: int, bufsize: int, seed: int, epoch: int, augment, img_size: int):
    """The loader's batches computed the obvious way: one process, one pass, every clip decoded and normalised in full.

    Shards permuted by (seed, epoch, pass 0), read in turn; the shuffle buffer's swap-with-last
    draws from random.Random("seed:epoch:worker 0:pass 0"); each clip's augmentation from its own
    (seed, epoch, key#pass) generator.
    """
    import random

    import numpy as np

    from storage.shard_io import read_clips
    from tasks.train.augment import clip_generator
    from tasks.train.data import augmented_tensors, collate, shard_urls

    urls = shard_urls(layout, "train")
    clips = [c for i in np.random.default_rng([seed, epoch, 0]).permutation(len(urls)) for c in read_clips(urls[i])]
    rng, buf, order = random.Random(f"{seed}:{epoch}:0:0"), [], []
    for c in clips:
        buf.append(c)
        if len(buf) >= bufsize:
            k = rng.randrange(len(buf))
            buf[k], buf[-1] = buf[-1], buf[k]
            order.append(buf.pop())
    rng.shuffle(buf)
    order += buf
    generators = [clip_generator(seed, epoch, f"{c.key}#0") for c in order]  # pass 0
    samples = [augmented_tensors(c, augment, g, img_size=img_size) for c, g in zip(order, generators)]
    return [collate(samples[i : i + batch_size]) for i in range(0, len(samples), batch_size)]


def test_shuffled_augmented_batches_equal_a_full_decode_and_normalise_bit_for_bit(layout):
    # the shuffle buffer holds uint8 clips and converts after it: the batches must not change by one bit
    from tasks.train.augment import ClipAugment
    from tasks.train.settings import AudioAugment, VideoAugment

    aug = ClipAugment(video=VideoAugment(hflip=0.5, brightness=0.3, noise_p=0.5),
                      audio=AudioAugment(pitch_shift=2.0))  # fmt: skip
    kw = dict(batch_size=5, seed=3, epoch=1, augment=aug, img_size=16)
    got = list(make_loader(layout, "train", shuffle_buffer=8, **kw))
    ref = _reference_batches(layout, bufsize=8, **kw)
    assert len(got) == len(ref) == 7
    for g, r in zip(got, ref):
        assert g["video_id"] == r["video_id"] and torch.equal(g["clip"], r["clip"])
        assert torch.equal(g["target"], r["target"])
        assert g["video"].dtype == torch.float32 and torch.equal(g["video"], r["video"])  # (B, 3, T, 16, 16)
        assert torch.equal(g["audio"], r["audio"])


def test_shrink_clip_keeps_the_clip_uint8_and_only_resizes_its_frames(layout):
    from storage.shard_io import read_clips
    from avff_model.inputs import resize_frames
    from tasks.train.data import shrink_clip, shard_urls

    clip = next(read_clips(shard_urls(layout, "train")[0]))  # frames (4, 32, 32, 3) uint8
    assert shrink_clip(clip, None) is clip and shrink_clip(clip, 32) is clip
    small = shrink_clip(clip, 16)
    assert small.frames.dtype == clip.frames.dtype == "uint8" and small.frames.shape == (4, 16, 16, 3)
    assert torch.equal(torch.from_numpy(small.frames), resize_frames(torch.from_numpy(clip.frames), 16))
    assert small.mel is clip.mel and small.meta == clip.meta and small.key == clip.key


def test_a_clips_mouth_box_follows_its_frames_into_the_batch(layout):
    """The stored mouth box (crop pixels) is scaled with shrunk frames and reaches the batch as
    fractions; a clip without one (box crops, old shards) gets the template's."""
    from dataclasses import replace

    from avff_model.crop_geometry import MOUTH_BOX
    from storage.shard_io import read_clips
    from avff_model.inputs import clip_to_tensors
    from tasks.train.data import collate, shrink_clip, shard_urls

    clip = next(read_clips(shard_urls(layout, "train")[0]))  # frames (4, 32, 32, 3)
    boxed = replace(clip, meta=replace(clip.meta, crop="landmarks", mouth_box=[8.0, 16.0, 24.0, 28.0]))
    assert shrink_clip(boxed, 16).meta.mouth_box == [4.0, 8.0, 12.0, 14.0]
    batch = collate([clip_to_tensors(boxed, img_size=16), clip_to_tensors(clip, img_size=16)])
    assert batch["mouth"].shape == (2, 4)
    assert batch["mouth"][0].tolist() == pytest.approx([0.5, 0.875, 0.25, 0.75])
    assert batch["mouth"][1].tolist() == pytest.approx(list(MOUTH_BOX))


def test_a_flipped_clips_mouth_box_is_mirrored_with_its_frames(layout):
    """hflip=1: the frames are flipped and so is the clip's mouth box; the frames equal augment_video's
    (the same draws), and hflip=0 leaves the box where it was."""
    from dataclasses import replace

    from storage.shard_io import read_clips
    from tasks.train.augment import AudioAugment, ClipAugment, VideoAugment, augment_video
    from tasks.train.data import augmented_tensors, shard_urls

    clip = next(read_clips(shard_urls(layout, "train")[0]))  # frames (4, 32, 32, 3)
    clip = replace(clip, meta=replace(clip.meta, crop="landmarks", mouth_box=[4.0, 16.0, 12.0, 28.0]))
    for hflip, box in ((1.0, [0.5, 0.875, 0.625, 0.875]), (0.0, [0.5, 0.875, 0.125, 0.375])):
        aug = ClipAugment(video=VideoAugment(hflip=hflip), audio=AudioAugment())
        out = augmented_tensors(clip, aug, torch.Generator().manual_seed(0))
        assert out["mouth"].tolist() == pytest.approx(box)
        plain = torch.from_numpy(clip.frames).permute(3, 0, 1, 2).float().div_(255.0)  # (3, T, H, W)
        expected = augment_video(plain, aug.video, torch.Generator().manual_seed(0))
        mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
        assert torch.allclose(out["video"], (expected - mean) / std)


def test_an_evaluation_loader_measures_the_statistics_on_each_clip_as_stored(layout):
    """``statistics``: each batch carries every statistic of every clip, measured before the model's resize
    (the same numbers as on the clip read straight from its shard), in loader workers too; a training loader
    refuses them."""
    from storage.shard_io import read_clips
    from tasks.evaluate.handmade import STATISTICS
    from tasks.train.data import shard_urls

    stored = {(c.meta.video_id, c.meta.clip): {n: fn(c) for n, fn in STATISTICS.items()}
              for url in shard_urls(layout, "val") for c in read_clips(url)}  # fmt: skip
    batches = list(make_loader(layout, "val", batch_size=5, img_size=16, statistics=STATISTICS, num_workers=2))
    assert batches[0]["video"].shape[-1] == 16 and set(batches[0]["handmade"]) == set(STATISTICS)
    seen = {}
    for b in batches:
        for i, key in enumerate(zip(b["video_id"], b["clip"].tolist())):
            seen[key] = {n: float(b["handmade"][n][i]) for n in STATISTICS}
    assert seen.keys() == stored.keys() and len(seen) == 16
    assert all(seen[k] == pytest.approx(stored[k], rel=1e-6) for k in stored)
    assert "handmade" not in next(iter(make_loader(layout, "val", batch_size=5)))  # only when asked
    with pytest.raises(ValueError, match="evaluation loaders only"):
        make_loader(layout, "train", batch_size=5, shuffle=True, statistics=STATISTICS)
