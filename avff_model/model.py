"""AVFF: the two-stage audio-visual model (Oorloff et al., CVPR 2024).

Stage 1 (:meth:`AVFF.pretrain_losses`): complementary slice masking, encoders, A2V/V2A
fusion, per-modality decoders; contrastive + masked reconstruction + adversarial losses.
Stage 2 (:meth:`AVFF.forward`): unmasked encoders (+ A2V/V2A) -> fusion head -> (B,) logits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.func import functional_call

from . import losses as L
from .audio_encoder import AudioEncoder
from .config import AVFFConfig
from .decoders import Decoder
from .fusion import (
    SYNC_SHIFTS,
    SYNC_WINDOW,
    CrossModalMap,
    complementary_slice_mask,
    cross_modal_stats,
    frame_shift,
    fuse_tokens,
    overlap_slices,
    slice_ids,
    slice_pool,
    sync_candidates,
    time_overlap,
    token_masks,
)
from .heads import BranchHeads, PatchDiscriminator, build_head, mlp_head, noisy_or
from .layers import init_weights
from .readout import Readout
from .signals import SignalFeatures
from .video_encoder import VideoEncoder

log = logging.getLogger(__name__)

ENCODER_PREFIXES = ("video_encoder.", "audio_encoder.", "a2v.", "v2a.")
DISCRIMINATOR_PREFIXES = ("video_disc.", "audio_disc.")
HEAD_PREFIX = "head."
AUX_PREFIX = "aux_heads."
BRANCH_PREFIX = "logit_"  # forward_with_features: the logits the model's own joins
SIGNAL_PREFIXES = ("signals.", "signal_head.")  # the signal branches (avff_model/signals.py): stage 2 only
CONTRASTIVE_PREFIXES = ("video_proj.", "audio_proj.", "logit_scale")
FEATURES = ("video", "audio", "a2v", "v2a")
_NEEDS = {"video": {"video", "v2a", "sync", "xmodal"}, "audio": {"audio", "a2v", "xmodal"},
          "a2v": {"a2v", "xmodal"}, "v2a": {"v2a", "xmodal"}}  # fmt: skip


@dataclass
class PretrainOutputs:
    """Everything one masked stage-1 pass produces (targets already normalised if configured)."""

    pred_video: torch.Tensor  # (B, L_v, P_v)
    pred_audio: torch.Tensor  # (B, L_a, P_a)
    target_video: torch.Tensor  # (B, L_v, P_v)
    target_audio: torch.Tensor  # (B, L_a, P_a)
    mask_video: torch.Tensor  # (B, L_v) bool, True = hidden from the video encoder
    mask_audio: torch.Tensor  # (B, L_a) bool, True = hidden from the audio encoder
    slice_mask: torch.Tensor  # (B, K) bool, True = slice hidden from video
    z_video: torch.Tensor  # (B, E) contrastive embeddings
    z_audio: torch.Tensor  # (B, E)
    zs_video: torch.Tensor | None = None  # (B, K', E) SYNC_WINDOW slices of the unmasked pass (w_sync > 0)
    zs_audio: torch.Tensor | None = None  # (B, K', E) the same slices' audio alone (sync_candidates)
    zs_audio_shifted: torch.Tensor | None = None  # (N, B, K', E) the clip's audio moved by SYNC_SHIFTS
    # the unmasked pass and its cross-modal predictions (w_cross > 0)
    video_full: torch.Tensor | None = None  # (B, L_v, D_v)
    audio_full: torch.Tensor | None = None  # (B, L_a, D_a)
    a2v_full: torch.Tensor | None = None  # (B, L_v, D_v) A2V of the unmasked audio
    v2a_full: torch.Tensor | None = None  # (B, L_a, D_a) V2A of the unmasked video


@dataclass
class EncoderLoadReport:
    loaded: list[str]
    missing: list[str]  # encoder keys of the model absent from the file (left as initialised)
    unexpected: list[str]  # keys in the file the model has no use for (ignored)


def signal_head(signals: SignalFeatures, cfg: AVFFConfig) -> nn.Module:
    """The head over the signal branches' features: (B, S) -> (B, 1) for ``signal_fusion="sum"``, (B, K) one
    logit per branch (sync, then texture) for "noisy_or"."""
    if cfg.signal_fusion == "noisy_or":
        dims = [b.out_dim for b in (signals.sync, signals.texture) if b is not None]
        return BranchHeads(dims, cfg.signal_head_hidden, cfg.dropout, norm=cfg.signal_norm)
    return mlp_head(signals.out_dim, cfg.signal_head_hidden, cfg.dropout, norm=cfg.signal_norm)


def _frozen_call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with its parameters detached: gradients reach ``x`` but not ``module``."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return functional_call(module, params, (x,))


class AVFF(nn.Module):
    def __init__(self, cfg: AVFFConfig):
        super().__init__()
        self.cfg = cfg
        dv, da, lv, la = cfg.video_width, cfg.audio_width, cfg.num_video_tokens, cfg.num_audio_tokens
        self.video_encoder = VideoEncoder(
            cfg.img_size, cfg.num_frames, cfg.tubelet, cfg.patch, dv, cfg.video_depth, cfg.video_heads,
            cfg.mlp_ratio, cfg.dropout,
        )  # fmt: skip
        self.audio_encoder = AudioEncoder(
            cfg.n_mels, cfg.mel_frames, cfg.audio_patch, da, cfg.audio_depth, cfg.audio_heads,
            cfg.mlp_ratio, cfg.dropout,
        )  # fmt: skip
        ve, ae = self.video_encoder, self.audio_encoder
        v_time, a_time = (ve.token_time(), ve.num_time), (ae.token_time(), ae.num_time)
        shift = frame_shift(cfg.num_frames)  # the video grid starts half a frame before the mel start
        a2v_align = time_overlap(*v_time, *a_time, out_shift=shift)  # (L_v, L_a)
        v2a_align = time_overlap(*a_time, *v_time, in_shift=shift)  # (L_a, L_v)
        self.a2v = CrossModalMap(la, lv, da, dv, cfg.audio_heads, cfg.mlp_ratio, cfg.dropout, a2v_align)
        self.v2a = CrossModalMap(lv, la, dv, da, cfg.video_heads, cfg.mlp_ratio, cfg.dropout, v2a_align)
        dec = (cfg.decoder_width, cfg.decoder_depth, cfg.decoder_heads)
        self.video_decoder = Decoder(cfg.video_grid, dv, *dec, cfg.video_patch_dim, cfg.mlp_ratio, cfg.dropout)
        self.audio_decoder = Decoder(cfg.audio_grid, da, *dec, cfg.audio_patch_dim, cfg.mlp_ratio, cfg.dropout)
        self.video_proj = nn.Linear(dv, cfg.contrastive_dim)
        self.audio_proj = nn.Linear(da, cfg.contrastive_dim)
        self.video_proj.apply(init_weights)
        self.audio_proj.apply(init_weights)
        scale = torch.tensor(1.0 / cfg.temperature).log()
        if cfg.learn_temperature:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)
        self.video_disc = PatchDiscriminator(cfg.video_patch_dim, cfg.disc_hidden)
        self.audio_disc = PatchDiscriminator(cfg.audio_patch_dim, cfg.disc_hidden)
        self.head = build_head(
            cfg.fusion, video_width=dv, audio_width=da, hidden=cfg.head_hidden, heads=cfg.head_heads,
            dropout=cfg.dropout,
        )  # fmt: skip
        if hasattr(self.head, "bind_time"):  # heads that regroup tokens by time (avff_agree); CPU: works on "meta"
            (_, gh, gw), (_, tm) = cfg.video_grid, cfg.audio_grid
            self.head.bind_time(torch.arange(lv, device="cpu") // (gh * gw), torch.arange(la, device="cpu") % tm)
        seen = set(self.head.inputs)
        sync, texture = cfg.sync_branch and {"video", "audio"} <= seen, cfg.texture_branch and "video" in seen
        self.signals = (
            SignalFeatures(
                cfg.n_mels,
                sync=sync,
                texture=texture,
                lips=cfg.sync_lips,
                peak=cfg.sync_peak,
                pixels=cfg.sync_pixels,
                lip_lags=cfg.sync_lip_lags,
                colour=cfg.texture_colour,
            )
            if sync or texture
            else None
        )
        self.signal_head = signal_head(self.signals, cfg) if self.signals else None
        self.inputs = (*self.head.inputs, "signals") if self.signals else self.head.inputs
        self.readout: Readout | None = None  # fitted after training (avff_model/readout.py); None: join_logits
        # uni-modal heads whose losses regularise stage 2 (never part of forward's logit)
        self.aux_heads = nn.ModuleDict({
            m: build_head(f"{m}_only", video_width=dv, audio_width=da, hidden=cfg.head_hidden, heads=cfg.head_heads,
                          dropout=cfg.dropout)
            for m in ("video", "audio")
        }) if cfg.aux_heads else None  # fmt: skip
        k = cfg.num_slices
        self.register_buffer("video_slices", slice_ids(ve.token_time(), ve.num_time, k), persistent=False)  # (L_v,)
        audio_slices = overlap_slices(ae.token_time(), ae.num_time, k, shift)  # (L_a,) the slice of the same moment
        self.register_buffer("audio_slices", audio_slices, persistent=False)

    # ---------------------------------------------------------------- stage 1
    def sample_masks(
        self, batch: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> slice_mask (B, K), mask_video (B, L_v), mask_audio (B, L_a); bool, True = hidden."""
        device = self.video_slices.device
        slice_mask = complementary_slice_mask(batch, self.cfg.num_slices, device=device, generator=generator)
        return (slice_mask, *token_masks(slice_mask, self.video_slices, self.audio_slices))

    def pretrain_forward(
        self, video: torch.Tensor, audio: torch.Tensor, generator: torch.Generator | None = None
    ) -> PretrainOutputs:
        """video (B, 3, T, H, W), audio (B, 1, F, Tm) -> the tensors the stage-1 losses need."""
        slice_mask, mask_v, mask_a = self.sample_masks(video.shape[0], generator)
        v = self.video_encoder(video, mask_v)  # (B, L_v, D_v)
        a = self.audio_encoder(audio, mask_a)  # (B, L_a, D_a)
        # each decoder: own tokens where visible, the other modality's prediction where hidden
        pred_v = self.video_decoder(fuse_tokens(v, self.a2v(a), mask_v))  # (B, L_v, P_v)
        pred_a = self.audio_decoder(fuse_tokens(a, self.v2a(v), mask_a))  # (B, L_a, P_a)
        target_v = self.video_encoder.patchify(video)  # (B, L_v, P_v)
        target_a = self.audio_encoder.patchify(audio)  # (B, L_a, P_a)
        if self.cfg.norm_pix_loss:
            target_v, target_a = L.normalize_patches(target_v), L.normalize_patches(target_a)
        zs_v = zs_a = None
        cross = self.cfg.w_cross > 0
        if not self.cfg.contrastive_on_masked or self.cfg.w_sync > 0 or cross:  # the tokens stage 2 classifies
            v_full, a_full = self.video_encoder(video), self.audio_encoder(audio)  # (B, L_v, D_v), (B, L_a, D_a)
        if self.cfg.contrastive_on_masked:  # pool the visible tokens of the masked pass
            pv = (v * (~mask_v)[..., None]).sum(1) / (~mask_v).sum(1, keepdim=True)  # (B, D_v)
            pa = (a * (~mask_a)[..., None]).sum(1) / (~mask_a).sum(1, keepdim=True)  # (B, D_a)
        else:  # an unmasked pass (see docs/model.md)
            pv, pa = v_full.mean(dim=1), a_full.mean(dim=1)  # (B, D_v), (B, D_a)
        zs_shift = None
        if self.cfg.w_sync > 0:
            zs_v, z_c = self.sync_embeddings(v_full, audio)  # (B, K', E), (1 + N, B, K', E)
            zs_a, zs_shift = z_c[0], z_c[1:]
        return PretrainOutputs(
            pred_v, pred_a, target_v, target_a, mask_v, mask_a, slice_mask, self.video_proj(pv), self.audio_proj(pa),
            zs_v, zs_a, zs_shift, *((v_full, a_full, self.a2v(a_full), self.v2a(v_full)) if cross else ()),
        )  # fmt: skip

    def sync_embeddings(self, video_tokens: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unmasked video tokens (B, L_v, D_v) and audio (B, 1, F, Tm) -> the SYNC_WINDOW slices'
        video embeddings (B, K', E) and those of the clip's audio and its moved copies (1 + N, B, K', E)."""
        k, (lo, hi) = self.cfg.num_slices, SYNC_WINDOW
        zv = self.video_proj(slice_pool(video_tokens, self.video_slices, k)[:, lo:hi])  # (B, K', E)
        cands = sync_candidates(audio, k, SYNC_WINDOW, SYNC_SHIFTS)  # (1 + N, B, 1, F, Tm)
        a_c = self.audio_encoder(cands.flatten(0, 1))  # ((1 + N) B, L_a, D_a)
        z_c = self.audio_proj(slice_pool(a_c, self.audio_slices, k)[:, lo:hi])  # ((1 + N) B, K', E)
        return zv, z_c.reshape(1 + len(SYNC_SHIFTS), audio.shape[0], hi - lo, -1)

    def sync_similarities(self, video_tokens: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """-> (B, 2N + 1): mean cosine of the video with its own audio and with each moved copy,
        then own minus each copy (positive where the clip's own audio fits its mouth best)."""
        zv, z_c = self.sync_embeddings(video_tokens, audio)
        zv, z_c = F.normalize(zv.float(), dim=-1), F.normalize(z_c.float(), dim=-1)
        sims = (z_c * zv[None]).sum(dim=-1).mean(dim=-1).t()  # (B, 1 + N)
        return torch.cat([sims, sims[:, :1] - sims[:, 1:]], dim=1).to(video_tokens.dtype)  # (B, 2N + 1)

    def losses_from_outputs(self, out: PretrainOutputs) -> dict[str, torch.Tensor]:
        """The stage-1 loss dict (see :meth:`pretrain_losses`) from one pass's outputs."""
        cfg = self.cfg
        contrastive = L.info_nce(out.z_video, out.z_audio, self.logit_scale)
        recon_v = L.masked_mse(out.pred_video, out.target_video, out.mask_video)
        recon_a = L.masked_mse(out.pred_audio, out.target_audio, out.mask_audio)
        # generator side: discriminator weights frozen, so this term never trains them
        adv_gen = L.generator_adv_loss(_frozen_call(self.video_disc, out.pred_video), out.mask_video)
        adv_gen = adv_gen + L.generator_adv_loss(_frozen_call(self.audio_disc, out.pred_audio), out.mask_audio)
        # discriminator side: reconstructions detached, so this term never trains the generator
        disc = L.discriminator_loss(
            self.video_disc(out.target_video), self.video_disc(out.pred_video.detach()), out.mask_video
        ) + L.discriminator_loss(
            self.audio_disc(out.target_audio), self.audio_disc(out.pred_audio.detach()), out.mask_audio
        )
        loss = cfg.w_contrastive * contrastive + cfg.w_recon * (recon_v + recon_a) + cfg.w_adv * adv_gen
        extra = {}
        if out.zs_video is not None:
            extra["sync"] = L.sync_nce(out.zs_video, out.zs_audio, out.zs_audio_shifted, self.logit_scale)
            loss = loss + cfg.w_sync * extra["sync"]
        if out.a2v_full is not None:
            extra["cross_modal"] = L.cross_modal_loss(out.a2v_full, out.video_full) + L.cross_modal_loss(
                out.v2a_full, out.audio_full
            )
            loss = loss + cfg.w_cross * extra["cross_modal"]
        return {
            "loss": loss, "contrastive": contrastive, "recon_video": recon_v, "recon_audio": recon_a,
            "adv_gen": adv_gen, "disc_loss": disc, **extra,
        }  # fmt: skip

    def pretrain_losses(
        self, video: torch.Tensor, audio: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Scalar losses: "loss" (generator total), "contrastive", "recon_video", "recon_audio",
        "adv_gen", "disc_loss" (discriminators on detached reconstructions), and "sync" /
        "cross_modal" when ``w_sync`` / ``w_cross`` > 0.

        "loss" has no gradient w.r.t. the discriminators and "disc_loss" none w.r.t. the
        rest, so ``(loss + disc_loss).backward()`` then stepping both optimisers is valid.
        """
        return self.losses_from_outputs(self.pretrain_forward(video, audio, generator))

    # ---------------------------------------------------------------- stage 2
    def forward_features(
        self, video: torch.Tensor, audio: torch.Tensor, features: tuple[str, ...] = FEATURES,
        mouth: torch.Tensor | None = None, lips: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """Unmasked token features: "video" (B, L_v, D_v), "audio" (B, L_a, D_a),
        "a2v" (B, L_v, D_v), "v2a" (B, L_a, D_a), "sync" (B, 2N + 1) lip-sync scores
        (:meth:`sync_similarities`) and "xmodal" (B, 6) cross-modal prediction errors
        (:meth:`cross_modal_features`); only those in ``features`` are computed. ``mouth`` (B, 4): each
        clip's mouth box for the sync branch (``signals.mouth_region``); None: the crop template's. ``lips``
        (B, T, 2): each frame's mouth opening and width from landmarks (``inputs.clip_lips``); None: none."""
        need = set(features)
        out: dict[str, torch.Tensor] = {}
        if need & _NEEDS["video"]:
            out["video"] = self.video_encoder(video)
        if need & _NEEDS["audio"]:
            out["audio"] = self.audio_encoder(audio)
        if need & _NEEDS["a2v"]:
            out["a2v"] = self.a2v(out["audio"])
        if need & _NEEDS["v2a"]:
            out["v2a"] = self.v2a(out["video"])
        if "sync" in need:
            out["sync"] = self.sync_similarities(out["video"], audio)
        if "xmodal" in need:
            out["xmodal"] = self.cross_modal_features(out)
        if "signals" in need:
            out["signals"] = self.signals(video, audio, mouth, lips)  # (B, S)
        return {k: out[k] for k in features}

    def cross_modal_distances(self, feats: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The "video", "a2v", "audio", "v2a" token features -> per-token cosine distances of each
        modality to its cross-modal prediction, (B, L_v) and (B, L_a), float32."""
        return L.cosine_distance(feats["a2v"], feats["video"]), L.cosine_distance(feats["v2a"], feats["audio"])

    def cross_modal_features(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """-> (B, 6): slice statistics of :meth:`cross_modal_distances` (``fusion.cross_modal_stats``)."""
        dist_v, dist_a = self.cross_modal_distances(feats)
        stats = cross_modal_stats(dist_v, dist_a, self.video_slices, self.audio_slices, self.cfg.num_slices)
        return stats.to(feats["video"].dtype)

    def cross_modal_error(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """A real-only anomaly score (B,): the mean cosine distance between each modality's tokens
        and their prediction from the other (trained on REAL clips by ``w_cross``; no labels)."""
        dist_v, dist_a = self.cross_modal_distances(self.forward_features(video, audio))
        return 0.5 * (dist_v.mean(dim=1) + dist_a.mean(dim=1))  # (B,)

    def embed(self, video: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mean-pooled features: "video" (B, D_v), "audio" (B, D_a), "a2v" (B, D_v), "v2a" (B, D_a)."""
        return {k: t.mean(dim=1) for k, t in self.forward_features(video, audio).items()}

    def branch_logits(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The logits the model's own one joins, each (B,): "fusion" (the fusion head's), then "signals" (the
        signal head's, ``signal_fusion="sum"``) or one per signal branch, "sync" and "texture" ("noisy_or")."""
        out = {"fusion": self.head(feats)}  # (B,)
        if self.signal_head is None:
            return out
        branches = self.signal_head(feats["signals"])  # (B, 1) "sum" | (B, K) "noisy_or": one per branch
        names = [n for n in ("sync", "texture") if getattr(self.signals, n) is not None]
        names = names if self.cfg.signal_fusion == "noisy_or" else ["signals"]
        return {**out, **dict(zip(names, branches.unbind(dim=1)))}

    def join_logits(self, branches: dict[str, torch.Tensor]) -> torch.Tensor:
        """:meth:`branch_logits` -> the model's logit (B,): their sum ("sum") or their noisy-OR ("noisy_or"); a
        model without signal branches, the fusion head's logit as it is (a noisy-OR of one floors it near -69)."""
        if len(branches) == 1:
            return branches["fusion"]
        stacked = torch.stack(list(branches.values()), dim=1)  # (B, K)
        return noisy_or(stacked) if self.cfg.signal_fusion == "noisy_or" else stacked.sum(dim=1)

    def texture_features(self, feats: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The texture branch's features (B, S), S = TextureBranch.out_dim: the tail of ``feats["signals"]``; None without the branch."""
        texture = self.signals.texture if self.signals is not None else None
        return feats["signals"][:, -texture.out_dim :] if texture is not None else None

    def set_readout(self, readout: Readout | None) -> None:
        """Join the logits with ``readout`` from now on (None: :meth:`join_logits`); refused (ValueError) when it
        weighs a part this model lacks or its probe's width is not the texture branch's."""
        if readout is not None:
            texture = self.signals.texture if self.signals is not None else None
            if "signals" in readout.weights and self.signal_head is None:
                raise ValueError("the readout weighs a signal logit and this model has no signal branches")
            if readout.probe and (texture is None or len(readout.probe) != texture.out_dim):
                width = texture.out_dim if texture is not None else "no texture branch"
                raise ValueError(f"the readout's texture probe has {len(readout.probe)} weights; the model: {width}")
        self.readout = readout

    def forward_head(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """The fusion head's logit (B,), joined with the signal branches' when the model has them: by
        :meth:`join_logits`, or by the fitted :attr:`readout` when one is set."""
        branches = self.branch_logits(feats)
        if self.readout is None:
            return self.join_logits(branches)
        return self.readout(branches, self.texture_features(feats))

    def forward(self, video: torch.Tensor, audio: torch.Tensor, mouth: torch.Tensor | None = None,
                lips: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Stage-2 logits (B,), FAKE = 1; the decoders and discriminators are unused."""
        return self.forward_head(self.forward_features(video, audio, self.inputs, mouth, lips))

    classify = forward

    def forward_with_features(
        self,
        video: torch.Tensor,
        audio: torch.Tensor,
        features: tuple[str, ...] = (),
        mouth: torch.Tensor | None = None,
        lips: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Stage-2 logits (B,) and the token features the head and ``features`` need, one encoder pass; with them
        the logits the model's joins, "logit_<name>" (B,) for each of :meth:`branch_logits`."""
        need = tuple(dict.fromkeys((*self.inputs, *features)))
        feats = self.forward_features(video, audio, need, mouth, lips)
        branches = self.branch_logits(feats)
        return self.join_logits(branches), {**feats, **{f"{BRANCH_PREFIX}{k}": v for k, v in branches.items()}}

    def aux_logits(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Uni-modal logits {"video": (B,), "audio": (B,)} of the auxiliary heads (cfg.aux_heads)."""
        if self.aux_heads is None:
            raise RuntimeError("this AVFF has no auxiliary heads: build it with aux_heads=True")
        return {m: head(feats) for m, head in self.aux_heads.items()}

    def contrastive_loss(self, feats: dict[str, torch.Tensor], keep: torch.Tensor | None = None) -> torch.Tensor:
        """Stage 1's InfoNCE on unmasked pooled "video" / "audio" features (B, L, D), rows where ``keep``.

        Zero (no gradient) with fewer than two rows kept: InfoNCE needs a negative.
        """
        pv, pa = feats["video"].mean(dim=1), feats["audio"].mean(dim=1)  # (B, D_v), (B, D_a)
        if keep is not None:
            pv, pa = pv[keep], pa[keep]  # (B', D)
        if pv.shape[0] < 2:
            return torch.zeros((), device=pv.device)
        return L.info_nce(self.video_proj(pv), self.audio_proj(pa), self.logit_scale)

    # ---------------------------------------------------------------- parameters and weights
    def _params(self, keep) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if keep(name)]

    def generator_parameters(self) -> list[nn.Parameter]:
        """Everything but the discriminators and the classifier heads (stage-1 optimiser)."""
        return self._params(
            lambda n: not n.startswith((*DISCRIMINATOR_PREFIXES, HEAD_PREFIX, AUX_PREFIX, *SIGNAL_PREFIXES))
        )

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return self._params(lambda n: n.startswith(DISCRIMINATOR_PREFIXES))

    def classifier_parameters(self) -> list[nn.Parameter]:
        """Encoders, A2V/V2A, the head (+ auxiliary heads, signal branches): what stage 2 fine-tunes."""
        return self._params(lambda n: n.startswith((*ENCODER_PREFIXES, HEAD_PREFIX, AUX_PREFIX, *SIGNAL_PREFIXES)))

    def contrastive_parameters(self) -> list[nn.Parameter]:
        """The InfoNCE projections and temperature: stage 2 adds them when it keeps a contrastive term."""
        return self._params(lambda n: n.startswith(CONTRASTIVE_PREFIXES))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of every encoder and decoder block (timm's name): the same
        gradients for less activation memory and about one extra forward pass per step."""
        for m in self.modules():
            if hasattr(m, "grad_checkpointing"):
                m.grad_checkpointing = enable

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """Encoder + A2V/V2A weights and the contrastive projections (the "sync" features use them);
        position embeddings are fixed and not stored."""
        return {k: v for k, v in self.state_dict().items() if k.startswith((*ENCODER_PREFIXES, *CONTRASTIVE_PREFIXES))}

    def save_pretrained_encoders(self, path: str | Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in self.encoder_state_dict().items()}, str(path))

    def load_pretrained_encoders(self, path: str | Path, *, strict: bool = False) -> EncoderLoadReport:
        """Load encoder (+ A2V/V2A) weights from a local safetensors file; nothing is downloaded.

        Shape mismatches always raise ValueError; missing/unexpected keys are logged, and
        raise KeyError when ``strict``. Returns what was loaded, missing and ignored.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no encoder weights at {path} (load_pretrained_encoders never downloads)")
        state, own = load_file(str(path)), self.encoder_state_dict()
        shared = sorted(set(state) & set(own))
        bad = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
               for k in shared if state[k].shape != own[k].shape]  # fmt: skip
        if bad:
            raise ValueError(f"shape mismatch loading {path}:\n  " + "\n  ".join(bad))
        report = EncoderLoadReport(shared, sorted(set(own) - set(state)), sorted(set(state) - set(own)))
        if report.missing or report.unexpected:
            msg = f"{path}: {len(report.missing)} missing keys {report.missing[:8]}, " \
                  f"{len(report.unexpected)} unexpected keys {report.unexpected[:8]}"  # fmt: skip
            if strict:
                raise KeyError(msg)
            log.warning(msg)
        self.load_state_dict({k: state[k] for k in shared}, strict=False)
        return report
