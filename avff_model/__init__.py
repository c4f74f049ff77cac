"""AVFF: Audio-Visual Feature Fusion for video deepfake detection (Oorloff et al., CVPR 2024).

Inputs (the contract with the data loader):
    video  (B, 3, T, H, W)  float32, ImageNet-normalised face crops, T = 16, H = W = img_size
    audio  (B, 1, F, Tm)    float32, normalised log-mel, F = 128, Tm = 320

Shape letters used in every shape comment of this package:
    B   batch                    C   channels
    T   frames                   H, W  frame height, width (pixels)
    F   mel bins                 Tm  mel frames
    T', H', W', F', Tm'          the same axes counted in tokens (T/2, H/16, W/16, F/16, Tm/16)
    L   tokens (L_v video, L_a audio)
    D   width (D_v, D_a encoders, Dd decoders, Dh heads)
    P   values per patch (P_v = 3*2*16*16, P_a = 16*16)
    K   temporal slices of complementary masking
    E   contrastive embedding size

Usage::

    cfg = get_config("tiny", fusion="late")
    model = AVFF(cfg)
    losses = model.pretrain_losses(video, audio)   # stage 1
    logits = model(video, audio)                   # stage 2, (B,), FAKE = 1
"""

from .config import AVFFConfig, get_config, list_configs, register_config
from .heads import build_head, list_heads, register_head
from .model import AVFF, EncoderLoadReport, PretrainOutputs
from .sizing import estimate_activation_bytes, estimate_params

__all__ = [
    "AVFF",
    "AVFFConfig",
    "EncoderLoadReport",
    "PretrainOutputs",
    "build_head",
    "estimate_activation_bytes",
    "estimate_params",
    "get_config",
    "list_configs",
    "list_heads",
    "register_config",
    "register_head",
]
