"""evaluate-avff on an external generated folder with the registered model."""

import json
import math

import mlflow
import pytest


def test_evaluate_flow_reports_per_manipulation(trained, tmp_path):
    from flows.evaluate import EvaluateConfig, evaluate_avff
    from tasks.synthetic.dfdc_sample import MANIPULATIONS, make_dfdc_sample

    data = make_dfdc_sample(tmp_path / "external", n_real=2, parts=0, duration_s=3.5, size=(160, 160), seed=123)
    mlflow.MlflowClient(trained["tracking_uri"]).set_registered_model_alias("avff-dfdc", "scored", trained["model_version"])
    result = evaluate_avff(EvaluateConfig(data=str(data), model="avff-dfdc@scored",
                                          tracking_uri=trained["tracking_uri"], out=str(tmp_path / "eval"),
                                          probes=1))  # fmt: skip
    assert set(result["by_type"]) == set(MANIPULATIONS)
    assert result["overall"]["n_real"] == 2 and result["overall"]["n_fake"] == 2 * len(MANIPULATIONS)
    scores = json.loads((tmp_path / "eval" / "scores.json").read_text(), parse_constant=pytest.fail)  # no NaN
    assert all(0 <= r["p_fake"] <= 1 for r in scores["rows"])
    client = mlflow.MlflowClient(trained["tracking_uri"])
    run = client.get_run(result["run_id"])
    assert "eval_auc" in run.data.metrics and "eval_face_blend_auc" in run.data.metrics
    assert "| lipsync_offset |" in (tmp_path / "eval" / "evaluation.md").read_text()
    # the same experiment as training, tagged with the concrete version the alias pointed at
    assert run.info.experiment_id == client.get_run(trained["run_id"]).info.experiment_id
    assert run.data.tags["model_version"] == trained["model_version"] and run.data.tags["model_name"] == "avff-dfdc"
    assert run.data.tags["model_uri"] == f"models:/avff-dfdc/{trained['model_version']}"
    assert run.data.tags["training_run_id"] == trained["run_id"] and "prefect.flow_run_id" in run.data.tags
    # the prior baseline is the model's training FAKE fraction, not the evaluated set's
    version = client.get_model_version("avff-dfdc", trained["model_version"])
    assert scores["result"]["prior"] == pytest.approx(float(version.tags["train_fake_fraction"]))
    overall = result["overall"]
    assert result["loses_to_prior"] == (not overall["log_loss"] < overall["prior_log_loss"])
    assert run.data.tags["loses_to_prior"] == str(result["loses_to_prior"]).lower()
    warned = "the model loses to the prior on the evaluated set" in (tmp_path / "eval" / "evaluation.md").read_text()
    assert warned == result["loses_to_prior"]
    # shortcut probes on one REAL video: every probe scored against the re-encoded control
    probes = {r["probe"]: r for r in scores["result"]["probes"]}
    assert {"control", "audio_shift_+0.5s", "audio_shift_-1s", "silence_added_0.5s", "reencoded_crf35"} <= set(probes)
    assert probes["control"]["delta"] == 0.0
    assert all(probes[k]["delta"] is not None for k in ("audio_shift_+0.5s", "reencoded_crf35"))
    assert "## Shortcut probes (1 REAL videos)" in (tmp_path / "eval" / "evaluation.md").read_text()


def test_json_safe_turns_nan_into_null():
    from flows.evaluate import json_safe

    out = json.dumps(json_safe({"auc": math.nan, "by_type": [{"ap": math.inf, "n": 3}]}), allow_nan=False)
    assert json.loads(out) == {"auc": None, "by_type": [{"ap": None, "n": 3}]}
