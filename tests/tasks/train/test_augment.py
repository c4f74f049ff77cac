"""Augmentation does what it claims: per-clip consistency, label mixing, train-only loaders (CPU, ms)."""

from __future__ import annotations

import pytest
import torch

from tasks.train.augment import (
    ClipAugment,
    VideoParams,
    add_power_noise,
    apply_video_params,
    augment_mel,
    augment_video,
    clip_generator,
    gaussian_blur,
    jpeg_reencode,
    rotate,
    sample_video_params,
    shift_mel_bins,
    shift_time,
    stretch_time,
)
from tasks.train.batch_augment import BatchTransform, cutmix, down_up, mixup
from tasks.train.settings import AudioAugment, MixAugment, VideoAugment, audio_augment_preset, video_augment_preset
from tasks.synthetic.shards import write_synthetic_shards
from tasks.train.data import make_loader


def _clip(seed: int = 0, t: int = 4, size: int = 16) -> torch.Tensor:
    return torch.rand(3, t, size, size, generator=torch.Generator().manual_seed(seed))  # (3, T, H, W) in [0, 1]


def _same_frames(t: int = 4) -> torch.Tensor:
    return _clip(1, t=1).expand(-1, t, -1, -1).clone()  # T copies of one frame


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- video, one clip


def test_flip_flips_every_frame_of_the_clip_like_torch_flip():
    v = _clip()
    out = augment_video(v, VideoAugment(hflip=1.0), _g())
    assert torch.equal(out, torch.flip(v, dims=(-1,)))
    for t in range(v.shape[1]):
        assert torch.equal(out[:, t], torch.flip(v[:, t], dims=(-1,)))
    assert torch.equal(augment_video(v, VideoAugment(hflip=0.0, rotate=0.0), _g()), v)


def test_rotation_turns_all_frames_by_one_angle():
    v = _clip()
    assert torch.allclose(rotate(v, 90), torch.rot90(v, 1, dims=(-2, -1)), atol=1e-5)
    out = augment_video(_same_frames(), VideoAugment(rotate=30.0), _g(3))
    assert not torch.allclose(out, _same_frames())
    assert all(torch.equal(out[:, t], out[:, 0]) for t in range(4))


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation", "hue"])
def test_colour_jitter_changes_every_frame_by_the_same_params(name):
    cfg = VideoAugment(**{name: 0.4 if name != "hue" else 0.2})
    same = _same_frames()
    out = augment_video(same, cfg, _g(5))
    assert (out - same).abs().max() > 1e-3  # it did something ...
    assert all(torch.equal(out[:, t], out[:, 0]) for t in range(4))  # ... identically to each frame
    # on a clip of different frames, the per-pixel maps equal applying the clip's params frame by frame
    if name != "contrast":  # contrast blends towards the CLIP mean, shared by all frames by design
        v = _clip(2)
        p = sample_video_params(cfg, _g(5))
        whole = apply_video_params(v, p, _g())
        for t in range(4):
            one = apply_video_params(v[:, t : t + 1], p, _g())
            assert torch.allclose(whole[:, t : t + 1], one, atol=1e-6)


def test_contrast_uses_one_clip_mean_for_all_frames():
    v = _clip(4)
    p = VideoParams(contrast=0.5)
    out = apply_video_params(v, p, _g())
    mean = (v * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1, 1)).sum(0).mean()
    assert torch.allclose(out, (0.5 * v + 0.5 * mean).clamp(0, 1), atol=1e-6)


def test_degradations_use_one_quality_and_one_sigma_per_clip():
    v = _clip()
    q = jpeg_reencode(v, 40)
    assert q.shape == v.shape and (q - v).abs().mean() > 0.01
    for t in range(4):  # each frame equals re-encoding that frame alone at the same quality
        assert torch.equal(q[:, t : t + 1], jpeg_reencode(v[:, t : t + 1], 40))
    blurred = gaussian_blur(_same_frames(), 1.0)
    assert all(torch.equal(blurred[:, t], blurred[:, 0]) for t in range(4))
    assert blurred.var() < _same_frames().var()  # high frequencies gone
    cfg = VideoAugment(jpeg_p=1.0, jpeg_quality=(20, 30), blur_p=1.0, noise_p=1.0, noise_std=(0.05, 0.05))
    p = sample_video_params(cfg, _g(9))
    assert 20 <= p.jpeg_quality <= 30 and cfg.blur_sigma[0] <= p.blur_sigma <= cfg.blur_sigma[1]
    noisy = apply_video_params(torch.full((3, 4, 32, 32), 0.5), VideoParams(noise_std=0.05), _g())
    assert abs(float((noisy - 0.5).std()) - 0.05) < 0.005


def test_draws_are_seeded_per_clip_and_presets_validate():
    cfg = video_augment_preset("strong")
    a = augment_video(_clip(), cfg, clip_generator(0, 1, "v0/000"))
    assert torch.equal(a, augment_video(_clip(), cfg, clip_generator(0, 1, "v0/000")))
    assert not torch.equal(a, augment_video(_clip(), cfg, clip_generator(0, 2, "v0/000")))
    assert not VideoAugment().enabled and not AudioAugment().enabled and cfg.enabled
    with pytest.raises(KeyError, match="light"):
        video_augment_preset("heavy")
    with pytest.raises(KeyError, match="sync_safe"):
        audio_augment_preset("loud")
    with pytest.raises(ValueError, match="probability"):
        VideoAugment(hflip=1.5)


# ---------------------------------------------------------------- audio, one log-mel


def _mel_with_onset(t0: int = 10, f: int = 32, tm: int = 40) -> torch.Tensor:
    mel = torch.full((f, tm), -15.0)  # near silence (ln power)
    mel[8:20, t0:] = 2.0  # a tone band switching on at frame t0
    return mel


def _onset(mel: torch.Tensor) -> int:
    energy = mel.exp().sum(0)  # (Tm,)
    return int((energy > energy.max() / 2).nonzero()[0])


def test_pitch_and_noise_keep_alignment_stretch_and_shift_break_it():
    mel = _mel_with_onset()
    assert torch.equal(shift_mel_bins(mel, 3)[3:], mel[:-3])  # content moved 3 bins up
    safe = augment_mel(mel, audio_augment_preset("sync_safe"), _g(1))
    assert _onset(safe) == _onset(mel) == 10
    assert _onset(shift_time(mel, 4)) == 14 and shift_time(mel, 4).shape == mel.shape
    assert abs(_onset(stretch_time(mel, 0.8)) - 10 / 0.8) <= 1 and stretch_time(mel, 0.8).shape == mel.shape
    assert not AudioAugment().breaks_sync and AudioAugment(time_shift=2).breaks_sync
    assert not audio_augment_preset("sync_safe").breaks_sync


def test_noise_is_added_in_the_power_domain_at_the_drawn_snr():
    mel = torch.randn(32, 40) - 4
    assert torch.allclose(add_power_noise(mel, 100.0, _g()), mel, atol=1e-6)
    ratio = add_power_noise(mel, 0.0, _g()).exp().mean() / mel.exp().mean()
    assert 1.8 < float(ratio) < 2.2  # 0 dB: the noise power equals the signal power on average


# ---------------------------------------------------------------- batches


def _batch(b: int = 6) -> dict:
    g = _g(7)
    return {"video": torch.rand(b, 3, 4, 16, 16, generator=g), "audio": torch.randn(b, 1, 8, 8, generator=g),
            "target": (torch.arange(b) % 2).float(), "video_id": [f"v{i}" for i in range(b)]}  # fmt: skip


def _mixture(x: torch.Tensor, xi: torch.Tensor, xj: torch.Tensor) -> float | None:
    """lam if x = lam xi + (1 - lam) xj (least squares, then checked), else None."""
    d = xj - xi
    if (d * d).sum() == 0:
        return None
    lam = 1 - float(((x - xi) * d).sum() / (d * d).sum())
    return lam if torch.allclose(x, lam * xi + (1 - lam) * xj, atol=1e-5) else None


def test_mixup_targets_are_convex_combinations_with_the_inputs_lambda():
    b = _batch()
    out = BatchTransform(MixAugment(mixup_alpha=0.4), generator=_g(1))(b)
    v, a, t = b["video"], b["audio"], b["target"]
    lams = set()
    for i in range(6):
        if torch.allclose(out["video"][i], v[i], atol=1e-6):  # paired with itself: nothing changes
            assert torch.isclose(out["target"][i], t[i])
            continue
        j, lam = next((j, lam) for j in range(6) if (lam := _mixture(out["video"][i], v[i], v[j])) is not None)
        assert 0 <= lam <= 1
        assert torch.isclose(out["target"][i], lam * t[i] + (1 - lam) * t[j], atol=1e-6)  # same lambda
        assert torch.allclose(out["audio"][i], lam * a[i] + (1 - lam) * a[j], atol=1e-5)
        lams.add(round(lam, 5))
    assert len(lams) == 1  # one lambda per batch


def test_mixup_and_cutmix_pure_functions():
    b = _batch()
    perm = torch.tensor([1, 0, 3, 2, 5, 4])
    v, a, t = mixup(b["video"], b["audio"], b["target"], 0.3, perm)
    assert torch.allclose(t, 0.3 * b["target"] + 0.7 * b["target"][perm])
    assert torch.allclose(v, 0.3 * b["video"] + 0.7 * b["video"][perm])
    video = torch.arange(6.0).view(6, 1, 1, 1, 1).expand(6, 3, 4, 16, 16).clone()  # clip i holds the value i
    out, target = cutmix(video, b["target"], (2, 10, 4, 8), perm)
    pasted = (out != video)[:, 0]  # (B, T, H, W)
    area = 8 * 4 / 256
    assert all(float(pasted[i].float().mean()) == area for i in range(6))  # the same box in every frame
    assert torch.allclose(target, (1 - area) * b["target"] + area * b["target"][perm])


def test_cutmix_label_weight_equals_the_pasted_area_fraction():
    video = torch.arange(6.0).view(6, 1, 1, 1, 1).expand(6, 3, 4, 16, 16).clone()  # clip i holds the value i
    target = torch.tensor([0.0, 1, 0, 1, 0, 1])
    batch = {"video": video, "audio": torch.zeros(6, 1, 8, 8), "target": target}
    out = BatchTransform(MixAugment(cutmix_alpha=1.0), generator=_g(3))(batch)
    assert torch.equal(out["audio"], batch["audio"])  # CutMix keeps the base clip's audio
    for i in range(6):
        changed = out["video"][i, 0] != video[i, 0]  # (T, H, W)
        assert all(torch.equal(changed[t], changed[0]) for t in range(4))  # one box for all frames
        area = float(changed[0].float().mean())
        if area == 0:
            assert out["target"][i] == target[i]
            continue
        j = int(out["video"][i, 0][changed][0])  # the clip the box came from
        assert torch.isclose(out["target"][i], torch.tensor((1 - area) * float(target[i]) + area * float(target[j])))


def test_down_up_keeps_shape_and_removes_detail():
    v = torch.rand(2, 3, 4, 32, 32, generator=_g())
    assert torch.equal(down_up(v, 1.0), v)
    low = down_up(v, 0.25)
    assert low.shape == v.shape and low.var() < 0.5 * v.var()
    t = BatchTransform(MixAugment(), scale=0.5, generator=_g())
    assert t.active and not BatchTransform(MixAugment(), generator=_g()).active


# ---------------------------------------------------------------- loaders


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return write_synthetic_shards(str(tmp_path_factory.mktemp("data")), videos={"train": 8, "val": 4, "test": 4},
                                  shards={"train": 2, "val": 1, "test": 1})  # fmt: skip


def _videos(loader) -> dict[str, torch.Tensor]:
    return {f"{v}/{c}": x for b in loader for v, c, x in zip(b["video_id"], b["clip"].tolist(), b["video"])}


def test_augmentation_runs_in_train_loaders_only(layout, tmp_path):
    aug = ClipAugment(video=VideoAugment(hflip=1.0, brightness=0.3), audio=AudioAugment(pitch_shift=2.0))
    kw = dict(batch_size=4, seed=1, epoch=2, shuffle_buffer=0)
    plain = _videos(make_loader(layout, "train", **kw))
    a1, a2 = (_videos(make_loader(layout, "train", augment=aug, **kw)) for _ in range(2))
    assert a1.keys() == plain.keys() and all(torch.equal(a1[k], a2[k]) for k in a1)  # seeded
    assert all(not torch.allclose(a1[k], plain[k]) for k in a1)  # every clip flipped
    with pytest.raises(ValueError, match="training loaders only"):
        make_loader(layout, "val", batch_size=4, augment=aug)
    # run_training's own loaders: augmentation reaches the stage-2 train loader, never val/test
    from tasks.tracking.logger import InMemoryLogger
    from tasks.train.run import Run
    from tasks.train.settings import TrainSettings

    settings = TrainSettings(data=layout.root, output_dir=str(tmp_path), overrides={"num_slices": 2}, device="cpu",
                             video_augment=aug.video, audio_augment=aug.audio, shuffle_buffer=0, num_workers=0)  # fmt: skip
    run = Run(settings, InMemoryLogger())
    for split in ("val", "test"):
        ev = _videos(run.loader(split, epoch=3))
        ref = _videos(make_loader(layout, split, batch_size=8, shuffle=False))
        assert ev.keys() == ref.keys() and all(torch.equal(ev[k], ref[k]) for k in ev)
    ref = _videos(make_loader(layout, "train", batch_size=8, seed=0, epoch=0, shuffle_buffer=0))
    stage1 = _videos(run.loader("train", epoch=0, train=True))  # stage 1 trains on clean clips
    assert stage1.keys() == ref.keys() and all(torch.equal(stage1[k], ref[k]) for k in ref)
    stage2 = _videos(run.loader("train", epoch=0, train=True, augment=True))
    assert stage2.keys() == ref.keys() and all(not torch.allclose(stage2[k], ref[k]) for k in ref)
