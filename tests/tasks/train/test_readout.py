"""Fitting the read-out (tasks/train/readout.py) on parts whose cue is known: a texture feature that separates
one fake type, a fusion logit that only memorised the training clips."""

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from avff_model.readout import Readout
from tasks.evaluate.calibration import halves
from tasks.train.readout import Parts, collect, cross_fitted, fit_readout


def _parts(n: int, seed: int, memorised: bool) -> Parts:
    """n clips, half FAKE; a FAKE's texture feature 0 is raised (the cue, as blur lowers the Laplacian energy);
    the signal logit says nothing; the fusion logit knows every training label (``memorised``), noise elsewhere."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int64)
    texture = rng.normal(size=(n, 5))
    texture[:, 0] += 1.5 * y
    fusion = 4.0 * (2 * y - 1) + rng.normal(size=n) if memorised else 2.0 * rng.normal(size=n)
    keys = [(f"v{i // 2}", i % 2, 0) for i in range(n)]
    return Parts(keys, y, {"fusion": fusion, "signals": rng.normal(size=n)}, texture)


def _score(readout: Readout, parts: Parts) -> np.ndarray:
    branches = {k: torch.from_numpy(v) for k, v in parts.logits.items()}
    return readout(branches, torch.from_numpy(parts.texture)).numpy()


def test_the_join_fitted_on_val_reads_the_texture_cue_the_memorised_fusion_logit_hides():
    train, val, test = _parts(400, 0, memorised=True), _parts(200, 1, memorised=False), _parts(400, 2, False)
    readout, why = fit_readout(train, val)
    assert why is None and set(readout.weights) == {"fusion", "signals", "probe"} and len(readout.probe) == 5
    summed = test.logits["fusion"] + test.logits["signals"]  # the end-to-end join: memorised noise on new clips
    assert roc_auc_score(test.y, summed) < 0.6 and roc_auc_score(test.y, _score(readout, test)) > 0.8
    assert abs(readout.weights["probe"]) > abs(readout.weights["fusion"])  # val says which part carries over


def test_the_folded_weights_score_as_the_standardised_regressions_do():
    """The standardisation folded into plain weights changes no number: the probe is sklearn's decision function
    on standardised train features, the join sklearn's on val's standardised parts."""
    train, val = _parts(300, 3, memorised=False), _parts(100, 4, memorised=False)
    readout, _ = fit_readout(train, val)
    mu, sd = train.texture.mean(0), train.texture.std(0) + 1e-6
    probe = LogisticRegression(max_iter=5000).fit((train.texture - mu) / sd, train.y)
    p_val = probe.decision_function((val.texture - mu) / sd)
    np.testing.assert_allclose(val.texture @ np.asarray(readout.probe) + readout.probe_bias, p_val, rtol=1e-9,
                               atol=1e-9)  # fmt: skip
    x = np.stack([val.logits["fusion"], val.logits["signals"], p_val], axis=1)
    join = LogisticRegression(max_iter=5000).fit((x - x.mean(0)) / (x.std(0) + 1e-6), val.y)
    np.testing.assert_allclose(_score(readout, val), join.decision_function((x - x.mean(0)) / (x.std(0) + 1e-6)),
                               rtol=1e-6, atol=1e-6)  # fmt: skip


def test_nothing_is_fitted_without_signal_branches_or_without_both_classes():
    train, val = _parts(40, 5, memorised=False), _parts(40, 6, memorised=False)
    no_signals = Parts(val.keys, val.y, {"fusion": val.logits["fusion"]}, None)
    readout, why = fit_readout(train, no_signals)
    assert readout is None and "no signal branches" in why
    one_class = Parts(val.keys, np.zeros_like(val.y), val.logits, val.texture)
    readout, why = fit_readout(train, one_class)
    assert readout is None and why.startswith("val holds 40 clips, 0 FAKE")
    readout, _ = fit_readout(None, Parts(val.keys, val.y, val.logits, None))  # no texture branch: no probe
    assert set(readout.weights) == {"fusion", "signals"} and readout.probe == ()


def test_cross_fitted_val_scores_never_see_their_own_labels():
    """Each half of val's groups is scored by a join fitted on the other half: flipping one half's labels moves
    the other half's scores and leaves its own alone."""
    train, val = _parts(200, 7, memorised=False), _parts(120, 8, memorised=False)
    readout, _ = fit_readout(train, val)
    groups = [k[0] for k in val.keys]
    p = cross_fitted(readout, val, groups, seed=0)
    half = halves(groups, val.y, 0)
    flipped = np.where(half == 0, 1 - val.y, val.y)
    p_flipped = cross_fitted(readout, Parts(val.keys, flipped, val.logits, val.texture), groups, seed=0)
    # the halves are dealt by FAKE fraction, which flipping a pair (one REAL, one FAKE) keeps: same halves
    assert (halves(groups, flipped, 0) == half).all()
    np.testing.assert_allclose(p_flipped[half == 0], p[half == 0])
    assert not np.allclose(p_flipped[half == 1], p[half == 1])
    assert ((p > 0) & (p < 1)).all() and roc_auc_score(val.y, p) > 0.7


def test_collect_keeps_each_clips_logits_and_texture_and_stops_at_max_clips():
    """The texture features read alone (the probe's train pass, no encoders) equal those of the full pass; the
    logits are the model's own branches; ``max_clips`` stops after the batch that reaches it."""
    from avff_model import AVFF, get_config
    from avff_model.readout import logit_parts

    torch.manual_seed(0)
    model = AVFF(get_config("tiny", img_size=32, num_frames=4, n_mels=32, mel_frames=32, num_slices=2)).eval()
    g = torch.Generator().manual_seed(0)
    batches = [{"video": torch.randn(4, 3, 4, 32, 32, generator=g), "audio": torch.randn(4, 1, 32, 32, generator=g),
                "target": torch.tensor([0, 1, 0, 1]), "clip": torch.arange(4), "video_id": [f"b{i}"] * 4}
               for i in range(3)]  # fmt: skip
    full = collect(model, batches, device=torch.device("cpu"))
    alone = collect(model, batches, device=torch.device("cpu"), texture_only=True, max_clips=5)
    assert len(full.y) == 12 and len(alone.y) == 8 and alone.logits == {}
    np.testing.assert_allclose(alone.texture, full.texture[:8], rtol=1e-6, atol=1e-6)
    with torch.inference_mode():
        feats = model.forward_features(batches[0]["video"], batches[0]["audio"], model.inputs)
        own = logit_parts(model.branch_logits(feats))
    np.testing.assert_allclose(full.logits["signals"][:4], own["signals"].numpy(), rtol=1e-5, atol=1e-6)
    assert full.keys[5] == ("b1", 1, 0)
