"""tasks/evaluate/benchmark.py: the hand-made baselines as score rows, paired subsets, per-type AUC and the summary's marks."""

from __future__ import annotations

import math

import numpy as np

from tests.benchmark_rows import external_rows
from tasks.evaluate import benchmark as E
from tasks.evaluate.handmade import STATISTICS


def test_a_handmade_statistic_scores_like_a_model_keeping_its_ranking_and_its_gaps():
    name = next(iter(STATISTICS))
    inputs = [{"video_id": v, "label": lab, "manipulation": m, "group": "g", "reason": r, "inputs": None,
               "handmade": h} for v, lab, m, r, h in [("a", "REAL", None, None, {name: -1.0}),
                                                      ("b", "FAKE", "audio_swap", None, {name: 2.0}),
                                                      ("c", "FAKE", "audio_swap", "no face", {}),
                                                      ("d", "REAL", None, None, {name: math.nan})]]  # fmt: skip
    rows = E.handmade_rows(inputs, name)
    assert [r["video_id"] for r in rows] == ["a", "b", "c", "d"] and rows[2]["reason"] == "no face"
    assert 0 < rows[0]["p_fake"] < 0.5 < rows[1]["p_fake"] < 1
    assert rows[2]["p_fake"] is None and rows[3]["p_fake"] is None  # no clip or no finite statistic: not scored
    assert set(rows[0]) == {*E.ROW_KEYS, "p_fake"}


def test_paired_arrays_keep_only_videos_every_variant_scored():
    rng = np.random.default_rng(0)
    a, b = external_rows(rng, 2.0, groups=3), external_rows(rng, 2.0, groups=3)
    b[1] = {**b[1], "p_fake": None}  # b could not score the first group's first fake
    sel = E.subset(a, ("lipsync_offset",))
    assert {r["label"] for r in sel} == {"REAL", "FAKE"} and all(
        r["manipulation"] in (None, "lipsync_offset") for r in sel
    )
    y, pa, pb, groups = E.paired_arrays(E.subset(a, None), ["a", "b"], {"a": a, "b": b})
    assert len(y) == len(pa) == len(pb) == len(groups) == len(a) - 1 and a[1]["video_id"] not in groups
    assert pb == [r["p_fake"] for r in b if r["p_fake"] is not None]


def test_a_type_with_signal_scores_above_one_without():
    rng = np.random.default_rng(2)
    strong, none = external_rows(rng, 6.0, groups=20), external_rows(rng, 0.0, groups=20)
    assert E.type_auc(strong, "face_blend", 50)["mean"] > 0.9
    assert abs(E.type_auc(none, "face_blend", 50)["mean"] - 0.5) < 0.3


def test_the_summary_marks_stand_in_cells_and_scores_the_last_checkpoint_apart():
    rng = np.random.default_rng(0)
    variants = ["avff", "avff_plain", "video_only"]
    per_seed = {s: {v: {"rows": external_rows(rng, 1.0, s), "rows_last": external_rows(rng, 0.0, s), "prior": 0.86,
                        "val_identities": 10} for v in variants} for s in range(2)}  # fmt: skip
    stood_in = {
        "avff": frozenset({"lipsync_offset"}),
        "avff_plain": frozenset(),
        "video_only": frozenset({"face_blend"}),
    }
    summary = E.summarise(per_seed, variants, 50, {"video_only"}, stood_in)
    assert summary["stand_in"][("lipsync_offset", "avff")] and not summary["stand_in"][("lipsync_offset", "avff_plain")]
    assert not summary["stand_in"][("face_blend", "avff")] and summary["stand_in"][("face_blend", "video_only")]
    assert summary["stand_in"][("all", "avff")] and not summary["stand_in"][("audio-visual fakes", "video_only")]
    for v in variants:  # the last checkpoint has no signal here, the best has some
        assert summary["cells_last"][("all", v)]["mean"] < summary["cells"][("all", v)]["mean"]
    assert ("lipsync_offset", "avff") not in summary["cells_last"]  # the last is scored on LAST_SUBSETS only
    assert set(summary["paired"]) == {(a, "video_only", n) for a in ("avff", "avff_plain")
                                      for n in ("audio-visual fakes", "all")}  # fmt: skip
    assert summary["val_identities"] == {0: 10, 1: 10} and summary["n_videos"] == {0: 12 * 7, 1: 12 * 7}
