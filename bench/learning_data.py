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

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tasks.ingest.audio import MelSpec, log_mel
from tasks.synthetic import dfdc_sample as ds
from tasks.synthetic.faces import draw_look, draw_scene, render
from tasks.train.data import AUDIO_MEAN, AUDIO_STD, IMAGENET_MEAN, IMAGENET_STD

KINDS = ("real", "lipsync_offset", "audio_swap", "mouth_decorrelated")
RATE, FPS_RENDER, FPS, T, TM = 16000, 25.0, 5.0, 16, 320
DURATION = T / FPS  # 3.2 s
_SIDE = 1.3 * 1.15  # crop side / face_px: ingest's face margin over a detector box ~15 % wider than face_px


def _crop(frames: np.ndarray, scene, idx: np.ndarray, img: int) -> torch.Tensor:
    """frames (T, H, W, 3) uint8 -> (3, T, img, img) uint8, a square around each frame's face centre."""
    side = int(round(_SIDE * scene.face_px * float(np.mean(scene.scale))))
    h, w = frames.shape[1:3]
    pad = side
    padded = np.pad(frames, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = []
    for i, j in enumerate(idx):
        y0 = int(round(scene.cy[j] - side / 2)) + pad
        x0 = int(round(scene.cx[j] - side / 2)) + pad
        out.append(padded[i, y0 : y0 + side, x0 : x0 + side])
    x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()  # (T, 3, side, side)
    x = F.interpolate(x, size=(img, img), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(1, 0, 2, 3)  # (3, T, img, img)


def _mel(audio: np.ndarray) -> torch.Tensor:
    m = log_mel(audio.astype(np.float32), MelSpec())  # (128, n)
    if m.shape[1] < TM:
        m = np.pad(m, ((0, 0), (0, TM - m.shape[1])), constant_values=m.min())
    return torch.from_numpy(m[:, :TM]).to(torch.float16)  # (F, Tm)


def make_clips(pool: str, n_ids: int, *, seed: int = 0, img: int = 64, render_size: int = 160) -> dict:
    """REAL + one fake per lip-sync type for each of ``n_ids`` identities of ``pool`` (see module doc)."""
    n_render = int(round(DURATION * FPS_RENDER))  # 80 frames at 25 fps
    idx = np.arange(T) * int(FPS_RENDER / FPS)  # the 5 fps frames ingest keeps
    faces = ds.pool_faces(seed, n_ids, pool)
    donors = ds.pool_sources(pool)[0]
    rng_of = lambda *key: ds._rng(seed, *ds._POOL_KEYS[pool], *key)  # noqa: E731  (the generator's streams)
    lead = ds.ShortcutControls().lead_silence_s
    voices = [ds._speaker(rng_of(k, 1), DURATION, RATE, lead) for k in range(n_ids)]
    out = {"video": [], "mel": [], "label": [], "kind": [], "ident": [], "mouth": []}
    for k, voice in enumerate(voices):
        look = draw_look(rng_of(k, 0), faces[k])
        scene = draw_scene(rng_of(k, 3), look, (render_size, render_size), n_render, FPS_RENDER)
        sub = replace(scene, cx=scene.cx[idx], cy=scene.cy[idx], scale=scene.scale[idx], angle=scene.angle[idx],
                      blink=scene.blink[idx])  # fmt: skip
        audio = ds._clip_audio(voice.stream, voice.lead_s, RATE, DURATION)
        mouth = ds._mouth(audio, RATE, FPS_RENDER, n_render)  # (80,)
        frames = render(sub, mouth[idx])  # (T, H, W, 3)
        orig = ds._Original(look, scene, voice, audio, mouth, frames, voices[:k] + voices[k + 1 :], donors, DURATION,
                            FPS_RENDER, RATE, lead)  # fmt: skip
        clips = [(frames, audio, mouth[idx])]
        for name in KINDS[1:]:
            rng = rng_of(k, 10 + ds.MANIPULATIONS.index(name))
            if name == "mouth_decorrelated":  # the generator's manipulation, rendered at 5 fps only
                v2 = ds._speaker(rng, DURATION, RATE, lead)
                m2 = ds._mouth(ds._clip_audio(v2.stream, v2.lead_s, RATE, DURATION), RATE, FPS_RENDER, n_render)
                clips.append((render(sub, m2[idx]), audio, m2[idx]))
            else:
                _, fa = ds._REGISTRY[name](rng, orig)
                clips.append((frames, fa, mouth[idx]))
        for j, (fr, au, mo) in enumerate(clips):
            fin = ds._finish(au, rng_of(k, 2 + 100 * j), ds.ShortcutControls())
            out["video"].append(_crop(fr, sub, np.arange(T), img))
            out["mel"].append(_mel(fin))
            out["label"].append(int(j > 0))
            out["kind"].append(j)
            out["ident"].append(k)
            out["mouth"].append(torch.from_numpy(mo.astype(np.float32)))
    return {
        "video": torch.stack(out["video"]), "mel": torch.stack(out["mel"]), "label": torch.tensor(out["label"]),
        "kind": torch.tensor(out["kind"]), "ident": torch.tensor(out["ident"]), "mouth": torch.stack(out["mouth"]),
    }  # fmt: skip


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
