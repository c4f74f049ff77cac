"""Fit the model's read-out after training (``readout="fitted"``; :mod:`avff_model.readout` says what it is).

At the best checkpoint, with every weight frozen:

1. :func:`collect` runs the model over a split once (eval mode, no augmentation, no pseudo-fakes) and keeps per
   clip the logits the model joins and the texture branch's features (the train split: those features alone,
   which need no encoder pass);
2. :func:`fit_readout` fits (a) the texture probe, a logistic regression of FAKE on the standardised texture
   features of the train split's clips, and (b) the join, a logistic regression of FAKE on the standardised
   fusion logit, signal logit and probe logit of the val clips, then folds the standardisations into plain
   weights (a :class:`~avff_model.readout.Readout`);
3. :func:`cross_fitted` scores val out of fold (the join fitted on one half of val's groups scores the other, the
   halves of :func:`tasks.evaluate.calibration.halves`), so the registry gate does not judge the join on the
   clips it was fitted on.

Both fits are sklearn's L2-regularised logistic regression (C = 1, lbfgs) on standardised inputs: convex, so the
same clips give the same readout. These are the fits ``bench/texture_head.py --external`` measured (its
``joined`` column) before this was built. A val or train split with fewer than two clips of a class fits
nothing: (None, the reason), and the model keeps its end-to-end join.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from avff_model import AVFF
from avff_model.readout import PARTS, Readout, logit_parts
from tasks.evaluate.calibration import MIN_PER_CLASS, halves
from tasks.train.device import autocast


@dataclass(frozen=True)
class Parts:
    """One split's clips as the read-out sees them, in loader order."""

    keys: list[tuple[str, int, int]]  # (video_id, clip, face) per clip
    y: np.ndarray  # (N,) int64, FAKE = 1
    logits: dict[str, np.ndarray]  # "fusion", "signals" (when the model has signal branches) -> (N,) float64
    texture: np.ndarray | None  # (N, S) float64, the texture branch's features (TextureBranch.out_dim); None: no branch


PROBE_CLIPS = 50_000  # the texture probe's train clips at most: 27 or 51 features need no more, the full DFDC has ~10x


@torch.inference_mode()
def collect(model: AVFF, loader: Iterable[dict], *, device: torch.device, precision: str = "fp32",
            texture_only: bool = False, max_clips: int | None = None) -> Parts:  # fmt: skip
    """The logits the model joins and its texture features for every clip of ``loader`` (eval mode);
    ``texture_only``: the texture features alone (no encoder pass: what the probe's train split needs);
    ``max_clips``: stop after the batch that reaches this many (the loader's first ones: give a shuffled loader
    for a spread of the split)."""
    model.eval()
    keys, ys, logits, texture = [], [], {}, []
    for batch in loader:
        if max_clips is not None and len(keys) >= max_clips:
            break
        video = batch["video"].to(device)  # (B, 3, T, H, W)
        with autocast(device, precision):
            if texture_only:
                tex, parts = model.signals.texture(video), {}  # (B, S): TextureBranch.out_dim
            else:
                mouth = batch["mouth"].to(device) if "mouth" in batch else None  # (B, 4)
                lips = batch["lips"].to(device) if "lips" in batch else None  # (B, T, 2)
                feats = model.forward_features(video, batch["audio"].to(device), model.inputs, mouth, lips)
                tex = model.texture_features(feats)  # (B, S) | None
                parts = logit_parts(model.branch_logits(feats))  # "fusion", "signals" -> (B,)
        for name, v in parts.items():
            logits.setdefault(name, []).append(v.float().cpu().numpy())
        if tex is not None:
            texture.append(tex.float().cpu().numpy())
        faces = batch["face"].tolist() if "face" in batch else [0] * len(batch["video_id"])
        keys.extend(zip(batch["video_id"], batch["clip"].tolist(), faces))
        ys.append(batch["target"].numpy())
    if not keys:
        raise ValueError("the read-out's loader yielded no batches")
    return Parts(keys, np.concatenate(ys).astype(np.int64),
                 {k: np.concatenate(v).astype(np.float64) for k, v in logits.items()},
                 np.concatenate(texture).astype(np.float64) if texture else None)  # fmt: skip


def _too_few(y: np.ndarray, where: str) -> str | None:
    n_fake = int(y.sum())
    if min(n_fake, y.size - n_fake) < MIN_PER_CLASS:
        return f"{where} holds {y.size} clips, {n_fake} FAKE: fewer than {MIN_PER_CLASS} of a class, no read-out fitted"
    return None


def _logistic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """An L2 logistic regression (C = 1) of ``y`` (N,) on ``x`` (N, D) standardised, its weights folded back:
    (w (D,), b) with logit = x @ w + b on the raw ``x``."""
    mu, sd = x.mean(axis=0), x.std(axis=0) + 1e-6  # (D,)
    fit = LogisticRegression(C=1.0, max_iter=5000).fit((x - mu) / sd, y)
    w = fit.coef_[0] / sd
    return w, float(fit.intercept_[0] - mu @ w)


def _join_inputs(parts: Parts, probe: np.ndarray | None, probe_bias: float) -> dict[str, np.ndarray]:
    """The join's inputs (N,) per part name, the probe applied to the texture features."""
    out = dict(parts.logits)
    if probe is not None and parts.texture is not None:
        out["probe"] = parts.texture @ probe + probe_bias
    return {k: out[k] for k in PARTS if k in out}


def fit_join(inputs: dict[str, np.ndarray], y: np.ndarray, probe: tuple[float, ...], probe_bias: float) -> Readout:
    """The join of ``inputs`` (part name -> (N,)) fitted on ``y`` (N,), holding the given texture probe."""
    names = list(inputs)
    w, b = _logistic(np.stack([inputs[k] for k in names], axis=1), y)  # (N, P) -> (P,)
    return Readout(dict(zip(names, map(float, w))), b, probe if "probe" in inputs else (), probe_bias)


def fit_readout(train: Parts | None, val: Parts) -> tuple[Readout | None, str | None]:
    """(the read-out, None) fitted on the train split's texture features (``train``; None: the model has no
    texture branch, so no probe) and val's logits, or (None, why)."""
    if "signals" not in val.logits:
        return None, "the model has no signal branches: its logit is the fusion head's alone, nothing to join"
    why = _too_few(val.y, "val") or (_too_few(train.y, "the train split") if train is not None else None)
    if why:
        return None, why
    probe, probe_bias = (None, 0.0) if train is None else _logistic(train.texture, train.y)
    probe_t = tuple(map(float, probe)) if probe is not None else ()
    return fit_join(_join_inputs(val, probe, probe_bias), val.y, probe_t, probe_bias), None


def cross_fitted(readout: Readout, val: Parts, groups: Sequence, seed: int = 0) -> np.ndarray | None:
    """(N,) val P(FAKE) out of fold: ``readout``'s probe kept, its join refitted on each half of val's groups
    (:func:`~tasks.evaluate.calibration.halves`) and applied to the other; None when a half cannot fit one."""
    probe = np.asarray(readout.probe) if readout.probe else None
    inputs = _join_inputs(val, probe, readout.probe_bias)
    half = halves(groups, val.y, seed)
    p = np.empty(val.y.size)
    for h in (0, 1):
        fit_on, score = half != h, half == h
        if _too_few(val.y[fit_on], "a half of val"):
            return None
        join = fit_join({k: v[fit_on] for k, v in inputs.items()}, val.y[fit_on], readout.probe, readout.probe_bias)
        z = join.bias + sum(w * inputs[k][score] for k, w in join.weights.items())
        p[score] = 1.0 / (1.0 + np.exp(-z))
    return p
