"""Where the visual types get lost (issue 22): in the texture branch's features, or in the head that reads them?

    uv run python bench/texture_head.py /tmp/avff-results/seed0/avff /tmp/avff-results/seed1/avff ...
    uv run python bench/texture_head.py --external /tmp/avff-results/seed*/avff   # on the external videos

For each trained variant folder of bench/results.py (``seedN/<variant>``, its best checkpoint), on the held-out
clips of that seed's own ingest (val and test splits: identities the variant never trained on), or with
``--external`` on the seed's external videos as bench/results.py scores them (each video's clips averaged),
REAL against each type's fakes ("all": every fake, audio_pitch too), AUC of:
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
  fusion     the fusion head's logit alone (the part of the model's logit that is not the signal head's);
  model      the whole model's logit;
  joined     (--external only) fusion, signals and tex_all joined by a logistic regression fitted on the seed's val
             clips (as the calibration is): what a read-out fitted after training, not end to end, would give.
texture or probe high with signals low: the cue reaches the head and the head does not use it; tex_all high
with sig_all low: one head over both branches lets the stronger branch drown the weaker.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repo root
from avff_model import AVFF  # noqa: E402
from avff_model.heads import noisy_or  # noqa: E402
from avff_model.inputs import clip_to_tensors  # noqa: E402
from storage.shard_io import read_clips  # noqa: E402
from tasks.evaluate.benchmark import best_checkpoint, external_inputs  # noqa: E402
from tasks.serve.predict import preprocess_for  # noqa: E402
from tasks.serve.scorer import Scorer, load_model  # noqa: E402

VISUAL = ("visual_artifact", "face_blend")
LIP_SYNC = ("lipsync_offset", "audio_swap", "mouth_decorrelated")
COLUMNS = ("texture", "probe", "tex_all", "sig_all", "max_branch", "signals", "fusion", "model", "joined")


@torch.no_grad()
def features(model: AVFF, video: torch.Tensor, audio: torch.Tensor) -> dict[str, np.ndarray]:
    """video (N, 3, T, H, W), audio (N, 1, F, Tm) -> texture features (N, S), every signal feature (N, D), the
    signal head's, the fusion head's and the model's logits (N,), batches of 32."""
    model.eval()
    out: dict[str, list] = {"texture": [], "features": [], "signals": [], "fusion": [], "model": []}
    for i in range(0, len(video), 32):
        v, a = video[i : i + 32], audio[i : i + 32]  # (B, 3, T, H, W), (B, 1, F, Tm)
        feats = model.forward_features(v, a, model.inputs)
        out["texture"].append(model.signals.texture(v).numpy())
        out["features"].append(feats["signals"].numpy())  # (B, D): the sync branch's features, then the texture's
        branches = model.signal_head(feats["signals"])  # (B, 1) signal_fusion "sum" | (B, K) "noisy_or"
        out["signals"].append((branches.squeeze(-1) if branches.shape[1] == 1 else noisy_or(branches)).numpy())
        out["fusion"].append(model.branch_logits(feats)["fusion"].numpy())
        out["model"].append(model.forward_head(feats).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def clip_features(model: AVFF, clips: list) -> dict[str, np.ndarray]:
    t = [clip_to_tensors(c) for c in clips]
    return features(model, torch.stack([x["video"] for x in t]), torch.stack([x["audio"] for x in t]))


def external_features(model_dir: Path, scorer: Scorer) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The seed's external videos as bench/results.py scores them (preprocessed as ``scorer``'s model was trained):
    per video, the mean over its clips of every feature and logit (a linear probe of the mean is the mean of the
    probe), and each video's kind."""
    model = scorer.model
    rows = external_inputs(model_dir.parent / "external", preprocess_for(scorer))
    rows = [r for r in rows if r["inputs"] is not None]
    per_video = [features(model, r["inputs"]["video"], r["inputs"]["audio"]) for r in rows]
    return {k: np.stack([f[k].mean(0) for f in per_video]) for k in per_video[0]}, np.array(
        [r["manipulation"] or "real" for r in rows]
    )


def variant_aucs(root: Path, external: bool = False) -> dict:
    """One variant folder -> {type: {column: AUC}} on its seed's held-out clips (or external videos)."""
    scorer = load_model(best_checkpoint(root), device="cpu")  # the best checkpoint, as bench/results.py scores it
    model, cfg = scorer.model, scorer.config
    shards = sorted((root.parent / "shards").glob("**/*.tar"))
    clips = [c for url in shards for c in read_clips(str(url))]
    kind = np.array([c.meta.manipulation or "real" for c in clips])
    train = np.array([c.meta.split == "train" for c in clips])
    y = (kind != "real").astype(int)
    f = clip_features(model, clips)  # the probes fit on the train split's clips
    scored, s_kind = external_features(root, scorer) if external else (f, kind)  # what is scored
    s_y, held_out = (s_kind != "real").astype(int), np.ones(len(s_kind), bool) if external else ~train
    n_tex = f["texture"].shape[1]

    def probe(x: str, kinds: tuple[str, ...] | None = None, cols: slice = slice(None)) -> Callable[[dict], np.ndarray]:
        """A logistic regression on feature ``x`` (its ``cols``) of the train split's REAL clips and ``kinds``' fakes
        (None: every fake), standardised there: the function that scores a features dict with it."""
        xt = f[x][:, cols][train]
        fit = (kind[train] == "real") | (np.isin(kind[train], kinds) if kinds else True)
        mu, sd = xt.mean(0), xt.std(0) + 1e-6
        clf = LogisticRegression(max_iter=5000).fit((xt[fit] - mu) / sd, y[train][fit])
        return lambda d: clf.decision_function((d[x][:, cols] - mu) / sd)

    has_sync = f["features"].shape[1] > n_tex
    tex_fn = probe("texture")
    tex_all = tex_fn(scored)
    sync_all = probe("features", cols=slice(0, f["features"].shape[1] - n_tex))(scored) if has_sync else None
    common = {"texture": -scored["texture"][:, 0], "tex_all": tex_all, "sig_all": probe("features")(scored),
              "max_branch": tex_all if sync_all is None else np.maximum(tex_all, sync_all),
              "signals": scored["signals"], "fusion": scored["fusion"], "model": scored["model"]}  # fmt: skip
    if external:  # the fusion logit, the signal logit and tex_all joined by a logistic regression on the val clips
        val = np.array([c.meta.split == "val" for c in clips])

        def parts(d: dict) -> np.ndarray:
            return np.stack([d["fusion"], d["signals"], tex_fn(d)], axis=1)  # (N, 3)

        pv = parts(f)[val]  # (N_val, 3)
        mu, sd = pv.mean(0), pv.std(0) + 1e-6
        join = LogisticRegression(max_iter=5000).fit((pv - mu) / sd, y[val])
        common["joined"] = join.decision_function((parts(scored) - mu) / sd)
    out = {}
    for t in (*VISUAL, *LIP_SYNC, "all"):  # "all": every fake (audio_pitch too) against REAL
        keep = held_out & ((s_kind == "real") | (s_kind == t) | (t == "all"))
        scores = {**common, "probe": tex_all if t == "all" else probe("texture", (t,))(scored)}
        out[t] = {name: float(roc_auc_score(s_y[keep], scores[name][keep])) for name in COLUMNS if name in scores}
    return {"variant": root.name, "seed": root.parent.name, "signal_norm": cfg.signal_norm, "aucs": out}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="+", help="bench/results.py variant folders (seedN/<variant>)")
    ap.add_argument(
        "--external",
        action="store_true",
        help="score the seed's external videos (seedN/external) instead of its held-out splits' clips",
    )
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = [variant_aucs(Path(v), args.external) for v in args.variants]
    print("| variant | seed | signal norm | type | " + " | ".join(COLUMNS) + " |")
    print("|---|---|---|---|" + "---:|" * len(COLUMNS))
    for r in rows:
        for t, a in r["aucs"].items():
            print(
                f"| {r['variant']} | {r['seed']} | {r['signal_norm']} | {t} | "
                + " | ".join(f"{a[k]:.2f}" if k in a else "—" for k in COLUMNS)
                + " |"
            )
    print("\nMean over the seeds given:\n\n| variant | type | " + " | ".join(COLUMNS) + " |")
    print("|---|---|" + "---:|" * len(COLUMNS))
    for v in dict.fromkeys(r["variant"] for r in rows):
        for t in rows[0]["aucs"]:
            mean = [np.mean([r["aucs"][t].get(k, np.nan) for r in rows if r["variant"] == v]) for k in COLUMNS]
            print(f"| {v} | {t} | " + " | ".join("—" if np.isnan(m) else f"{m:.2f}" for m in mean) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
