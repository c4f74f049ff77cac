"""Closed-form size estimates for a config, without building the model.

:func:`estimate_params` is exact (a test checks it against ``AVFF(cfg)`` for every preset
and head). :func:`estimate_activation_bytes` is a rough model of the memory a training step
(stage 1 and stage 2, signal branches included) keeps for backward under 16-bit autocast;
see docs/model.md.
"""

from __future__ import annotations

from .config import AVFFConfig
from .fusion import SYNC_FEATURES, SYNC_SHIFTS, XMODAL_FEATURES
from .signals import LIP_CHANNELS, MOUTH_GRID, PEAK_FEATURES


def _block(d: int, mlp_ratio: float) -> int:
    h = int(d * mlp_ratio)
    return 4 * d * d + 2 * d * h + 9 * d + h  # 2 LayerNorms, qkv, proj, fc1, fc2


def _mlp_head(d_in: int, hidden: int) -> int:
    if hidden == 0:
        return 2 * d_in + d_in + 1  # LayerNorm, Linear(d_in, 1)
    return 2 * d_in + d_in * hidden + hidden + hidden + 1  # LayerNorm, Linear, Linear(hidden, 1)


def _token_mlp(d_in: int, hidden: int) -> int:
    return 2 * d_in + d_in * hidden + hidden  # LayerNorm, Linear


def _head(cfg: AVFFConfig) -> int:
    dv, da, h = cfg.video_width, cfg.audio_width, cfg.head_hidden
    return {
        "avff_concat": _token_mlp(2 * dv, h) + _token_mlp(2 * da, h) + _mlp_head(2 * h, h),
        "avff_sync": _token_mlp(2 * dv, h) + _token_mlp(2 * da, h) + _mlp_head(2 * h + SYNC_FEATURES, h),
        "avff_xmodal": _token_mlp(2 * dv, h) + _token_mlp(2 * da, h) + _mlp_head(2 * h + XMODAL_FEATURES, h),
        # avff_concat + two TemporalAgreement (own and cross projections to h/4), lags -1, 0, 1
        "avff_agree": _token_mlp(2 * dv, h)
        + _token_mlp(2 * da, h)
        + 2 * _token_mlp(dv, max(h // 4, 4))
        + 2 * _token_mlp(da, max(h // 4, 4))
        + _mlp_head(2 * h + 12 * max(h // 4, 4), h),
        "attention": (dv + 1) * h + (da + 1) * h + 3 * h + _block(h, 4.0) + 2 * h + h + 1,
        "late": _mlp_head(dv, h) + _mlp_head(da, h),
        "video_only": _mlp_head(dv, h),
        "audio_only": _mlp_head(da, h),
        "signals_only": 1,
    }[cfg.fusion]


def _signals(cfg: AVFFConfig) -> int:
    """The signal branches (avff_model/signals.py) the head's modalities allow, and their logit MLP."""
    sees_video, sees_audio = cfg.fusion != "audio_only", cfg.fusion != "video_only"
    sync, texture = cfg.sync_branch and sees_video and sees_audio, cfg.texture_branch and sees_video
    mouth, hidden, dim, lags, filters = MOUTH_GRID[0] * MOUTH_GRID[1], 32, 16, 3, 8  # SyncBranch/TextureBranch defaults
    n, out = 0, 0
    if sync:
        if cfg.sync_pixels:
            n += (mouth + 1) * hidden + hidden * dim + (cfg.n_mels + 1) * hidden + hidden * dim  # last layers: no bias
            out += 2 * lags + 1 + dim
        if cfg.sync_lips:  # each lip channel's lagged correlation with the loudness: no weights
            out += (LIP_CHANNELS * (2 * lags + 1) if cfg.sync_lip_lags else 0) + (PEAK_FEATURES if cfg.sync_peak else 0)
    if texture:
        banks = (1, 3) if cfg.texture_colour else (1,)  # input channels: the grey bank's, the colour bank's
        n, out = n + sum(9 * c * filters for c in banks), out + 3 * filters * len(banks) + 3
    return n + _mlp_head(out, cfg.signal_head_hidden) if out else 0


def estimate_params(cfg: AVFFConfig) -> dict[str, int]:
    """Parameter counts per component and their "total"."""
    r, lv, la, dv, da = cfg.mlp_ratio, cfg.num_video_tokens, cfg.num_audio_tokens, cfg.video_width, cfg.audio_width
    wd, e, hd = cfg.decoder_width, cfg.contrastive_dim, cfg.disc_hidden

    def encoder(in_vol: int, d: int, depth: int) -> int:
        return in_vol * d + d + d + depth * _block(d, r) + 2 * d  # patch conv, mask token, blocks, norm

    def cross(l_in: int, l_out: int, d_in: int, d_out: int) -> int:
        return _block(d_in, r) + (l_in + 1) * l_out + (d_in + 1) * d_out

    def decoder(d_enc: int, p: int) -> int:
        return (d_enc + 1) * wd + cfg.decoder_depth * _block(wd, r) + 2 * wd + (wd + 1) * p

    def disc(p: int) -> int:
        return (p + 1) * hd + (hd + 1) * hd + hd + 1

    counts = {
        "video_encoder": encoder(cfg.video_patch_dim, dv, cfg.video_depth),
        "audio_encoder": encoder(cfg.audio_patch_dim, da, cfg.audio_depth),
        "a2v": cross(la, lv, da, dv),
        "v2a": cross(lv, la, dv, da),
        "video_decoder": decoder(dv, cfg.video_patch_dim),
        "audio_decoder": decoder(da, cfg.audio_patch_dim),
        "contrastive": (dv + 1) * e + (da + 1) * e + int(cfg.learn_temperature),
        "discriminators": disc(cfg.video_patch_dim) + disc(cfg.audio_patch_dim),
        "head": _head(cfg),
        "signals": _signals(cfg),
    }
    counts["total"] = sum(counts.values())
    return counts


def _stack_bytes(tokens: int, width: int, depth: int, mlp_ratio: float) -> int:
    """Bytes kept for backward by ``depth`` blocks over ``tokens`` tokens (all samples).

    Per token and block under 16-bit autocast with fp32 weights: the fp32 residual into
    each LayerNorm (2 x 4D), 16-bit inputs of qkv/proj/fc1 (3 x 2D), q, k, v and the
    attention output (4 x 2D), fc1 output and GELU output (2 x 2 * mlp_ratio * D).
    Flash / memory-efficient attention keeps no (L, L) matrix.
    """
    per_token = (8 + 6 + 8 + 4 * mlp_ratio) * width
    return int(per_token * tokens * depth)


def _signals_bytes(cfg: AVFFConfig, batch: int) -> int:
    """Bytes the signal branches (avff_model/signals.py) hold at their peak in a stage-2 step.

    They work on full frames, so they grow with the pixels, not the tokens. Texture, per pixel
    of every frame: the filter bank's 16-bit input (2), the fp32 copy of its K outputs that
    ``pow`` keeps (4K; autocast runs ``pow`` in fp32), the squared energies and one masked copy
    alive together (8K); with ``texture_colour`` the colour bank again, on the frames and their brightness-free
    copy (fp32, 24 more). Sync: the fp32 grey frames the mouth is cut from (4), then per frame a
    few hundred numbers (the pooled mouth, the mel bins, the two MLPs).
    """
    sees_video, sees_audio = cfg.fusion != "audio_only", cfg.fusion != "video_only"
    pixels = batch * cfg.num_frames * cfg.img_size**2
    out = 0
    if cfg.texture_branch and sees_video:
        filters = 8  # TextureBranch's default
        out += pixels * (2 + 12 * filters) + (pixels * (24 + 12 * filters) if cfg.texture_colour else 0)
    if cfg.sync_branch and sees_video and sees_audio:
        hidden, dim = 32, 16  # SyncBranch's defaults
        out += 4 * pixels + 4 * batch * cfg.num_frames * (
            MOUTH_GRID[0] * MOUTH_GRID[1]
            + cfg.n_mels
            + 2 * hidden
            + 2 * dim
            + (3 * LIP_CHANNELS + 1 if cfg.sync_lips else 0)
        )
    return out


def estimate_activation_bytes(cfg: AVFFConfig, batch: int) -> dict[str, int]:
    """Rough bytes of activations a training step keeps for backward (16-bit autocast).

    Stage 1 (the keys ``video_encoder`` .. ``decoders``, summed in ``stage1``): the masked pass,
    the unmasked pass when the contrastive, sync or cross-modal term needs it, A2V/V2A (twice
    with ``w_cross``), the moved audio copies of ``w_sync``, the decoders. Stage 2 (``stage2``):
    one unmasked pass of the encoders the head sees, A2V/V2A where the head uses them, the moved
    audio copies of ``avff_sync``, and the signal branches (``signals``), which work on full
    frames. ``total`` is the larger stage: the two never run at once. Counts the transformer
    stacks and the branches; patch embeddings, targets, heads and losses add a few percent.
    Add ~16 bytes per parameter for fp32 weights, gradients and Adam state, plus the
    framework's own workspace.
    """
    lv, la, r = batch * cfg.num_video_tokens, batch * cfg.num_audio_tokens, cfg.mlp_ratio
    n_moved = len(SYNC_SHIFTS)
    unmasked = not cfg.contrastive_on_masked or cfg.w_sync > 0 or cfg.w_cross > 0  # model.pretrain_outputs
    passes = 2 if unmasked else 1
    video = lambda n: n * _stack_bytes(lv, cfg.video_width, cfg.video_depth, r)  # noqa: E731  n passes
    audio = lambda n: n * _stack_bytes(la, cfg.audio_width, cfg.audio_depth, r)  # noqa: E731
    cross = _stack_bytes(la, cfg.audio_width, 1, r) + _stack_bytes(lv, cfg.video_width, 1, r)
    out = {
        "video_encoder": video(passes),
        "audio_encoder": audio(passes + (n_moved + 1 if cfg.w_sync > 0 else 0)),
        "a2v_v2a": cross * (2 if cfg.w_cross > 0 else 1),
        "decoders": _stack_bytes(lv + la, cfg.decoder_width, cfg.decoder_depth, r),
    }
    out["stage1"] = sum(out.values())
    sees_video, sees_audio = cfg.fusion != "audio_only", cfg.fusion != "video_only"
    out["signals"] = _signals_bytes(cfg, batch)
    out["stage2"] = (
        video(int(sees_video)) + audio(int(sees_audio) + (n_moved + 1 if cfg.fusion == "avff_sync" else 0))
        + (cross if cfg.fusion in ("avff_concat", "avff_sync", "avff_xmodal") else 0) + out["signals"]
    )  # fmt: skip
    out["total"] = max(out["stage1"], out["stage2"])
    return out
