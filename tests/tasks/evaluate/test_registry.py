"""The registry's rules as plain functions: the prior gate, the champion, the model card."""

import math

import numpy as np
import pytest

from tasks.evaluate import calibration as C
from tasks.evaluate import metrics as M
from tasks.evaluate.registry import Gate, GateNumbers, champion_verdict, gate_numbers, model_card, prior_gate

VAL = {"best_val_video_log_loss": 0.40, "best_val_baselines_video_prior_log_loss": 0.50,
       "best_val_video_auc": 0.81, "best_val_baselines_video_prior_auc": 0.5,
       "best_val_clip_log_loss": 0.70, "best_val_baselines_clip_prior_log_loss": 0.60}  # fmt: skip


def test_prior_gate_compares_the_monitored_metric_with_the_prior():
    video_ll, video_auc, clip_ll = (
        GateNumbers(0.40, 0.50, (-0.2, 0.01)),
        GateNumbers(0.81, 0.5),
        GateNumbers(0.70, 0.60),
    )
    passed = prior_gate(video_ll, "val_video_log_loss", "min")  # 0.40 < 0.50
    assert passed.register and passed.interval == (-0.2, 0.01)
    assert not prior_gate(video_ll, "val_video_log_loss", "min", min_improvement=0.2).register  # needs < 0.30
    assert prior_gate(video_auc, "val_video_auc", "max").register  # 0.81 > 0.5
    refused = prior_gate(clip_ll, "val_loss", "min")  # clip log loss 0.70 > 0.60
    assert not refused.register and "does not beat the prior's 0.6000" in refused.reason
    assert prior_gate(clip_ll, "val_loss", "min", register_if="always").register
    assert not prior_gate(video_ll, "val_video_log_loss", "min", register_if="never").register
    assert not prior_gate(GateNumbers(math.nan, 0.5), "val_video_log_loss", "min").register


def _val(n_groups: int, signal: float, fake: float = 0.85, seed: int = 0):
    """Val clips of a model that learned a 41 % FAKE prior: two videos (a REAL's fake and itself) per group,
    two clips per video; the logit carries ``signal`` times the label."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"g{i}" for i in range(n_groups)], 4)  # (N,)
    videos = np.repeat([f"v{i}" for i in range(2 * n_groups)], 2)
    y = np.repeat((rng.random(2 * n_groups) < fake).astype(np.int64), 2)
    z = C.to_logits(0.41) + signal * (y - 0.5) + rng.normal(0, 1.0, y.size)
    return y, C.sigmoid(z), videos, groups


def test_the_gate_refuses_an_uninformative_model_that_in_sample_calibration_would_pass():
    """A Platt map fitted on all of val learns val's base rate and 'beats' the training prior; cross-fitted, the
    model meets a prior given the same information (the other half's FAKE fraction) and does not beat it."""
    y, p, videos, groups = _val(150, signal=0.0)
    numbers = gate_numbers(y, p, videos, groups, "val_video_log_loss", n_bootstrap=100)
    gate = prior_gate(numbers, "val_video_log_loss", "min")
    assert not gate.register and numbers.value > numbers.prior - 0.005 and numbers.groups == 150
    lo, hi = numbers.interval
    assert lo < numbers.value - numbers.prior < hi and lo < 0 < hi + 0.01
    _, yv, _ = M.aggregate_by_video(videos, y, p)
    in_sample = C.fit_platt(y, C.to_logits(p))(C.to_logits(p))
    _, _, pv = M.aggregate_by_video(videos, y, in_sample)
    train_prior = M.log_loss(yv, np.full(yv.size, 0.41))
    assert M.log_loss(yv, pv) < train_prior - 0.2  # what deciding in-sample against the training prior saw
    assert "2-fold cross-fitted by group" in gate.reason


def test_the_gate_registers_a_model_with_signal_and_its_interval_excludes_zero():
    y, p, videos, groups = _val(150, signal=4.0)
    numbers = gate_numbers(y, p, videos, groups, "val_video_log_loss", n_bootstrap=100)
    gate = prior_gate(numbers, "val_video_log_loss", "min")
    assert gate.register and numbers.interval[1] < 0 < numbers.prior - numbers.value
    assert gate.headline().startswith("**Registry gate: register.** Cross-fitted val val_video_log_loss: model ")
    assert f"difference {numbers.value - numbers.prior:+.4f}" in gate.headline()
    auc = gate_numbers(y, p, videos, groups, "val_video_auc", n_bootstrap=20)
    assert auc.value == pytest.approx(M.binary_metrics(*M.aggregate_by_video(videos, y, p)[1:])["auc"], abs=0.02)


def test_a_tiny_val_half_falls_back_to_the_identity_and_says_so():
    y, p, videos, groups = _val(3, signal=2.0, fake=0.5, seed=3)
    numbers = gate_numbers(y, p, videos, groups, "val_loss", n_bootstrap=20)
    assert "half 0: val holds one class only (4 clips, 4 FAKE)" in numbers.note
    assert numbers.prior < 2.0  # the one-class half's prior for the other is smoothed, not a certainty


def test_a_val_of_one_group_meets_the_training_prior_not_a_coin_flip_and_has_no_interval():
    """The demo's val held one group: nothing to cross-fit, and the prior read 0.5 (log loss ln 2 = 0.6931), so a
    model that lost to the report's prior on test (0.530 vs 0.410) passed the gate on val (0.52 vs 0.69)."""
    y, p, videos, groups = _val(1, signal=0.0, fake=0.5, seed=0)  # one group: a REAL video and its fake, 4 clips
    assert sorted(y.tolist()) == [0, 0, 1, 1]
    numbers = gate_numbers(y, p, videos, groups, "val_video_log_loss", n_bootstrap=50, train_prior=0.86)
    _, yv, _ = M.aggregate_by_video(videos, y, p)
    assert numbers.prior == pytest.approx(M.log_loss(yv, np.full(yv.size, 0.86)))  # the report's prior baseline
    assert numbers.prior != pytest.approx(math.log(2))
    gate = prior_gate(numbers, "val_video_log_loss", "min")
    assert numbers.groups == 1 and all(math.isnan(x) for x in numbers.interval)
    assert "no interval: val holds too few groups" in gate.headline()
    assert "1 val group: nothing to cross-fit, the prior is the training prior 0.860" in gate.reason
    # the demo's reason also said "2-fold cross-fitted by group (half 0: val holds one class only (0 clips, ...":
    # a fit of an empty half, contradicting "nothing to cross-fit"
    assert "uncalibrated" in gate.reason and "2-fold" not in gate.reason and "half 0" not in gate.reason


def test_cross_fit_prior_shrinks_towards_the_given_prior_with_two_clips_weight():
    y, z, groups = np.array([1, 1, 0, 1]), np.zeros(4), np.array(["a", "a", "b", "b"])
    laplace = C.cross_fit(y, z, groups)  # the default π = 0.5 is Laplace's (n_fake + 1) / (n + 2)
    half = C.halves(groups, y)
    for i in range(4):
        other = half != half[i]
        assert laplace.prior[i] == pytest.approx((y[other].sum() + 1) / (other.sum() + 2))
    shifted = C.cross_fit(y, z, groups, prior=0.9)
    assert np.all(shifted.prior > laplace.prior)


def test_champion_moves_only_to_a_better_model_on_the_same_val_set():
    gate = Gate(True, "val_video_log_loss", 0.40, 0.50, "")
    same = {"monitor": "val_video_log_loss", "manifest_sha256": "abc"}
    assert champion_verdict(gate, "min", "abc", None)[0]  # no champion yet
    assert champion_verdict(gate, "min", "abc", {**same, "monitor_value": "0.45"})[0]
    assert not champion_verdict(gate, "min", "abc", {**same, "monitor_value": "0.35"})[0]
    promote, why = champion_verdict(gate, "min", "other", {**same, "monitor_value": "0.45"})
    assert not promote and "not comparable" in why
    assert not champion_verdict(Gate(False, "val_video_log_loss", 0.1, 0.5, ""), "min", "abc", None)[0]


def test_model_card_shows_data_metrics_against_baselines_threshold_and_preprocessing():
    test = {"test_video_auc": 0.79, "test_baselines_video_prior_auc": 0.5, "test_baselines_video_majority_f1": 0.9}
    card = model_card(
        gate=prior_gate(GateNumbers(0.40, 0.50, (-0.15, -0.05)), "val_video_log_loss", "min"), data="/data/shards", manifest_sha256="f" * 64,
        dataset={"train": {"videos_real": 3, "videos_fake": 9, "groups": 3}}, val_metrics=VAL, test_metrics=test,
        threshold=0.42, threshold_criterion="f1", preprocess={"face_size": 224, "require_audio": True},
        model={"preset": "tiny", "best_epoch": 4}, links={"MLflow run": "http://mlflow/#/experiments/1/runs/r"},
    )  # fmt: skip
    assert card.splitlines()[2].startswith("**Registry gate: register.** Cross-fitted val val_video_log_loss: model "
                                          "0.4000, prior 0.5000, difference -0.1000 (95 % group-bootstrap interval "
                                          "[-0.1500, -0.0500]). Reason: val_video_log_loss 0.4000 beats")  # fmt: skip
    assert "| train | &emsp;3 | &emsp;9 | &emsp;3 |" in card and "`/data/shards`" in card
    assert "| model | &emsp;0.810 | &emsp;0.400 |" in card and "| prior baseline | &emsp;0.500 | &emsp;0.500 |" in card
    assert (
        "| model | &emsp;0.790 |" in card
        and "| majority baseline | &emsp;n/a | &emsp;n/a | &emsp;n/a | &emsp;0.900 |" in card
    )
    assert "P(FAKE) >= 0.4200 (maximises f1 on val videos)" in card
    assert "- face_size: 224" in card and "- MLflow run: http://mlflow/#/experiments/1/runs/r" in card


def _card() -> str:
    return model_card(
        gate=prior_gate(GateNumbers(0.40, 0.50, (-0.15, -0.05)), "val_video_log_loss", "min"), data="/data/shards",
        manifest_sha256="f" * 64, dataset={"train": {"videos_real": 3, "videos_fake": 9, "groups": 3},
                                           "val": {"videos_real": 1, "videos_fake": 6, "groups": 1}},
        val_metrics=VAL, test_metrics={"test_video_auc": 0.667, "test_video_log_loss": 0.405}, threshold=0.42,
        threshold_criterion="f1", preprocess={"face_size": 224}, model={"preset": "tiny"}, links={},
    )  # fmt: skip


def test_model_card_tables_are_gfm_tables_whose_cells_stay_apart_through_the_mlflow_registry(tmp_path):
    """MLflow's registry page draws a description's tables without cell padding: "0.6670.405". Read the
    card back from a real registry, parse it as GFM, and check every table parses whole and every cell
    after the first opens with a space that survives the UI's cell trimming (an entity, not whitespace)."""
    import html
    import re

    from markdown_it import MarkdownIt
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db", registry_uri=f"sqlite:///{tmp_path}/mlflow.db")
    client.create_registered_model("card-test")
    version = client.create_model_version("card-test", source=str(tmp_path), description=_card())
    stored = client.get_model_version("card-test", version.version).description

    rendered = MarkdownIt("commonmark").enable("table").render(stored)
    tables = re.findall(r"<table>.*?</table>", rendered, flags=re.S)
    assert len(tables) == 3  # the splits, val, test: none swallowed into a paragraph
    assert "|" not in re.sub(r"<table>.*?</table>", "", rendered, flags=re.S)  # no table left unparsed
    for table in tables:
        rows = re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)
        widths = {len(re.findall(r"<t[hd][^>]*>", r)) for r in rows}
        assert len(widths) == 1, table  # every row as wide as the header
        for row in rows:
            cells = [html.unescape(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, flags=re.S)]
            # the UI's converter runs JS trim() on each cell: what is left must still start with a space
            assert all(c.strip(" \t\n") and c.strip(" \t\n")[0] == "\u2003" for c in cells[1:]), row
    val_model = re.search(r"<tr>\s*<td>model</td>(.*?)</tr>", next(t for t in tables if "0.810" in t), flags=re.S)
    assert re.findall(r"<td[^>]*>(.*?)</td>", val_model.group(1))[:2] == ["\u20030.810", "\u20030.400"]


def test_model_card_lists_the_hand_made_statistics_a_run_measured_beside_the_baselines():
    """The statistics' AUC (no log loss: a statistic is no probability) on the card's video tables; a run
    that did not measure them (an older version) shows no such row."""
    test = {"test_video_auc": 0.79, "test_baselines_video_prior_auc": 0.5, "test_baselines_video_lip_sync_auc": 0.97,
            "test_baselines_video_sharpness_auc": 0.55}  # fmt: skip

    def card(test_metrics):
        return model_card(gate=prior_gate(GateNumbers(0.40, 0.50), "val_video_log_loss", "min"), data="/d",
                          manifest_sha256="f" * 64, dataset={}, val_metrics=VAL, test_metrics=test_metrics,
                          threshold=0.42, threshold_criterion="f1", preprocess=None, model={}, links={})  # fmt: skip

    val_part, test_part = card(test).split("## Decision")[0].split("test:")
    assert "| hand-made" not in val_part  # VAL holds no statistic
    rows = test_part.splitlines()
    majority = next(i for i, r in enumerate(rows) if r.startswith("| majority baseline"))
    assert rows[majority + 1] == "| hand-made lip-sync statistic | &emsp;0.970 | &emsp;n/a | &emsp;n/a | &emsp;n/a |"
    assert rows[majority + 2] == "| hand-made sharpness statistic | &emsp;0.550 | &emsp;n/a | &emsp;n/a | &emsp;n/a |"
    assert "| hand-made" not in card({"test_video_auc": 0.79}).split("test:")[1].split("## Decision")[0]
