"""Epoch schedules of stage 2: curriculum learning (easy -> hard) and progressive resizing.

Curriculum (self-paced, Kumar et al. 2010, with a linear pacing function): at the start of
stage-2 epoch e the CURRENT model scores every training clip; a clip's difficulty is its
binary cross-entropy under that model (:func:`clip_difficulty`). The epoch then trains on the
easiest ``linear_ramp(e)`` fraction of clips, chosen per class so the subset keeps the class
prior (:func:`easiest_clips`); the fraction grows linearly from ``start`` to 1 over the ramp.
Cost: one extra inference pass over the training split per ramp epoch (~1/3 of a training
epoch), and fewer optimizer steps in those epochs.

Progressive resizing uses the same ramp as a scale: frames are shrunk and enlarged back
(:func:`tasks.train.batch_augment.down_up`), so early epochs see coarse faces and later ones full
detail. The ViT token grid stays fixed; it saves no compute (state it when comparing runs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tasks.evaluate.metrics import PROB_EPS


def linear_ramp(epoch: int, *, start: float, epochs: int) -> float:
    """``start`` at epoch 0 rising linearly to 1.0 at ``epochs`` (and after); ``epochs <= 0`` is 1.0."""
    if not 0.0 < start <= 1.0:
        raise ValueError(f"start must be in (0, 1], got {start}")
    if epochs <= 0 or epoch >= epochs:
        return 1.0
    return start + (1.0 - start) * max(epoch, 0) / epochs


def clip_difficulty(y, p_fake) -> np.ndarray:
    """(N,) per-clip BCE (nats) of the model's FAKE probabilities: the curriculum's difficulty."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p_fake, dtype=np.float64), PROB_EPS, 1 - PROB_EPS)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def easiest_clips(keys: Sequence[tuple[str, int]], y, difficulty, fraction: float) -> frozenset[tuple[str, int]]:
    """The ``ceil(fraction n_c)`` least difficult clips of each class c, as (video_id, clip) keys.

    Ties break on the key, so the choice is deterministic. Within a class, every kept clip is
    at most as difficult as every dropped one.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    y, d = np.asarray(y), np.asarray(difficulty, dtype=np.float64)
    if not len(keys) == len(y) == len(d):
        raise ValueError(f"keys, y and difficulty differ in length: {len(keys)}, {len(y)}, {len(d)}")
    kept: list[tuple[str, int]] = []
    for label in np.unique(y):
        idx = [i for i in range(len(keys)) if y[i] == label]
        idx.sort(key=lambda i: (d[i], keys[i]))
        kept += [keys[i] for i in idx[: int(np.ceil(fraction * len(idx)))]]
    return frozenset(kept)
