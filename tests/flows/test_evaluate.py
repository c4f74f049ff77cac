"""evaluate-avff on an external generated folder with the registered model."""

import json

import mlflow


def test_evaluate_flow_reports_per_manipulation(trained, tmp_path):
    from flows.evaluate import EvaluateConfig, evaluate_avff
    from tasks.sample_data import MANIPULATIONS, make_dfdc_sample

    data = make_dfdc_sample(tmp_path / "external", n_real=2, parts=0, duration_s=3.5, size=(160, 160), seed=123)
    result = evaluate_avff(EvaluateConfig(data=str(data), model=f"avff-dfdc@{trained['model_version']}",
                                          tracking_uri=trained["tracking_uri"], out=str(tmp_path / "eval")))  # fmt: skip
    assert set(result["by_type"]) == set(MANIPULATIONS)
    assert result["overall"]["n_real"] == 2 and result["overall"]["n_fake"] == 2 * len(MANIPULATIONS)
    scores = json.loads((tmp_path / "eval" / "scores.json").read_text())
    assert all(0 <= r["p_fake"] <= 1 for r in scores["rows"])
    run = mlflow.MlflowClient(trained["tracking_uri"]).get_run(result["run_id"])
    assert "eval_auc" in run.data.metrics and "eval_face_blend_auc" in run.data.metrics
    assert "| lipsync_offset |" in (tmp_path / "eval" / "evaluation.md").read_text()
