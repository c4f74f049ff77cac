"""In-memory lip-sync clips for bench/learning.py: the synthetic generator's scenes and voices,
rendered straight to model tensors (no video encode, no face detector, no shards).

One REAL clip per identity plus one fake of each lip-sync type (``KINDS[1:]``), built with the
generator's own manipulations (``tasks.synthetic.dfdc_sample``), so the fakes are exactly the
benchmark's. Frames: 16 at 5 fps (every 5th of a 25 fps render, as ingest samples them), a square
crop around the known face centre (ingest's 1.3 face margin), resized to ``img``. Audio: the
clip's Kaldi log-mel from the first frame's time, 320 columns, normalised like tasks/train/data.py.

Tensors: video (N, 3, T, H, W) uint8, mel (N, F, Tm) float16, label (N,) 0 REAL / 1 FAKE,
kind (N,) index into KINDS, ident (N,), mouth (N, T) the generator's true mouth opening in [0, 1]
(for REAL clips the opening that follows the clip's audio; the probe reads it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tasks.ingest.audio import default_mel, log_mel
from tasks.synthetic.dfdc_sample import LIPSYNC_MANIPULATIONS, lipsync_clips
from avff_model.inputs import AUDIO_MEAN, AUDIO_STD, IMAGENET_MEAN, IMAGENET_STD

KINDS = ("real", *LIPSYNC_MANIPULATIONS)
RATE, FPS_RENDER, FPS, T, TM = 16000, 25.0, 5.0, 16, 320
DURATION = T / FPS  # 3.2 s
_SIDE = 1.3 * 1.15  # crop side / face_px: ingest's face margin over a detector box ~15 % wider than face_px


def _crop(frames: np.ndarray, centre: np.ndarray, face_side: float, img: int) -> torch.Tensor:
    """frames (T, H, W, 3) uint8, centre (T, 2) -> (3, T, img, img) uint8, a square round each face centre."""
    side = int(round(_SIDE * face_side))
    padded = np.pad(frames, ((0, 0), (side, side), (side, side), (0, 0)))
    out = []
    for i, (cx, cy) in enumerate(centre):
        y0, x0 = int(round(cy - side / 2)) + side, int(round(cx - side / 2)) + side
        out.append(padded[i, y0 : y0 + side, x0 : x0 + side])
    x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()  # (T, 3, side, side)
    x = F.interpolate(x, size=(img, img), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(1, 0, 2, 3)  # (3, T, img, img)


def _mel(audio: np.ndarray) -> torch.Tensor:
    m = log_mel(audio.astype(np.float32), default_mel())  # (128, n)
    if m.shape[1] < TM:
        m = np.pad(m, ((0, 0), (0, TM - m.shape[1])), constant_values=m.min())
    return torch.from_numpy(m[:, :TM]).to(torch.float16)  # (F, Tm)


def make_clips(pool: str, n_ids: int, *, seed: int = 0, img: int = 64, render_size: int = 160) -> dict:
    """REAL + one fake per lip-sync type for each of ``n_ids`` identities of ``pool`` (see module doc)."""
    clips = lipsync_clips(n_ids, pool=pool, seed=seed, duration_s=DURATION, size=(render_size, render_size),
                          fps=FPS_RENDER, keep_every=int(FPS_RENDER / FPS), audio_rate=RATE)  # fmt: skip
    return {
        "video": torch.stack([_crop(c.frames, c.centre, c.face_side, img) for c in clips]),
        "mel": torch.stack([_mel(c.audio) for c in clips]),
        "label": torch.tensor([int(c.manipulation is not None) for c in clips]),
        "kind": torch.tensor([KINDS.index(c.manipulation or "real") for c in clips]),
        "ident": torch.tensor([c.identity for c in clips]),
        "mouth": torch.stack([torch.from_numpy(c.mouth) for c in clips]),
    }


def cached_clips(cache: Path, pool: str, n_ids: int, **kw) -> dict:
    """:func:`make_clips`, saved once under ``cache`` and read back after."""
    tag = f"{kw.get('img', 64)}_{kw.get('seed', 0)}"
    for other in sorted(Path(cache).glob(f"{pool}_*_{tag}.pt")):  # a larger cached set holds these identities
        if int(other.name.split("_")[1]) >= n_ids:
            data = torch.load(other)
            keep = data["ident"] < n_ids
            return {k: v[keep] for k, v in data.items()}
    path = Path(cache) / f"{pool}_{n_ids}_{tag}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = make_clips(pool, n_ids, **kw)
    torch.save(data, path)
    return data


def to_model(video: torch.Tensor, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 video (B, 3, T, H, W), float16 mel (B, F, Tm) -> the model's normalised float32 inputs."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    v = (video.float() / 255.0 - mean) / std
    a = ((mel.float() - AUDIO_MEAN) / (2 * AUDIO_STD))[:, None]  # (B, 1, F, Tm)
    return v, a
