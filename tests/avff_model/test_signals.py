"""The signal branches (avff_model/signals.py): what each feature responds to, on tensors built to show it."""

import math

import pytest
import torch

from avff_model import AVFF, get_config
from avff_model.signals import (
    PEAK_FEATURES,
    SyncBranch,
    TextureBranch,
    face_ellipse,
    frames_of_sound,
    lagged_correlation,
    mouth_region,
)

T, F, TM, H = 16, 128, 320, 64


def _talking_clip(seed: int, shift_frames: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A face whose mouth darkens exactly when the sound is loud (``shift_frames`` moves the sound).

    Frame k is shown at k / fps from the mel start, so its sound is the mel columns around that
    time: column j belongs to the nearest frame, (j + c/2) // c for c columns per frame.
    """
    g = torch.Generator().manual_seed(seed)
    loud = torch.rand(T + 8, generator=g)[4 + shift_frames : 4 + shift_frames + T]  # (T,)
    video = torch.zeros(1, 3, T, H, H)
    video[:, :, :, int(0.65 * H) : int(0.85 * H), int(0.35 * H) : int(0.65 * H)] = -loud[None, None, :, None, None]
    c = TM // T
    frame_of_column = ((torch.arange(TM) + c // 2) // c).clamp(max=T - 1)  # (Tm,)
    audio = loud[frame_of_column][None, None, None, :].expand(1, 1, F, TM).clone()  # (1, 1, F, Tm)
    return video, audio


def _envelope_clip(seed: int, delay_s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A clip whose mouth opening is a loudness envelope e(t) sampled at each frame's time k / fps
    and whose mel (10 ms columns from the first frame's time) is e(t - delay_s) in every bin."""
    fps, hop, pad = 5.0, 0.01, 100  # 3.2 s: 16 frames, 320 columns; pad: 1 s of envelope either side
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(1, 1, TM + 2 * pad, generator=g)
    kernel = torch.exp(-0.5 * (torch.arange(-15, 16) * hop / 0.04) ** 2)  # a Gaussian of sigma 40 ms
    env = torch.nn.functional.conv1d(noise, (kernel / kernel.sum())[None, None], padding=15)[0, 0]  # (Tm + 2 pad,)
    at = lambda t: env[torch.round(t / hop).long() + pad]  # noqa: E731  e(t), t in s from the mel start
    video = torch.zeros(1, 3, T, H, H)
    video[:, :, :, int(0.65 * H) : int(0.85 * H), int(0.35 * H) : int(0.65 * H)] = -at(torch.arange(T) / fps)[
        :, None, None
    ]
    audio = at(torch.arange(TM) * hop - delay_s)[None, None, None, :].expand(1, 1, F, TM).clone()  # (1, 1, F, Tm)
    return video, audio


def _lag_profile(delay_s: float, clips: int = 24) -> torch.Tensor:
    """(7,) mean over clips of the sync branch's fixed part (mouth region, the sound of each frame,
    standardised, lagged_correlation) at lags -3..3 (index 3 = lag 0), loudness as the mean over bins."""
    rows = []
    for seed in range(clips):
        video, audio = _envelope_clip(seed, delay_s)
        m = -mouth_region(video).mean(-1, keepdim=True)  # (1, T, 1): darker = more open
        s = frames_of_sound(audio, T).mean(-1, keepdim=True)  # (1, T, 1)
        z = [(x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True) for x in (m, s)]
        rows.append(lagged_correlation(*z, lags=3)[0])
    return torch.stack(rows).mean(0)


def test_a_frame_hears_the_sound_around_its_own_time():
    """Mouth following the loudness exactly peaks at lag 0, clearly above lags +-1; audio one frame
    (0.2 s) late or early peaks at +1 / -1. Pairing a frame with the sound *after* it (the window
    starting at the frame) put lag 0 and lag -1 level and made a 0.1 s delay look best in sync."""
    in_sync, late, early, half_late = _lag_profile(0.0), _lag_profile(0.2), _lag_profile(-0.2), _lag_profile(0.1)
    assert in_sync.argmax() == 3 and in_sync[3] > max(in_sync[2], in_sync[4]) + 0.2
    assert late.argmax() == 4 and late[4] > max(late[3], late[5]) + 0.2
    assert early.argmax() == 2 and early[2] > max(early[1], early[3]) + 0.2
    assert half_late[3] < in_sync[3] - 0.1  # half a frame late is less in sync than in sync


def test_frames_of_sound_averages_the_columns_centred_on_each_frame():
    c = TM // T
    ramp = torch.arange(TM, dtype=torch.float32)[None, None, None].expand(2, 1, F, TM)  # column j holds j
    got = frames_of_sound(ramp, T)[0, :, 0]  # (T,)
    # frame k (k >= 1) averages columns [k c - c/2, k c + c/2); frame 0 only the half window inside the clip
    expected = torch.tensor([(c // 2 - 1) / 2] + [k * c - 0.5 for k in range(1, T)])
    torch.testing.assert_close(got, expected)


def test_lagged_correlation_peaks_at_the_lag_that_aligns_the_series():
    a = torch.randn(2, 20, 4)
    v = torch.roll(a, shifts=2, dims=1)  # v_t = a_{t-2}: the peak is at lag -2
    v, a = (
        (v - v.mean(1, keepdim=True)) / v.std(1, keepdim=True),
        (a - a.mean(1, keepdim=True)) / a.std(1, keepdim=True),
    )
    c = lagged_correlation(v, a, lags=3)  # (2, 7), index 3 is lag 0
    assert c.shape == (2, 7) and (c.argmax(dim=1) == 1).all()  # lag -2


def test_mouth_and_sound_are_read_per_frame():
    video, audio = _talking_clip(0)
    m, s = mouth_region(video), frames_of_sound(audio, T)  # (1, T, R*C), (1, T, F)
    assert m.shape == (1, T, 128) and s.shape == (1, T, F)
    corr = torch.corrcoef(torch.stack([m[0].mean(1), s[0].mean(1)]))[0, 1]
    assert corr < -0.99  # the mouth darkens (lower values) as the sound gets louder


def test_sync_branch_learns_to_tell_own_audio_from_moved_audio():
    torch.manual_seed(0)
    branch = SyncBranch(F)
    head = torch.nn.Linear(branch.out_dim, 1)
    opt = torch.optim.Adam([*branch.parameters(), *head.parameters()], lr=1e-2)

    def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        own = [_talking_clip(seed * 8 + i) for i in range(4)]
        moved = [(_talking_clip(seed * 8 + i)[0], _talking_clip(seed * 8 + i, shift_frames=3)[1]) for i in range(4, 8)]
        v, a = zip(*own, *moved)
        return torch.cat(v), torch.cat(a), torch.tensor([0.0] * 4 + [1.0] * 4)

    for step in range(60):
        v, a, y = batch(step)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(branch(v, a)).squeeze(-1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    v, a, y = batch(1000)  # clips never seen
    with torch.no_grad():
        p = head(branch(v, a)).squeeze(-1)
    assert p[4:].min() > p[:4].max()  # every moved clip scores above every clip with its own sound


def test_texture_branch_sees_blur_inside_the_face_and_not_outside():
    torch.manual_seed(0)
    video = torch.randn(2, 3, T, H, H)
    inside = face_ellipse(H, H)
    blurred = video.clone()
    smooth = torch.nn.functional.avg_pool2d(video[1].reshape(-1, 1, H, H), 3, 1, 1).reshape(3, T, H, H)
    blurred[1] = torch.where(inside, smooth, video[1])  # sample 1: blurred face, sharp border
    branch = TextureBranch()
    with torch.no_grad():
        f = branch(blurred)  # (2, 3K + 3): inside K, border K, difference K, colour 3
    k = 8
    lap_in, lap_out = f[:, 0], f[:, k]  # filter 0 is the Laplacian
    assert lap_in[1] < lap_in[0] - 1.0  # the blurred face has far less high-frequency energy
    assert math.isclose(lap_out[1].item(), lap_out[0].item(), rel_tol=0.05)  # the border does not change


def test_texture_branch_with_colour_sees_a_tint_seam_the_grey_frames_do_not_show():
    """A pasted face whose tint differs from the skin around it, at the same brightness (red up, green down by
    the same amount, so every pixel's grey is unchanged): the grey bank's features stay exactly the same, the
    colour bank's energy inside the face rises (the seam is inside the ellipse) and its border's does not."""
    torch.manual_seed(0)
    video = 0.1 * torch.randn(1, 3, T, H, H).repeat(2, 1, 1, 1, 1)  # two copies of one clip
    rows = (torch.arange(H) + 0.5) / H - 0.5
    pasted = ((rows[:, None] / 0.3) ** 2 + (rows[None, :] / 0.25) ** 2 <= 1.0).float()  # (H, W) inside the face
    tinted = video.clone()
    tinted[1, 0] += 0.8 * pasted
    tinted[1, 1] -= 0.8 * pasted  # sample 1: tinted patch; its grey (the mean of the channels) is unchanged
    torch.testing.assert_close(tinted.mean(dim=1), video.mean(dim=1))
    k = 8
    grey_only, both = TextureBranch(), TextureBranch(colour=True)
    assert (grey_only.out_dim, both.out_dim) == (3 * k + 3, 6 * k + 3)
    both.bank.load_state_dict(grey_only.bank.state_dict())
    with torch.no_grad():
        g, c = grey_only(tinted), both(tinted)  # (2, 3K + 3), (2, 6K + 3)
    torch.testing.assert_close(g[1, : 3 * k], g[0, : 3 * k], rtol=1e-4, atol=1e-4)  # grey bank: blind to the tint
    torch.testing.assert_close(c[:, : 3 * k], g[:, : 3 * k])  # the grey bank's features come first, unchanged
    colour_in, colour_out = c[:, 3 * k : 4 * k], c[:, 4 * k : 5 * k]  # colour bank: inside, border
    assert (colour_in[1, :2] > colour_in[0, :2] + 1.0).all()  # filters 0-1, the red channel's edges: the seam
    torch.testing.assert_close(colour_out[1], colour_out[0], rtol=0.05, atol=0.05)  # the border is untouched


def test_branches_follow_the_heads_modalities_and_add_to_the_logit():
    cfg = get_config("tiny")
    both, video_only, audio_only = (
        AVFF(cfg),
        AVFF(get_config("tiny", fusion="video_only")),
        AVFF(get_config("tiny", fusion="audio_only")),
    )
    assert both.signals.sync is not None and both.signals.texture is not None
    assert video_only.signals.sync is None and video_only.signals.texture is not None
    assert audio_only.signals is None and "signals" not in audio_only.inputs
    off = AVFF(get_config("tiny", sync_branch=False, texture_branch=False))
    assert off.signals is None and off.inputs == off.head.inputs
    video, audio = torch.randn(2, 3, T, H, H), torch.randn(2, 1, F, TM)
    both.eval()
    with torch.no_grad():
        feats = both.forward_features(video, audio, both.inputs)
        assert feats["signals"].shape == (2, both.signals.out_dim)
        expected = both.head(feats) + both.signal_head(feats["signals"]).squeeze(-1)
        torch.testing.assert_close(both(video, audio), expected)


def test_mouth_region_reads_each_clips_own_mouth_box():
    """Clip 0's mouth box is the template's, clip 1's is top left: each pools its own region, and
    without boxes both pool the template's (avff_model/crop_geometry.py)."""
    from avff_model.crop_geometry import MOUTH_BOX

    video = torch.zeros(2, 3, T, H, H)
    video[1, :, :, 0:8, 0:16] = 1.0  # clip 1's "mouth", outside the template box
    mouth = torch.tensor([MOUTH_BOX, (0.0, 8 / H, 0.0, 16 / H)])  # (B, 4) top, bottom, left, right
    per_clip = mouth_region(video, mouth)  # (2, T, R * C)
    assert torch.equal(per_clip[0], mouth_region(video)[0])
    assert torch.allclose(per_clip[1], torch.ones_like(per_clip[1])) and mouth_region(video)[1].abs().max() == 0


def test_the_model_passes_each_clips_mouth_box_to_the_sync_branch():
    """AVFF.forward(video, audio, mouth): a box over the moving region changes the logit; the
    template's box given explicitly equals giving none."""
    from avff_model.crop_geometry import MOUTH_BOX

    torch.manual_seed(0)
    cfg = get_config("tiny")
    model = AVFF(cfg).eval()
    g = torch.Generator().manual_seed(0)
    video = torch.randn(2, 3, cfg.num_frames, cfg.img_size, cfg.img_size, generator=g)
    audio = torch.randn(2, 1, cfg.n_mels, cfg.mel_frames, generator=g)
    template = torch.tensor([MOUTH_BOX, MOUTH_BOX])
    with torch.no_grad():
        base = model(video, audio)
        assert torch.equal(model(video, audio, template), base)
        assert not torch.allclose(model(video, audio, torch.tensor([[0.0, 0.3, 0.0, 0.3]] * 2)), base)


def _lip_clip(seed: int, shift_frames: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A clip whose pixels never move and whose landmarks' lips open (and narrow) with the sound."""
    video, audio = _talking_clip(seed, shift_frames)
    opening = _talking_clip(seed)[1][0, 0, 0, :: TM // T]  # (T,) the unshifted loudness at each frame
    lips = torch.stack([0.1 + 0.2 * opening, 1.2 - 0.1 * opening], dim=-1)[None]  # (1, T, 2)
    return torch.zeros_like(video), audio, lips


def test_sync_branch_reads_the_lips_and_learns_own_audio_from_moved_audio():
    """With still pixels, only the landmarks' lips carry the mouth: a branch with ``lips`` learns to
    tell own sound from moved sound from them; without lips (zeros: no landmarks) its lip features are 0."""
    torch.manual_seed(0)
    branch = SyncBranch(F, lips=True)
    head = torch.nn.Linear(branch.out_dim, 1)
    opt = torch.optim.Adam([*branch.parameters(), *head.parameters()], lr=1e-2)

    def batch(seed: int):
        own = [_lip_clip(seed * 8 + i) for i in range(4)]
        moved = [_lip_clip(seed * 8 + i, shift_frames=3) for i in range(4, 8)]
        v, a, lp = zip(*own, *moved)
        return torch.cat(v), torch.cat(a), torch.cat(lp), torch.tensor([0.0] * 4 + [1.0] * 4)

    for step in range(60):
        v, a, lp, y = batch(step)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(branch(v, a, lips=lp)).squeeze(-1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    v, a, lp, y = batch(1000)  # clips never seen
    with torch.no_grad():
        p = head(branch(v, a, lips=lp)).squeeze(-1)
        assert p[4:].min() > p[:4].max(), "every moved clip scores above every clip with its own sound"
        lip_part = branch(v, a, lips=torch.zeros_like(lp))[:, -2 * (2 * branch.lags + 1) :]
        assert torch.equal(lip_part, torch.zeros_like(lip_part)), "no landmarks: no lip features"
        assert torch.equal(branch(v, a), branch(v, a, lips=torch.zeros_like(lp)))


def test_a_checkpoint_from_before_lips_loads_and_scores_as_before():
    """A config saved before ``sync_lips`` existed lacks the key: it builds the branch without the lip
    features (its head's input is as wide as before), so its weights load strictly, and lips given to
    it change nothing."""
    from dataclasses import asdict

    from avff_model.config import AVFFConfig

    old = {k: v for k, v in asdict(get_config("tiny")).items() if k not in ("sync_lips", "sync_peak")}
    torch.manual_seed(0)
    before = AVFF(AVFFConfig(**{**old})).eval()
    lipless = before.signals.sync.out_dim
    assert AVFF(get_config("tiny")).signals.sync.out_dim == lipless + 2 * (2 * 3 + 1) + PEAK_FEATURES
    model = AVFF(AVFFConfig(**old))
    model.load_state_dict(before.state_dict())  # strict
    cfg = model.cfg
    video = torch.randn(2, 3, cfg.num_frames, cfg.img_size, cfg.img_size)
    audio = torch.randn(2, 1, cfg.n_mels, cfg.mel_frames)
    with torch.no_grad():
        assert torch.equal(model.eval()(video, audio), model(video, audio, None, torch.rand(2, cfg.num_frames, 2)))
    assert get_config("tiny").sync_lips


def test_a_checkpoint_from_before_the_sync_peak_loads_strictly_and_the_peak_reads_a_lip_track():
    """A config saved with the lips but before ``sync_peak`` lacks the key: its branch is as wide as
    before and loads strictly. With the peak, lips longer than the clip's frames (a 25 fps lip track
    over the clip's span) give PEAK_FEATURES more features, all zero for a clip without landmarks."""
    from dataclasses import asdict

    from avff_model.config import AVFFConfig

    old = {k: v for k, v in asdict(get_config("tiny")).items() if k != "sync_peak"}
    before = AVFF(AVFFConfig(**old)).eval()
    AVFF(AVFFConfig(**old)).load_state_dict(before.state_dict())  # strict
    assert AVFF(get_config("tiny")).signals.sync.out_dim == before.signals.sync.out_dim + PEAK_FEATURES
    branch = SyncBranch(F, lips=True, peak=True).eval()
    video, audio = _talking_clip(0)
    track = torch.rand(video.shape[0], 80, 2)  # (B, K, 2), K = 3.2 s at 25 fps
    with torch.no_grad():
        feats = branch(video, audio, lips=track)
        assert feats.shape == (video.shape[0], branch.out_dim) and torch.isfinite(feats).all()
        assert not torch.equal(feats[:, -PEAK_FEATURES:], torch.zeros_like(feats[:, -PEAK_FEATURES:]))
        none = branch(video, audio, lips=torch.zeros_like(track))[:, -PEAK_FEATURES:]
        assert torch.equal(none, torch.zeros_like(none)), "no landmarks: no peak"


def test_a_sync_branch_without_its_pixel_part_gives_the_lip_features_only():
    """``sync_pixels=False``: no learned mouth-region or sound embedding (nothing to fit the training
    people with), the lips' lagged correlations and sync peak only; a config needs one of the two."""
    from avff_model.config import AVFFConfig

    full, lips_only = SyncBranch(F, lips=True, peak=True), SyncBranch(F, lips=True, peak=True, pixels=False)
    assert lips_only.out_dim == full.out_dim - (2 * 3 + 1 + 16) == 2 * (2 * 3 + 1) + PEAK_FEATURES
    assert not any(n.startswith(("mouth.", "sound.")) for n, _ in lips_only.named_parameters())
    video, audio = _talking_clip(0)
    track = torch.rand(video.shape[0], 80, 2)
    with torch.no_grad():
        assert torch.equal(lips_only(video, audio, lips=track), full(video, audio, lips=track)[:, 2 * 3 + 1 + 16 :])
    model = AVFF(get_config("tiny", fusion="signals_only", sync_pixels=False, texture_branch=False))
    assert model.signals.out_dim == lips_only.out_dim
    peak_only = SyncBranch(F, lips=True, peak=True, pixels=False, lip_lags=False)
    with torch.no_grad():
        assert torch.equal(peak_only(video, audio, lips=track), full(video, audio, lips=track)[:, -PEAK_FEATURES:])
    lips_model = AVFF(
        get_config("tiny", fusion="signals_only", sync_pixels=False, sync_lip_lags=False, texture_branch=False)
    )
    assert lips_model.signals.out_dim == PEAK_FEATURES
    with pytest.raises(ValueError, match="sync_pixels or sync_lips"):
        AVFFConfig(sync_pixels=False, sync_lips=False)
    with pytest.raises(ValueError, match="sync_lip_lags or sync_peak"):
        AVFFConfig(sync_lips=True, sync_lip_lags=False, sync_peak=False)


def test_the_layer_norm_erases_a_level_common_to_every_feature_and_the_batch_norm_keeps_it():
    """Blur lowers every log energy of the texture branch together; a per-sample LayerNorm removes exactly
    that shift, a per-feature BatchNorm (signal_norm="batch") keeps it (docs/learning.md, the visual types)."""
    from avff_model.heads import mlp_head

    torch.manual_seed(0)
    x = torch.randn(16, 27)
    blurred = x - 2.0  # the same clips, every feature lower by the same amount
    for norm, erased in (("layer", True), ("batch", False)):
        head = mlp_head(27, 32, 0.0, norm=norm)
        head.train()
        head(torch.cat([x, blurred]))  # one training batch of both: the batch norm's running statistics
        head.eval()
        same = torch.allclose(head(x), head(blurred), atol=1e-5)
        assert same == erased, norm


def test_the_batch_norm_head_trains_on_a_batch_of_one_without_touching_its_statistics():
    from avff_model.heads import mlp_head

    head = mlp_head(8, 16, 0.0, norm="batch")
    head.train()
    before = head[0].running_mean.clone()
    out = head(torch.randn(1, 8))
    out.sum().backward()
    assert out.shape == (1, 1) and torch.equal(head[0].running_mean, before)


def test_noisy_or_is_the_probability_that_any_detector_says_fake():
    from avff_model.heads import noisy_or

    logits = torch.tensor([[0.0, 0.0], [2.0, -3.0], [-4.0, -5.0], [-1.0, 3.0]], dtype=torch.float64)
    any_fake = 1 - (1 - torch.sigmoid(logits)).prod(dim=1)
    torch.testing.assert_close(noisy_or(logits), torch.logit(any_fake))
    assert (noisy_or(logits) >= logits.max(dim=1).values).all()  # one detector's FAKE is never outvoted
    extreme = noisy_or(torch.tensor([[-300.0, -300.0], [300.0, -300.0]]))
    assert torch.isfinite(extreme).all() and extreme[0] < -60 and extreme[1] > 100


def test_noisy_or_fusion_gives_each_signal_branch_its_own_head():
    """signal_fusion="noisy_or": a head per branch (sync, texture) on its own features, and the model's logit
    is the noisy-OR of the fusion head's and theirs; the texture head alone can make a clip FAKE."""
    from avff_model.config import AVFFConfig
    from avff_model.heads import noisy_or

    model = AVFF(get_config("tiny", signal_fusion="noisy_or", signal_norm="batch")).eval()
    dims = [model.signals.sync.out_dim, model.signals.texture.out_dim]
    assert model.signal_head.dims == dims and len(model.signal_head.heads) == 2
    video, audio = torch.randn(2, 3, T, H, H), torch.randn(2, 1, F, TM)
    with torch.no_grad():
        feats = model.forward_features(video, audio, model.inputs)
        sync, texture = feats["signals"].split(dims, dim=1)
        branches = torch.cat([model.signal_head.heads[0](sync), model.signal_head.heads[1](texture)], dim=1)
        torch.testing.assert_close(model(video, audio), noisy_or(torch.cat([model.head(feats)[:, None], branches], 1)))
        model.signal_head.heads[1][-1].bias.fill_(20.0)  # the texture head alone says FAKE
        assert (model(video, audio) > 19.0).all()
    with pytest.raises(ValueError, match="signal_fusion"):
        AVFFConfig(signal_fusion="mean")


def test_signal_hidden_zero_makes_the_signal_head_a_linear_read_out_of_the_normalised_features():
    """signal_hidden=0: the signal head is norm -> Linear(S, 1), affine in its features at eval (a logistic
    regression on them), every feature read; the parameter estimate counts it; a negative width is refused."""
    from avff_model.config import AVFFConfig
    from avff_model.sizing import estimate_params

    cfg = get_config("tiny", signal_hidden=0, signal_norm="batch")
    model = AVFF(cfg).eval()
    s = model.signals.out_dim
    linear = [m for m in model.signal_head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(s, 1)]
    torch.manual_seed(0)
    x, z = torch.randn(8, s), torch.randn(8, s)
    head = model.signal_head
    with torch.no_grad():
        torch.testing.assert_close(head(0.25 * x + 0.75 * z), 0.25 * head(x) + 0.75 * head(z))
    x.requires_grad_(True)
    head(x).sum().backward()
    assert (x.grad.abs().sum(dim=0) > 0).all()  # no feature dropped
    assert estimate_params(cfg)["total"] == sum(p.numel() for p in model.parameters())
    wide = AVFF(get_config("tiny", signal_hidden=16))
    assert [m.out_features for m in wide.signal_head.modules() if isinstance(m, torch.nn.Linear)] == [16, 1]
    with pytest.raises(ValueError, match="signal_hidden"):
        AVFFConfig(signal_hidden=-1)
