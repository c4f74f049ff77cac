"""AVFFConfig: one frozen dataclass of sizes and loss weights, plus named presets.

Presets live in a registry (timm style: the function name is the preset name) and
:func:`get_config` raises ``KeyError`` listing the known names for anything else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class AVFFConfig:
    # inputs (the data-loader contract: video (B, 3, T, H, W), audio (B, 1, F, Tm))
    img_size: int = 224
    num_frames: int = 16  # T, face frames at 5 fps = 3.2 s
    tubelet: int = 2  # frames per video token (MARLIN)
    patch: int = 16  # pixels per video token side
    n_mels: int = 128  # F
    mel_frames: int = 320  # Tm, 10 ms hop = 3.2 s
    audio_patch: int = 16  # mel bins x mel frames per audio token (AudioMAE)
    # encoders (ViT-B for both in the paper)
    video_width: int = 768
    video_depth: int = 12
    video_heads: int = 12
    audio_width: int = 768
    audio_depth: int = 12
    audio_heads: int = 12
    mlp_ratio: float = 4.0
    # decoders (one per modality, same shape for both)
    decoder_width: int = 512
    decoder_depth: int = 4
    decoder_heads: int = 8
    # complementary masking: K temporal slices, half masked in each modality
    num_slices: int = 8
    # pretraining losses
    w_contrastive: float = 0.01
    w_recon: float = 1.0
    w_adv: float = 0.1
    w_sync: float = 0.0  # ours, not the paper's: InfoNCE across the time slices of a clip (losses.sync_nce)
    w_cross: float = 1.0  # ours: A2V(a) -> stop-grad v and V2A(v) -> stop-grad a, cosine, unmasked pass
    temperature: float = 0.07  # initial value when learnable
    learn_temperature: bool = True
    contrastive_dim: int = 256  # shared space of the InfoNCE projections
    contrastive_on_masked: bool = False  # False: an extra unmasked encoder pass (see docs)
    norm_pix_loss: bool = False  # MAE's per-patch normalised targets
    disc_hidden: int = 256
    # stage-2 classifier
    fusion: str = "avff_agree"  # a name in avff_model.heads (validated by AVFF); docs/learning.md: why not avff_concat
    head_hidden: int = 512
    head_heads: int = 8  # only the "attention" head uses it
    dropout: float = 0.0
    aux_heads: bool = False  # extra video_only + audio_only heads for auxiliary uni-modal losses
    # ours: signal branches whose logit adds to the head's (avff_model/signals.py), each used
    # only when the head sees the modalities it needs (sync: video and audio; texture: video)
    sync_branch: bool = True
    texture_branch: bool = True
    # the texture branch also filters the colour left once each pixel's brightness is taken out (a pasted face's
    # tint at its seam, signals.TextureBranch ``colour``); off everywhere: measured, it lifts face_blend within
    # noise and costs visual_artifact and lip sync (docs/learning.md "A colour bank for the texture branch")
    texture_colour: bool = False
    # the sync branch also reads the landmarks' mouth opening and width (signals.SyncBranch ``lips``);
    # False here so a checkpoint written before it existed (whose config lacks it) loads as it was; the presets turn it on
    sync_lips: bool = False
    # with sync_lips: also the lips' sync peak (signals.sync_peak, for clips with a 25 fps lip track); False
    # for checkpoints written before it, on in the presets
    sync_peak: bool = False
    # the sync branch's learned mouth-region and sound embeddings; False: its lip features only (real
    # footage: the learned pixel part fits the training people, docs/results.md "Real footage")
    sync_pixels: bool = True
    # with sync_lips: each lip channel's lagged correlation with the loudness; False: the lips' sync peak only
    sync_lip_lags: bool = True
    # the signal head's input normalisation: "layer" (per sample, across features) or "batch" (per feature,
    # across samples); docs/learning.md "The visual types" measures both
    signal_norm: str = "layer"
    # how the signal branches' evidence joins the fusion head's: "sum", one head over every branch's features
    # whose logit is added to the fusion head's; "noisy_or", one head per branch (sync, texture) and the clip is
    # FAKE if any of them or the fusion head says so (heads.noisy_or): a weak branch's cue is not drowned by a
    # strong one's in a shared head (docs/learning.md "The visual types")
    signal_fusion: str = "sum"
    # the signal head's hidden width: None, head_hidden's; 0, no hidden layer (a linear read-out of the
    # normalised branch features, docs/learning.md "The visual types")
    signal_hidden: int | None = None

    def __post_init__(self) -> None:
        checks = {
            "img_size % patch == 0": self.img_size % self.patch == 0,
            "num_frames % tubelet == 0": self.num_frames % self.tubelet == 0,
            "n_mels % audio_patch == 0": self.n_mels % self.audio_patch == 0,
            "mel_frames % audio_patch == 0": self.mel_frames % self.audio_patch == 0,
            "num_slices even and >= 2": self.num_slices >= 2 and self.num_slices % 2 == 0,
            "num_slices <= video time tokens": self.num_slices <= self.video_grid[0],
            "num_slices <= audio time tokens": self.num_slices <= self.audio_grid[1],
            "video_width % video_heads == 0": self.video_width % self.video_heads == 0,
            "audio_width % audio_heads == 0": self.audio_width % self.audio_heads == 0,
            "decoder_width % decoder_heads == 0": self.decoder_width % self.decoder_heads == 0,
            "head_hidden % head_heads == 0": self.head_hidden % self.head_heads == 0,
            "sync_pixels or sync_lips": self.sync_pixels or self.sync_lips,
            "sync_lip_lags or sync_peak": self.sync_lip_lags or self.sync_peak,
            "signal_norm in (layer, batch)": self.signal_norm in ("layer", "batch"),
            "signal_fusion in (sum, noisy_or)": self.signal_fusion in ("sum", "noisy_or"),
            "signal_hidden is None or >= 0": self.signal_hidden is None or self.signal_hidden >= 0,
            "0 <= dropout < 1": 0.0 <= self.dropout < 1.0,
            "temperature > 0": self.temperature > 0,
            "w_cross >= 0": self.w_cross >= 0,
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid AVFFConfig: {', '.join(failed)}")

    @property
    def mask_ratio(self) -> float:
        """Fixed by design: complementary masking hides half of the K slices per modality."""
        return 0.5

    @property
    def signal_head_hidden(self) -> int:
        """The signal head's hidden width: ``signal_hidden``, or ``head_hidden`` where it is None (0: linear)."""
        return self.head_hidden if self.signal_hidden is None else self.signal_hidden

    @property
    def video_grid(self) -> tuple[int, int, int]:
        """(T/tubelet, H/patch, W/patch): the video token grid."""
        side = self.img_size // self.patch
        return (self.num_frames // self.tubelet, side, side)

    @property
    def audio_grid(self) -> tuple[int, int]:
        """(F/audio_patch, Tm/audio_patch): the audio token grid (frequency-major)."""
        return (self.n_mels // self.audio_patch, self.mel_frames // self.audio_patch)

    @property
    def num_video_tokens(self) -> int:
        t, h, w = self.video_grid
        return t * h * w

    @property
    def num_audio_tokens(self) -> int:
        f, tm = self.audio_grid
        return f * tm

    @property
    def video_patch_dim(self) -> int:
        """Pixels per video token: 3 * tubelet * patch * patch."""
        return 3 * self.tubelet * self.patch * self.patch

    @property
    def audio_patch_dim(self) -> int:
        return self.audio_patch * self.audio_patch


_PRESETS: dict[str, Callable[[], AVFFConfig]] = {}


def register_config(fn: Callable[[], AVFFConfig]) -> Callable[[], AVFFConfig]:
    """Register a preset under its function's name."""
    _PRESETS[fn.__name__] = fn
    return fn


def list_configs() -> list[str]:
    return sorted(_PRESETS)


def get_config(name: str, **overrides) -> AVFFConfig:
    """A named preset with ``overrides`` applied via ``dataclasses.replace``."""
    if name not in _PRESETS:
        raise KeyError(f"unknown AVFF config {name!r}; known: {', '.join(list_configs())}")
    return dataclasses.replace(_PRESETS[name](), **overrides)


@register_config
def tiny() -> AVFFConfig:
    """For tests and smoke runs: forward+backward at batch 4 in well under a second on CPU."""
    return AVFFConfig(
        img_size=64,
        video_width=64, video_depth=2, video_heads=4,
        audio_width=64, audio_depth=2, audio_heads=4,
        decoder_width=64, decoder_depth=1, decoder_heads=4,
        contrastive_dim=32, disc_hidden=64, head_hidden=64, head_heads=4, sync_lips=True, sync_peak=True,
    )  # fmt: skip


@register_config
def laptop() -> AVFFConfig:
    """ViT-S-ish encoders at 112 px: batch 32 under fp16/bf16 autocast fits an 8 GB GPU.

    See docs/model.md and :func:`avff_model.sizing.estimate_activation_bytes`.
    """
    return AVFFConfig(
        img_size=112,
        video_width=384, video_depth=8, video_heads=6,
        audio_width=384, audio_depth=8, audio_heads=6,
        decoder_width=256, decoder_depth=2, decoder_heads=8,
        contrastive_dim=256, disc_hidden=256, head_hidden=256, head_heads=4, sync_lips=True, sync_peak=True,
    )  # fmt: skip


@register_config
def paper() -> AVFFConfig:
    """The paper's scale: ViT-B (768 wide, 12 deep, 12 heads) for both encoders at 224 px, K=8."""
    return AVFFConfig(sync_lips=True, sync_peak=True)
