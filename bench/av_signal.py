"""Is the audio-visual signal there after ingest? A hand-made lip-sync score per clip.

    python bench/av_signal.py /tmp/avff-results   # the --out of bench/results.py

Per clip: the darkness of the mouth region (lower middle of the face crop) in each of the
16 frames, the log energy of the mel frames around each frame's time, and their
correlation. No learning: if this separates REAL from the audio-visual fakes, the
generator's mouth-follows-speech signal survives decoding, face cropping, JPEG and the
mel front end, and a model that fails on those fakes fails to *learn* it.
"""

from __future__ import annotations

import glob
import json
import sys

import numpy as np
import webdataset as wds
from sklearn.metrics import roc_auc_score

from storage.schema import decode_sample


def sync_score(frames: np.ndarray, mel: np.ndarray, fps: float, hop_s: float) -> float:
    """frames (T, H, W, 3) uint8, mel (F, Tm) -> correlation of mouth opening and loudness."""
    grey = frames.astype(np.float32).mean(-1)  # (T, H, W)
    t, h, w = grey.shape
    mouth = -grey[:, int(h * 0.62) : int(h * 0.85), int(w * 0.35) : int(w * 0.65)].mean((1, 2))  # darker = open
    energy = np.log(np.exp(mel.astype(np.float32)).sum(0))  # (Tm,)
    at = np.clip(np.round(np.arange(t) / fps / hop_s).astype(int), 0, len(energy) - 1)
    loud = np.array([energy[max(0, i - 4) : i + 5].mean() for i in at])  # +-40 ms around each frame
    return float(np.corrcoef(mouth, loud)[0, 1])


def signal_table(root: str) -> list[str]:
    """Markdown rows: per clip type, the mean correlation and the AUC of REAL vs that type."""
    kind = {}
    for path in glob.glob(f"{root}/train_data/*/metadata.json"):
        for name, entry in json.load(open(path)).items():
            kind[name.rsplit(".", 1)[0]] = entry.get("manipulation") or entry["label"]
    rows = []
    for url in sorted(glob.glob(f"{root}/shards/shards/*/*.tar")):
        for sample in wds.WebDataset(url, shardshuffle=False):
            clip = decode_sample(sample)
            rows.append((kind[clip.meta.video_id], sync_score(clip.frames, clip.mel, clip.meta.fps, clip.meta.mel_hop_s)))
    real = np.array([r for k, r in rows if k == "REAL"])
    lines = ["| clips of | n | mean correlation | AUC (REAL vs this type, score = -correlation) |", "|---|---:|---:|---:|",
             f"| REAL | {len(real)} | {real.mean():+.2f} | |"]  # fmt: skip
    for name in sorted(set(kind.values()) - {"REAL"}):
        fake = np.array([r for k, r in rows if k == name])
        auc = roc_auc_score(np.r_[np.zeros(len(real)), np.ones(len(fake))], -np.r_[real, fake])
        lines.append(f"| {name} | {len(fake)} | {fake.mean():+.2f} | {auc:.2f} |")
    return lines


if __name__ == "__main__":
    print("\n".join(signal_table(sys.argv[1] if len(sys.argv) > 1 else "/tmp/avff-results")))
