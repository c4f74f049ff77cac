"""The one decision rule (tasks/serve/decision.py) and the sentence that names it in reports."""

from storage.decision import Decision, read_decision, write_decision
from tasks.serve.decision import describe, verdict


def test_verdict_is_p_fake_at_or_above_the_threshold():
    assert verdict(0.85, 0.85)["verdict"] == "FAKE" and verdict(0.849, 0.85)["verdict"] == "REAL"
    assert verdict(0.5, None) == {"verdict": "FAKE", "threshold": 0.5, "threshold_source": "default"}


def test_describe_names_threshold_criterion_and_calibration(tmp_path):
    write_decision(str(tmp_path), Decision(0.85, "f1", 0.4, -0.25))
    text = describe(read_decision(str(tmp_path)))
    assert "P(FAKE) >= 0.850, the model's threshold (chosen on val by f1)" in text
    assert "sigmoid(0.400 * logit -0.250), Platt scaling fitted on val" in text
    assert "default: the model carries no decision.json" in describe(None) and "uncalibrated" in describe(None)
    assert "0.500 (default: no threshold could be chosen" in describe(Decision(0.5, "default", 1.0))
    joined = Decision(0.85, "f1", 0.4, -0.25, {"weights": {"fusion": 0.2, "signals": 2.5}, "bias": 0.1})
    assert "the logit joined by the read-out fitted after training (fusion +0.200, signals +2.500)" in describe(joined)
    assert "read-out" not in text
