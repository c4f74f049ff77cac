"""bench/learning.py: the pooled sync margin's interval carries the variance between stage-1 runs; --report
never silently drops rows whose JSONs are missing."""

import json

import numpy as np
import pytest

from bench.learning import BEGIN, END, main, pooled_margin


def test_the_pooled_interval_excludes_zero_only_when_every_run_agrees():
    rng = np.random.default_rng(0)
    agree = [rng.normal(1.0, 1.0, 150) for _ in range(3)]  # three runs that all use the audio
    disagree = [rng.normal(m, 1.0, 150) for m in (3.0, -1.0, 1.0)]  # same mean, runs far apart
    a, d = pooled_margin(agree), pooled_margin(disagree)
    assert a["lo"] > 0 and abs(a["margin"] - 1.0) < 0.2
    assert d["lo"] < 0 < d["hi"]  # the clips alone would exclude 0; the runs' spread does not
    assert d["hi"] - d["lo"] > 3 * (a["hi"] - a["lo"])


def test_a_margin_of_noise_is_not_called_positive():
    rng = np.random.default_rng(1)
    m = pooled_margin([rng.normal(0.0, 1.0, 150) for _ in range(3)])
    assert m["lo"] < 0 < m["hi"]


def test_report_refuses_to_drop_rows_whose_results_are_missing(tmp_path):
    margin = {"margin": 1e-3, "lo": 5e-4, "hi": 2e-3, "diffs": [1e-3] * 10}
    res = tmp_path / "results"
    res.mkdir()
    (res / "margin-r-seed0_avff_agree_t1.json").write_text(json.dumps(
        {"stage1": "/x/seed0/pretrain", "w_sync": 1.0, "tubelet": 1, "epochs": 32, "random init": margin,
         "stage 1": margin}))  # fmt: skip
    doc = tmp_path / "doc.md"
    doc.write_text(f"prose\n{BEGIN}\n" + "| a | b |\n" * 40 + f"{END}\nmore prose\n")
    with pytest.raises(SystemExit, match="40 rows"):
        main(["--report", str(doc), "--results", str(res)])
    assert doc.read_text().count("| a | b |") == 40  # untouched
    main(["--report", str(doc), "--results", str(res), "--force"])
    text = doc.read_text()
    assert "seed0, 32 epochs" in text and "| a | b |" not in text and text.endswith("more prose\n")
