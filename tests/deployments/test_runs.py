"""deployments/runs.py's reading of MLflow over REST, with the server's answers stubbed."""

from __future__ import annotations

from deployments import runs
from tasks.tracking.ui import RUN_TYPE_EVALUATION, RUN_TYPE_TAG, TAG_STEPS_OF


def _run(run_id: str, **tags: str) -> dict:
    return {"info": {"run_id": run_id, "experiment_id": "1"},
            "data": {"tags": [{"key": k, "value": v} for k, v in tags.items()]}}  # fmt: skip


def test_the_latest_training_run_is_neither_an_evaluation_run_nor_a_curves_child(monkeypatch):
    """After `avff evaluate`, the newest run of the experiment is the evaluation run: the demo's summary and the
    screenshots' run page and model card must still show the newest training run (the evaluation registers none)."""
    newest_first = [_run("eval", **{RUN_TYPE_TAG: RUN_TYPE_EVALUATION}), _run("curves", **{TAG_STEPS_OF: "train"}),
                    _run("train"), _run("older")]  # fmt: skip

    def answer(url: str, payload: dict | None = None, timeout: float = 30.0):
        if "get-by-name" in url:
            return {"experiment": {"experiment_id": "1"}}
        assert payload["order_by"] == ["attributes.start_time DESC"]
        return {"runs": newest_first}

    monkeypatch.setattr(runs, "http_json", answer)
    assert runs.latest_mlflow_run("http://mlflow", "avff")["info"]["run_id"] == "train"
