"""Where the visual types get lost (issue 22): in the texture branch's features, or in the head that reads them?

    uv run python bench/texture_head.py /tmp/avff-results/seed0/avff /tmp/avff-results/seed1/avff ...

For each trained variant folder of bench/results.py (``seedN/<variant>``, its best checkpoint), on the held-out
clips of that seed's own ingest (val and test splits: identities the variant never trained on), REAL against
each type's fakes, AUC of:
  texture    minus the trained texture branch's Laplacian log energy inside the face (its filter 0, no learning
             on top: the hand-made sharpness statistic's twin);
  probe      a logistic regression on the texture branch's features fitted on the train split, that type's
             fakes against REAL (what the features hold for that type);
  tex_all    the same fitted on every fake against REAL (the objective the head trains on);
  sig_all    a logistic regression on every signal feature (sync and texture), every fake against REAL: one
             linear head over both branches;
  max_branch the larger of two such probes, one on the sync features, one on the texture features;
  signals    the signal head's logit (every branch the variant has; with signal_fusion="noisy_or" the noisy-OR
             of its per-branch heads);
  model      the whole model's logit.
texture or probe high with signals low: the cue reaches the head and the head does not use it; tex_all high
with sig_all low: one head over both branches lets the stronger branch drown the weaker.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repo root
from avff_model import AVFF  # noqa: E402
from avff_model.config import AVFFConfig  # noqa: E402
from avff_model.heads import noisy_or  # noqa: E402
from avff_model.inputs import clip_to_tensors  # noqa: E402
from storage.checkpoint import load_weights, resolve_checkpoint  # noqa: E402
from storage.shard_io import read_clips  # noqa: E402

VISUAL = ("visual_artifact", "face_blend")
LIP_SYNC = ("lipsync_offset", "audio_swap", "mouth_decorrelated")
COLUMNS = ("texture", "probe", "tex_all", "sig_all", "max_branch", "signals", "model")


@torch.no_grad()
def features(model: AVFF, clips: list) -> dict[str, np.ndarray]:
    """-> texture features (N, 3K+3), every signal feature (N, D), signal logits (N,), model logits (N,) of every
    clip, batches of 32."""
    model.eval()
    out: dict[str, list] = {"texture": [], "features": [], "signals": [], "model": []}
    for i in range(0, len(clips), 32):
        t = [clip_to_tensors(c) for c in clips[i : i + 32]]
        v, a = (
            torch.stack([x["video"] for x in t]),
            torch.stack([x["audio"] for x in t]),
        )  # (B, 3, T, H, W), (B, 1, F, Tm)
        feats = model.signals(v, a)  # (B, D): the sync branch's features, then the texture branch's
        out["texture"].append(model.signals.texture(v).numpy())
        out["features"].append(feats.numpy())
        branches = model.signal_head(feats)  # (B, 1) signal_fusion "sum" | (B, K) "noisy_or": one per branch
        out["signals"].append((branches.squeeze(-1) if branches.shape[1] == 1 else noisy_or(branches)).numpy())
        out["model"].append(model(v, a).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def variant_aucs(root: Path) -> dict:
    """One variant folder -> {visual type: {texture, probe, signals, model}} on its seed's held-out clips."""
    cfg = AVFFConfig(**json.loads((root / "model_config.json").read_text()))
    model = AVFF(cfg)
    state, _, _ = load_weights(resolve_checkpoint(str(root / "checkpoints" / "best.json")))
    model.load_state_dict(state, strict=False)
    shards = sorted((root.parent / "shards").glob("**/*.tar"))
    clips = [c for url in shards for c in read_clips(str(url))]
    kind = np.array([c.meta.manipulation or "real" for c in clips])
    train = np.array([c.meta.split == "train" for c in clips])
    y = (kind != "real").astype(int)
    f = features(model, clips)
    tex, sig = f["texture"], f["features"]

    def probe(x: np.ndarray, fit: np.ndarray) -> np.ndarray:
        """A logistic regression on the train split's ``fit`` clips, standardised there; scores every clip."""
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
        clf = LogisticRegression(max_iter=5000).fit((x[train & fit] - mu) / sd, y[train & fit])
        return clf.decision_function((x - mu) / sd)

    every = np.ones(len(y), dtype=bool)
    sync_all = probe(sig[:, : sig.shape[1] - tex.shape[1]], every) if sig.shape[1] > tex.shape[1] else None
    tex_all = probe(tex, every)
    common = {"texture": -tex[:, 0], "tex_all": tex_all, "sig_all": probe(sig, every),
              "max_branch": tex_all if sync_all is None else np.maximum(tex_all, sync_all),
              "signals": f["signals"], "model": f["model"]}  # fmt: skip
    out = {}
    for t in (*VISUAL, *LIP_SYNC):
        keep = ~train & ((kind == "real") | (kind == t))
        scores = {**common, "probe": probe(tex, (kind == "real") | (kind == t))}
        out[t] = {name: float(roc_auc_score(y[keep], scores[name][keep])) for name in COLUMNS}
    return {"variant": root.name, "seed": root.parent.name, "signal_norm": cfg.signal_norm, "aucs": out}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", help="bench/results.py variant folders (seedN/<variant>)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = [variant_aucs(Path(v)) for v in args.variants]
    print("| variant | seed | signal norm | type | " + " | ".join(COLUMNS) + " |")
    print("|---|---|---|---|" + "---:|" * len(COLUMNS))
    for r in rows:
        for t, a in r["aucs"].items():
            print(
                f"| {r['variant']} | {r['seed']} | {r['signal_norm']} | {t} | "
                + " | ".join(f"{a[k]:.2f}" for k in COLUMNS)
                + " |"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
