"""Issue 25: evaluate-avff's AUC interval resamples a REAL and its fakes together, as its text says.

The demo's evaluation.md said "bootstrap resamples of groups (a REAL video and its fakes)" over a table
counting 56 groups for 56 videos: no row carried a group, so each video was its own.
"""

from __future__ import annotations

import json
import logging

from flows.evaluate import _targets
from tasks.evaluate.videos import evaluate_videos
from tasks.synthetic.dfdc_sample import add_refusals, make_dfdc_sample


def test_a_fake_shares_its_originals_group_and_the_table_counts_groups(tmp_path):
    sample = make_dfdc_sample(tmp_path / "s", n_real=3, duration_s=1.0, size=(64, 64), seed=0,
                              manipulations=("face_blend", "audio_swap"))  # fmt: skip
    add_refusals(sample)  # a file without an entry: scored unlabelled, its own group
    meta = json.loads(next(sample.glob("*/metadata.json")).read_text())
    targets = _targets(str(sample), logging.getLogger("test"))
    groups = {video_id: group for video_id, _, label, _, group in targets if label is not None}
    assert len(groups) == 9 and len(set(groups.values())) == 3
    for name, entry in meta.items():
        if entry["label"] == "FAKE":
            assert groups[name.removesuffix(".mp4")] == entry["original"].removesuffix(".mp4")
    rows = [{"video_id": v, "label": label, "manipulation": m, "group": g, "p_fake": 0.2 + 0.6 * (label == "FAKE")}
            for v, _, label, m, g in targets]  # fmt: skip
    result = evaluate_videos(rows, prior=0.5, n_bootstrap=20)
    assert result["overall"]["n_groups"] == 3 and result["by_type"]["face_blend"]["n_groups"] == 3
