"""Run summaries: deep merges, mean/std, the ablation table and plot (pure, ms)."""

from __future__ import annotations

import math

import pytest

from tasks.evaluate import experiments as X


def test_deep_merge_merges_mappings_and_replaces_the_rest():
    base = {"lr": 1e-3, "overrides": {"num_slices": 2, "dropout": 0.0}, "mix": {"mixup_alpha": 0.0}, "seeds": [0]}
    out = X.deep_merge(base, {"overrides": {"dropout": 0.1}, "seeds": [1, 2], "fusion": "late"})
    assert out == {"lr": 1e-3, "overrides": {"num_slices": 2, "dropout": 0.1}, "mix": {"mixup_alpha": 0.0},
                   "seeds": [1, 2], "fusion": "late"}  # fmt: skip
    assert base["overrides"]["dropout"] == 0.0  # the base is untouched


def test_spread_is_the_sample_std_over_finite_values():
    s = X.spread([0.6, 0.8, math.nan, 1.0])
    assert (s.mean, s.n) == (pytest.approx(0.8), 3) and s.std == pytest.approx(0.2)
    assert X.spread([0.7]).std == 0.0 and X.spread([math.nan]).n == 0
    summary = X.summarize([{"a": 1.0, "b": 2.0}, {"a": 3.0}])
    assert list(summary) == ["a"] and X.summary_metrics(summary, "cv") == {
        "cv_mean_a": 2.0,
        "cv_std_a": pytest.approx(math.sqrt(2)),
    }


def _run(auc: float, ll: float) -> dict[str, float]:
    base = {f"best_val_baselines_video_{b}_{m}": v for b, vals in
            {"prior": {"auc": 0.5, "log_loss": 0.69}, "majority": {"auc": 0.5, "log_loss": 8.0}}.items()
            for m, v in {**vals, "balanced_accuracy": 0.5, "eer": math.nan}.items()}  # fmt: skip
    return {"best_val_video_auc": auc, "best_val_video_log_loss": ll, "best_val_video_balanced_accuracy": 0.7,
            "best_val_video_eer": 0.3, **base}  # fmt: skip


def test_comparison_table_has_variants_with_seed_spread_and_baseline_rows(tmp_path):
    rows = X.comparison_rows({"concat": [_run(0.9, 0.3), _run(0.8, 0.4)], "video": [_run(0.7, 0.5)]})
    assert [(r.name, r.kind) for r in rows] == [("concat", "variant"), ("video", "variant"),
                                                ("prior", "baseline"), ("majority", "baseline")]  # fmt: skip
    assert rows[0].get("auc").mean == pytest.approx(0.85) and rows[0].get("auc").n == 2
    assert rows[3].get("log_loss").mean == 8.0
    md = X.comparison_markdown(rows, split="val", level="video", seeds=[0, 1])
    assert "| concat | variant | 2 | 0.850 ± 0.071 | 0.350 ± 0.071 |" in md
    assert "| prior | baseline | - | 0.500 | 0.690 |" in md
    png = X.plot_comparison(rows, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert X.run_split("val") == "best_val" and X.run_split("test") == "test"
    with pytest.raises(ValueError, match="val|test"):
        X.run_split("best_val")
    with pytest.raises(ValueError):
        X.check_name("a b")


def test_cv_markdown_lists_every_fold_and_the_mean():
    md = X.cv_markdown({0: {"m": 0.5}, 1: {"m": 0.7}}, ["m", "missing"])
    assert "| 0 | 0.500 |" in md and "| **mean ± std** | 0.600 ± 0.141 |" in md and "missing" not in md
