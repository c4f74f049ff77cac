"""Behavioural tests of avff_model on the tiny preset (CPU, seconds)."""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import avff_model
from avff_model import AVFF, estimate_activation_bytes, estimate_params, get_config, list_configs, list_heads
from avff_model.fusion import (
    complementary_slice_mask,
    frame_shift,
    overlap_slices,
    slice_ids,
    sync_candidates,
    time_overlap,
)
from avff_model.heads import build_head
from avff_model.layers import patchify_audio, patchify_video, unpatchify_audio, unpatchify_video
from avff_model.losses import cross_modal_loss, info_nce, masked_mse, sync_nce
from avff_model.model import SIGNAL_PREFIXES

B = 2
TERMS = ("contrastive", "recon_video", "recon_audio", "adv_gen", "cross_modal")


def make_model(seed: int = 0, **overrides) -> AVFF:
    torch.manual_seed(seed)
    return AVFF(get_config("tiny", **overrides))


def make_batch(cfg, batch: int = B, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(batch, 3, cfg.num_frames, cfg.img_size, cfg.img_size, generator=g)
    audio = torch.randn(batch, 1, cfg.n_mels, cfg.mel_frames, generator=g)
    return video, audio


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- configs and sizes
def test_presets_registered_and_unknown_names_raise():
    assert {"tiny", "laptop", "paper"} <= set(list_configs())
    with pytest.raises(KeyError, match="tiny"):
        get_config("nope")
    assert get_config("tiny", num_slices=4).num_slices == 4
    with pytest.raises(ValueError, match="img_size % patch"):
        get_config("tiny", img_size=70)
    with pytest.raises(ValueError, match="num_slices even"):
        get_config("tiny", num_slices=3)
    with pytest.raises(KeyError, match="avff_concat"):
        make_model(fusion="nope")


def test_paper_preset_matches_the_paper():
    cfg = get_config("paper")
    assert (cfg.video_width, cfg.video_depth, cfg.video_heads) == (768, 12, 12)
    assert (cfg.audio_width, cfg.audio_depth, cfg.audio_heads) == (768, 12, 12)
    assert cfg.video_grid == (8, 14, 14) and cfg.audio_grid == (8, 20) and cfg.num_slices == 8


@pytest.mark.parametrize("colour", [False, True])
@pytest.mark.parametrize("name", list_configs())
def test_estimate_params_is_exact_for_every_preset(name, colour):
    cfg = get_config(name, texture_colour=colour)
    with torch.device("meta"):  # no memory, no init cost: construction + counting only
        model = AVFF(cfg)
    assert sum(p.numel() for p in model.parameters()) == estimate_params(cfg)["total"]


@pytest.mark.parametrize("head", list_heads())
def test_estimate_params_is_exact_for_every_head(head):
    cfg = get_config("tiny", fusion=head, learn_temperature=False)
    with torch.device("meta"):
        model = AVFF(cfg)
    assert sum(p.numel() for p in model.parameters()) == estimate_params(cfg)["total"]


def test_laptop_preset_fits_an_8gb_gpu_at_batch_32():
    cfg = get_config("laptop")
    state = 16 * estimate_params(cfg)["total"]  # fp32 weights + grads + Adam m, v
    assert estimate_activation_bytes(cfg, 32)["total"] + state < 6 * 2**30


def test_activation_estimate_counts_the_signal_branches_and_the_larger_stage():
    on = estimate_activation_bytes(get_config("laptop"), 32)
    off = estimate_activation_bytes(get_config("laptop", sync_branch=False, texture_branch=False), 32)
    texture_only = estimate_activation_bytes(get_config("laptop", fusion="video_only"), 32)
    assert off["signals"] == 0 < texture_only["signals"] < on["signals"]
    assert on["stage2"] > off["stage2"] and on["stage1"] == off["stage1"]  # the branches run in stage 2 only
    # they work on full frames: 4x the pixels, 4x the bytes (give or take the per-frame sync features)
    big = estimate_activation_bytes(get_config("laptop", img_size=224), 32)
    assert 3.9 < big["signals"] / on["signals"] <= 4.0
    for e in (on, off, big):
        assert e["total"] == max(e["stage1"], e["stage2"])
    # the unmasked pass runs for the cross-modal target even when the contrastive loss pools the masked one
    masked = estimate_activation_bytes(get_config("laptop", contrastive_on_masked=True), 32)
    assert masked["video_encoder"] == on["video_encoder"]
    cheap = estimate_activation_bytes(get_config("laptop", contrastive_on_masked=True, w_cross=0.0), 32)
    assert 2 * cheap["video_encoder"] == on["video_encoder"] and cheap["a2v_v2a"] < on["a2v_v2a"]


# ---------------------------------------------------------------- shapes
def test_patchify_round_trips():
    cfg = get_config("tiny")
    video, audio = make_batch(cfg)
    pv = patchify_video(video, cfg.tubelet, cfg.patch)
    pa = patchify_audio(audio, cfg.audio_patch)
    assert pv.shape == (B, cfg.num_video_tokens, cfg.video_patch_dim)
    assert pa.shape == (B, cfg.num_audio_tokens, cfg.audio_patch_dim)
    assert torch.equal(unpatchify_video(pv, cfg.video_grid, cfg.tubelet, cfg.patch), video)
    assert torch.equal(unpatchify_audio(pa, cfg.audio_grid, cfg.audio_patch), audio)
    # token i of the patch embedding sees exactly patch i: zero one patch, only its token moves
    model = make_model()
    tokens = model.video_encoder.patch_embed(video)
    pv[:, 5] = 0
    tokens2 = model.video_encoder.patch_embed(unpatchify_video(pv, cfg.video_grid, cfg.tubelet, cfg.patch))
    changed = (tokens - tokens2).abs().sum(dim=(0, 2)) > 0  # (L_v,)
    assert changed.nonzero().flatten().tolist() == [5]


def test_shapes_of_every_output():
    model = make_model()
    cfg = model.cfg
    video, audio = make_batch(cfg)
    out = model.pretrain_forward(video, audio, gen())
    lv, la = cfg.num_video_tokens, cfg.num_audio_tokens
    assert (lv, la) == (128, 160)
    assert out.pred_video.shape == out.target_video.shape == (B, lv, cfg.video_patch_dim)
    assert out.pred_audio.shape == out.target_audio.shape == (B, la, cfg.audio_patch_dim)
    assert out.mask_video.shape == (B, lv) and out.mask_audio.shape == (B, la)
    assert out.z_video.shape == out.z_audio.shape == (B, cfg.contrastive_dim)
    losses = model.losses_from_outputs(out)
    assert set(losses) == {"loss", "contrastive", "recon_video", "recon_audio", "adv_gen", "disc_loss", "cross_modal"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    emb = model.embed(video, audio)
    dv, da = cfg.video_width, cfg.audio_width
    expected = {"video": (B, dv), "a2v": (B, dv), "audio": (B, da), "v2a": (B, da)}
    assert {k: tuple(v.shape) for k, v in emb.items()} == expected
    assert model(video, audio).shape == (B,)
    with pytest.raises(ValueError, match="video must be"):
        model(video[:, :, :8], audio)


# ---------------------------------------------------------------- complementary masking
def test_slices_cover_time_in_order():
    video_slices = slice_ids(torch.arange(8), 8, 8)
    assert video_slices.tolist() == list(range(8))  # one tubelet step per slice
    # 20 audio time tokens over 8 slices, each slice a tubelet's span: half a frame before its index
    audio_slices = overlap_slices(torch.arange(20), 20, 8, frame_shift(16))
    assert torch.bincount(audio_slices).tolist() == [2, 2, 3, 2, 3, 2, 3, 3]
    assert (audio_slices.diff() >= 0).all()


def test_an_audio_token_shares_its_slice_with_the_frames_of_its_moment():
    """Frame k is shown at k / fps = 0.2 k s; a tubelet (frames 2i, 2i + 1) spans [0.4 i - 0.1, 0.4 i + 0.3) s.
    Audio token j spans [0.16 j, 0.16 j + 0.16) s: its slice is the tubelet holding its centre."""
    model = make_model()
    audio_time = model.audio_encoder.token_time()  # (L_a,)
    centre_s = (audio_time + 0.5) * 0.16
    expected = ((centre_s + 0.1) / 0.4).floor().long().clamp(max=7)
    assert torch.equal(model.audio_slices, expected)


def test_masks_are_complementary_per_sample():
    model = make_model()
    k = model.cfg.num_slices
    slice_mask, mask_v, mask_a = model.sample_masks(16, gen(3))
    assert (slice_mask.sum(dim=1) == k // 2).all()
    for b in range(16):
        hidden_v = set(model.video_slices[mask_v[b]].tolist())
        hidden_a = set(model.audio_slices[mask_a[b]].tolist())
        assert hidden_v.isdisjoint(hidden_a) and hidden_v | hidden_a == set(range(k))
        assert len(hidden_v) == len(hidden_a) == k // 2
        # a token is hidden iff its slice is: nothing partial
        assert set(model.video_slices[~mask_v[b]].tolist()) == hidden_a
        assert set(model.audio_slices[~mask_a[b]].tolist()) == hidden_v
    assert len({tuple(row.tolist()) for row in slice_mask}) > 1  # masks differ across samples


def test_masking_is_deterministic_under_a_seeded_generator():
    draw = lambda seed: complementary_slice_mask(8, 8, generator=gen(seed))  # noqa: E731
    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))
    model = make_model()
    video, audio = make_batch(model.cfg)
    first, second = model.pretrain_losses(video, audio, gen(7)), model.pretrain_losses(video, audio, gen(7))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["recon_video"], model.pretrain_losses(video, audio, gen(8))["recon_video"])


# ---------------------------------------------------------------- losses
def test_only_hidden_patches_are_scored():
    model = make_model()
    video, audio = make_batch(model.cfg)
    out = model.pretrain_forward(video, audio, gen())
    base = model.losses_from_outputs(out)
    visible_v, visible_a = ~out.mask_video[..., None], ~out.mask_audio[..., None]
    scrambled = dataclasses.replace(
        out,
        pred_video=torch.where(visible_v, out.pred_video + 100.0, out.pred_video),
        pred_audio=torch.where(visible_a, out.pred_audio - 100.0, out.pred_audio),
        target_video=torch.where(visible_v, torch.zeros_like(out.target_video), out.target_video),
    )
    after = model.losses_from_outputs(scrambled)
    for key in ("recon_video", "recon_audio", "adv_gen", "disc_loss"):
        torch.testing.assert_close(after[key], base[key])
    hidden_changed = dataclasses.replace(out, pred_video=torch.where(visible_v, out.pred_video, out.pred_video + 1.0))
    assert model.losses_from_outputs(hidden_changed)["recon_video"] > base["recon_video"]


def test_masked_mse_and_info_nce_values():
    pred, target = torch.zeros(1, 4, 3), torch.ones(1, 4, 3)
    target[0, :2] = 5.0
    assert masked_mse(pred, target, torch.tensor([[False, False, True, True]])).item() == 1.0
    z = torch.eye(4)
    aligned = info_nce(z, z, torch.tensor(2.0))
    shuffled = info_nce(z, z.roll(1, dims=0), torch.tensor(2.0))
    assert aligned < shuffled


def test_gradients_reach_both_encoders_from_every_term():
    model = make_model()
    video, audio = make_batch(model.cfg)
    losses = model.pretrain_losses(video, audio, gen())
    encoders = {"video": list(model.video_encoder.parameters()), "audio": list(model.audio_encoder.parameters())}
    for term in TERMS:
        for name, params in encoders.items():
            grads = torch.autograd.grad(losses[term], params, retain_graph=True, allow_unused=True)
            total = sum(g.abs().sum() for g in grads if g is not None)
            assert total > 0, f"{term} does not reach the {name} encoder"


def test_adversarial_terms_train_only_their_side():
    model = make_model()
    video, audio = make_batch(model.cfg)
    losses = model.pretrain_losses(video, audio, gen())
    gen_params, disc_params = model.generator_parameters(), model.discriminator_parameters()
    d_grads = torch.autograd.grad(losses["disc_loss"], gen_params + disc_params, retain_graph=True, allow_unused=True)
    assert all(g is None for g in d_grads[: len(gen_params)])  # nothing flows into the generator
    assert all(g is not None for g in d_grads[len(gen_params) :])
    g_grads = torch.autograd.grad(losses["loss"], disc_params, allow_unused=True)
    assert all(g is None for g in g_grads)  # the generator loss never trains the discriminators


def test_parameter_groups_partition_the_model():
    for head in list_heads():
        model = make_model(fusion=head)
        ids = lambda ps: {id(p) for p in ps}  # noqa: E731
        g, d = ids(model.generator_parameters()), ids(model.discriminator_parameters())
        h = ids(model.head.parameters()) | ids(p for n, p in model.named_parameters() if n.startswith(SIGNAL_PREFIXES))
        assert g.isdisjoint(d) and g.isdisjoint(h) and d.isdisjoint(h)
        assert g | d | h == ids(model.parameters())
        enc = ids(p for m in (model.video_encoder, model.audio_encoder, model.a2v, model.v2a) for p in m.parameters())
        assert ids(model.classifier_parameters()) == enc | h


def smooth_batch(cfg, batch: int = B, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-frequency inputs: learnable in a few steps, unlike white noise."""
    g = torch.Generator().manual_seed(seed)
    size = (cfg.num_frames, cfg.img_size, cfg.img_size)
    video = F.interpolate(torch.randn(batch, 3, 4, 4, 4, generator=g), size=size, mode="trilinear")
    audio = F.interpolate(torch.randn(batch, 1, 8, 10, generator=g), size=(cfg.n_mels, cfg.mel_frames), mode="bilinear")
    return video, audio


def test_overfits_a_fixed_tiny_batch():
    model = make_model()
    video, audio = smooth_batch(model.cfg)
    opt_g = torch.optim.Adam(model.generator_parameters(), lr=2e-3)
    opt_d = torch.optim.Adam(model.discriminator_parameters(), lr=2e-3)
    history = []
    for _ in range(30):
        losses = model.pretrain_losses(video, audio, gen(0))  # fixed batch, fixed masks
        opt_g.zero_grad(), opt_d.zero_grad()
        (losses["loss"] + losses["disc_loss"]).backward()  # valid: the two sides share no gradient
        opt_g.step(), opt_d.step()
        assert all(torch.isfinite(v) for v in losses.values())
        history.append({k: v.item() for k, v in losses.items()})
    first, last = history[0], history[-1]
    assert last["loss"] < 0.6 * first["loss"]
    assert last["recon_video"] < 0.9 * first["recon_video"] and last["recon_audio"] < 0.5 * first["recon_audio"]
    assert last["contrastive"] < 0.1 * first["contrastive"]


def test_masked_contrastive_and_normalised_targets():
    model = make_model(contrastive_on_masked=True, norm_pix_loss=True, w_cross=0.0)  # w_cross needs the unmasked pass
    video, audio = make_batch(model.cfg)
    out = model.pretrain_forward(video, audio, gen())
    torch.testing.assert_close(out.target_video.mean(-1), torch.zeros(B, model.cfg.num_video_tokens), atol=1e-5, rtol=0)
    # pooled from visible tokens only: the masked pass alone, no second encoder pass
    calls = []
    model.video_encoder.register_forward_hook(lambda *args: calls.append(1))
    losses = model.losses_from_outputs(model.pretrain_forward(video, audio, gen()))
    assert len(calls) == 1 and torch.isfinite(losses["contrastive"])
    losses["loss"].backward()
    assert model.video_proj.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- stage 2 heads
@pytest.mark.parametrize("head", list_heads())
def test_every_head_gives_one_logit_per_sample_and_trains(head):
    model = make_model(fusion=head)
    video, audio = make_batch(model.cfg)
    logits = model(video, audio)
    assert logits.shape == (B,) and torch.isfinite(logits).all()
    torch.testing.assert_close(model.classify(video, audio), logits)
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 1.0])).backward()
    assert all(p.grad is not None for p in model.head.parameters())


@pytest.mark.parametrize(("head", "ignored"), [("video_only", "audio"), ("audio_only", "video")])
def test_single_modality_heads_ignore_the_other_input(head, ignored):
    model = make_model(fusion=head).eval()
    video, audio = make_batch(model.cfg)
    other_video, other_audio = make_batch(model.cfg, seed=1)
    with torch.no_grad():
        base = model(video, audio)
        if ignored == "audio":
            assert torch.equal(model(video, other_audio), base)
            assert not torch.allclose(model(other_video, audio), base)
        else:
            assert torch.equal(model(other_video, audio), base)
            assert not torch.allclose(model(video, other_audio), base)


def test_all_required_heads_are_registered():
    assert set(list_heads()) == {"avff_concat", "avff_agree", "avff_sync", "avff_xmodal", "attention", "late", "video_only",
                                 "audio_only", "signals_only"}  # fmt: skip


def test_the_signals_only_head_is_the_signal_branches_plus_a_bias():
    model = make_model(fusion="signals_only", texture_branch=False).eval()
    video, audio = make_batch(model.cfg)
    with torch.no_grad():
        feats = model.forward_features(video, audio, model.inputs)
        branch = model.signal_head(feats["signals"]).squeeze(-1)
        torch.testing.assert_close(model(video, audio), branch + model.head.bias)
    assert model.signals is not None and sum(p.numel() for p in model.head.parameters()) == 1


# ---------------------------------------------------------------- weights
def test_pretrained_encoders_round_trip_through_safetensors(tmp_path, caplog):
    source, target = make_model(seed=0), make_model(seed=1)
    path = tmp_path / "encoders.safetensors"
    source.save_pretrained_encoders(path)
    head_before = {k: v.clone() for k, v in target.head.state_dict().items()}
    report = target.load_pretrained_encoders(path, strict=True)
    assert report.missing == [] and report.unexpected == [] and len(report.loaded) > 0
    for key, value in source.encoder_state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    assert all(torch.equal(v, target.head.state_dict()[k]) for k, v in head_before.items())  # untouched
    video, audio = make_batch(source.cfg)
    torch.testing.assert_close(target.embed(video, audio)["video"], source.embed(video, audio)["video"])

    # a partial file with a stray key: reported (and logged), raises only when strict
    state = load_file(str(path))
    state.pop("a2v.proj.weight")
    state["text_encoder.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "partial.safetensors"))
    report = target.load_pretrained_encoders(tmp_path / "partial.safetensors")
    assert report.missing == ["a2v.proj.weight"] and report.unexpected == ["text_encoder.weight"]
    assert "a2v.proj.weight" in caplog.text
    with pytest.raises(KeyError, match="a2v.proj.weight"):
        target.load_pretrained_encoders(tmp_path / "partial.safetensors", strict=True)

    # wrong shapes always raise; a missing file is never downloaded
    state = load_file(str(path))
    state["video_encoder.norm.weight"] = torch.zeros(3)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="video_encoder.norm.weight"):
        target.load_pretrained_encoders(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError):
        target.load_pretrained_encoders(tmp_path / "absent.safetensors")


def test_package_imports_no_orchestration_libraries():
    for path in Path(avff_model.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] in {"prefect", "ray", "mlflow"} for n in names), path


# ---------------------------------------------------------------- time alignment and lip sync
def test_cross_modal_maps_start_time_aligned():
    """A2V's token map starts as the time-overlap average: a constant audio column lands at its time."""
    model = make_model()
    ve, ae = model.video_encoder, model.audio_encoder
    align = time_overlap(
        ve.token_time(), ve.num_time, ae.token_time(), ae.num_time, out_shift=frame_shift(model.cfg.num_frames)
    )  # (L_v, L_a)
    torch.testing.assert_close(align.sum(dim=1), torch.ones(align.shape[0]))
    torch.testing.assert_close(model.a2v.token_map.weight, align)
    # video step 0 (frames 0, 1 at 0 s and 0.2 s) covers [-0.1, 0.3) s, cut to [0, 0.3):
    # audio columns 0 ([0, 0.16) s) fully and column 1 ([0.16, 0.32) s) for 0.14 s
    row = align[0][ae.token_time() < 3].reshape(-1, 3)[0]  # one frequency row, columns 0..2
    torch.testing.assert_close(row / row.sum(), torch.tensor([16 / 30, 14 / 30, 0.0]))
    assert (align[0][ae.token_time() >= 2] == 0).all()


def test_cross_modal_maps_pair_a_tubelet_with_the_sound_around_its_frames():
    """A2V's initial map weighs audio columns centred on the tubelet's frames (2i and 2i + 1, shown at
    0.4 i and 0.4 i + 0.2 s): the weighted mean time is 0.4 i + 0.1 s, not the 0.4 i + 0.2 s of a
    span starting at the first frame. V2A is the same pairing seen from the audio side."""
    model = make_model()
    ve, ae = model.video_encoder, model.audio_encoder
    weights = model.a2v.token_map.weight.detach()  # (L_v, L_a)
    centre_s = (weights @ ((ae.token_time().float() + 0.5) * 0.16))[ve.token_time() == 3]  # step 3, interior
    # (token centres, not the overlapping parts' centres: within 0.01 s; the old pairing sat 0.1 s late)
    torch.testing.assert_close(centre_s, torch.full_like(centre_s, 0.4 * 3 + 0.1), atol=0.01, rtol=0)
    v2a = model.v2a.token_map.weight.detach()  # (L_a, L_v)
    step_of_audio = (v2a.reshape(ae.num_tokens, -1, ve.num_tokens // ve.num_time).sum(-1)).argmax(1)
    assert torch.equal(step_of_audio, model.audio_slices)  # each audio token leans on its own slice's tubelet


def test_concat_head_compares_modalities_token_by_token():
    """Same per-modality averages, different pairing over time -> different logits (pooling first could not tell)."""
    head = build_head("avff_concat", video_width=4, audio_width=4, hidden=16, heads=1, dropout=0.0)
    t = torch.arange(8.0)[None, :, None].repeat(1, 1, 4)  # (1, 8, 4) a ramp over time
    in_sync = {"video": t, "a2v": t, "audio": t, "v2a": t}
    shuffled = {"video": t, "a2v": t.flip(1), "audio": t, "v2a": t.flip(1)}  # same means, other order
    assert not torch.allclose(head(in_sync), head(shuffled))


def test_sync_candidates_are_contiguous_windows_with_the_same_blank_edges():
    audio = torch.arange(320.0).expand(2, 1, 128, 320)  # mel frame index as the value
    cands = sync_candidates(audio, 8, (2, 6), (-2, 1))  # slices of 40 frames
    assert cands.shape == (3, 2, 1, 128, 320)
    assert (cands[..., :80] == 0).all() and (cands[..., 240:] == 0).all()
    for n, d in enumerate((0, -2, 1)):
        torch.testing.assert_close(cands[n, 0, 0, 0, 80:240], torch.arange(80.0, 240.0) + 40 * d)
    with pytest.raises(ValueError, match="leaves the clip"):
        sync_candidates(audio, 8, (2, 6), (-3,))


def test_sync_nce_scores_the_in_sync_candidate():
    zv = torch.randn(3, 4, 8)
    chance = sync_nce(zv, zv, torch.stack([zv, zv]), torch.tensor(0.0))
    assert chance.item() == pytest.approx(math.log(3), abs=1e-5)  # three identical candidates
    good = sync_nce(zv, zv, torch.stack([-zv, -zv]), torch.tensor(math.log(10.0)))
    bad = sync_nce(zv, -zv, torch.stack([zv, -zv]), torch.tensor(math.log(10.0)))
    assert good.item() < 1e-3 < math.log(3) < bad.item()


def test_sync_loss_is_added_only_when_weighted_and_trains_both_encoders():
    video, audio = make_batch(get_config("tiny"))
    assert "sync" not in make_model().pretrain_losses(video, audio, gen())
    model = make_model(w_sync=1.0)
    losses = model.pretrain_losses(video, audio, gen())
    assert math.isfinite(losses["sync"].item())
    model.zero_grad()
    losses["sync"].backward()
    for enc in (model.video_encoder, model.audio_encoder):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


def test_sync_features_compare_own_audio_with_moved_copies():
    model = make_model(fusion="avff_sync").eval()
    video, audio = make_batch(model.cfg)
    with torch.no_grad():
        feats = model.forward_features(video, audio, ("sync",))
        sync = feats["sync"]  # (B, 2N + 1): own, N copies, own minus each copy
        n = (sync.shape[1] - 1) // 2
        assert sync.shape == (B, 9) and n == 4
        assert (sync[:, : n + 1].abs() <= 1 + 1e-5).all()
        torch.testing.assert_close(sync[:, n + 1 :], sync[:, :1] - sync[:, 1 : n + 1])
        assert model(video, audio).shape == (B,)
    # the projections the scores live in travel with the pretrained encoders
    assert {"video_proj.weight", "audio_proj.weight", "logit_scale"} <= set(model.encoder_state_dict())


# ---------------------------------------------------------------- cross-modal target (w_cross, ours)
def test_cross_modal_loss_trains_the_predictions_never_the_targets():
    model = make_model()
    video, audio = make_batch(model.cfg)
    out = model.pretrain_forward(video, audio, gen())
    loss = model.losses_from_outputs(out)["cross_modal"]
    expected = cross_modal_loss(out.a2v_full, out.video_full) + cross_modal_loss(out.v2a_full, out.audio_full)
    torch.testing.assert_close(loss, expected)
    # stop-gradient: the A2V term moves its prediction, never its target (video reaches it only via V2A)
    a2v_term = cross_modal_loss(out.a2v_full, out.video_full)
    g_target, g_pred = torch.autograd.grad(a2v_term, [out.video_full, out.a2v_full], allow_unused=True)
    assert g_target is None and g_pred.abs().sum() > 0
    assert cross_modal_loss(out.video_full, out.video_full).item() == pytest.approx(0.0, abs=1e-5)
    off = make_model(w_cross=0.0).pretrain_losses(video, audio, gen())
    assert "cross_modal" not in off


def test_cross_modal_loss_falls_when_trained_on_a_fixed_batch():
    model = make_model(w_contrastive=0.0, w_recon=0.0, w_adv=0.0)
    video, audio = make_batch(model.cfg)
    opt = torch.optim.Adam(model.generator_parameters(), lr=1e-3)
    first = None
    for _ in range(15):
        loss = model.pretrain_losses(video, audio, gen())["cross_modal"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_xmodal_features_and_head_read_the_cross_modal_errors():
    model = make_model(fusion="avff_xmodal").eval()
    video, audio = make_batch(model.cfg)
    with torch.no_grad():
        feats = model.forward_features(video, audio, model.inputs)
        dist_v, dist_a = model.cross_modal_distances(feats)
        assert dist_v.shape == (B, model.cfg.num_video_tokens) and dist_a.shape == (B, model.cfg.num_audio_tokens)
        x = feats["xmodal"]  # (B, 6): video mean, max, std over slices, then audio's
        assert x.shape == (B, 6)
        torch.testing.assert_close(x[:, 0], dist_v.mean(dim=1))  # equal slices: mean of slice means
        assert (x[:, 1] >= x[:, 0]).all() and (x[:, 4] >= x[:, 3]).all()
        torch.testing.assert_close(model.cross_modal_error(video, audio), 0.5 * (dist_v.mean(1) + dist_a.mean(1)))
        a = model(video, audio)
        b = model.forward_head({**feats, "xmodal": feats["xmodal"] + 1.0})
        assert a.shape == (B,) and not torch.allclose(a, b)  # the head reads the errors
