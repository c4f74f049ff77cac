"""Is the signal there after ingest? The hand-made statistics per clip type.

    python bench/av_signal.py /tmp/avff-results/seed0   # a seed folder under the --out of bench/results.py

Per clip, the statistics of :mod:`tasks.evaluate.handmade` (no learning): ``lip_sync``, the
correlation of the mouth region's darkness with the mel loudness at each frame's time, and
``sharpness``, the Laplacian variance of the face centre. If one separates REAL from a fake
type, that type's signal survives decoding, face cropping, JPEG and the mel front end, and a
model that fails on it fails to *learn* it.
"""

from __future__ import annotations

import glob
import json
import sys

import numpy as np
from sklearn.metrics import roc_auc_score

from storage.shard_io import read_clips
from storage.shard_schema import REAL
from tasks.evaluate.handmade import STATISTICS, score_clips


def signal_table(root: str) -> list[str]:
    """Markdown rows: per clip type, the mean lip-sync correlation and each statistic's AUC of REAL vs that type."""
    kind = {}
    for path in glob.glob(f"{root}/train_data/*/metadata.json"):
        for name, entry in json.load(open(path)).items():
            kind[name.rsplit(".", 1)[0]] = entry.get("manipulation") or entry["label"]
    clips = (clip for url in sorted(glob.glob(f"{root}/shards/shards/*/*.tar")) for clip in read_clips(url))
    rows = score_clips(clips)
    by_kind = {k: np.array([[r.scores[n] for n in STATISTICS] for r in rows if kind[r.video_id] == k])
               for k in sorted(set(kind.values()))}  # fmt: skip
    real = by_kind.pop(REAL)
    aucs = " | ".join(f"AUC {n}" for n in STATISTICS)
    lines = [f"| clips of | n | mean correlation | {aucs} |", "|---|---:|---:|" + "---:|" * len(STATISTICS),
             f"| REAL | {len(real)} | {-np.nanmean(real[:, 0]):+.2f} |" + " |" * len(STATISTICS)]  # fmt: skip
    for name, fake in by_kind.items():
        y = np.r_[np.zeros(len(real)), np.ones(len(fake))]
        cells = " | ".join(f"{roc_auc_score(y, np.nan_to_num(np.r_[real[:, j], fake[:, j]])):.2f}"
                           for j in range(len(STATISTICS)))  # fmt: skip
        lines.append(f"| {name} | {len(fake)} | {-np.nanmean(fake[:, 0]):+.2f} | {cells} |")
    return lines


if __name__ == "__main__":
    print("\n".join(signal_table(sys.argv[1] if len(sys.argv) > 1 else "/tmp/avff-results/seed0")))
