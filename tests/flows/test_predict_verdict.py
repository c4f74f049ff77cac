"""`avff predict` prints a FAKE/REAL verdict with the threshold the model was registered with."""

import re
import subprocess
import sys

import pytest

from tasks.serve.decision import verdict


def test_verdict_uses_the_models_threshold_or_says_it_has_none():
    assert verdict(0.40, 0.35) == {"verdict": "FAKE", "threshold": 0.35, "threshold_source": "model"}
    assert verdict(0.30, 0.35)["verdict"] == "REAL"
    assert verdict(0.60, None) == {"verdict": "FAKE", "threshold": 0.5, "threshold_source": "default"}
    assert verdict(None, 0.35)["verdict"] is None  # an unscored video has no verdict


@pytest.mark.slow  # starts a Prefect server
def test_predict_prints_verdict_beside_p_fake(trained, dfdc_sample):
    import mlflow

    videos = sorted(dfdc_sample.rglob("*.mp4"))[:2]
    version = mlflow.MlflowClient(trained["tracking_uri"]).get_model_version("avff-dfdc", trained["model_version"])
    out = subprocess.run(
        [sys.executable, "-m", "flows.cli", "predict", *map(str, videos), "--model",
         f"avff-dfdc@{trained['model_version']}", "--tracking-uri", trained["tracking_uri"]],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if "P(FAKE)" in line]
    assert len(lines) == 2, out.stdout
    for line in lines:
        m = re.search(r": (FAKE|REAL)  P\(FAKE\) = ([0-9.]+), threshold ([0-9.]+)  \(", line)
        assert m, line
        p, t = float(m[2]), float(m[3])
        assert t == pytest.approx(float(version.tags["threshold"]), abs=5e-4)
        assert m[1] == ("FAKE" if p >= t else "REAL")
