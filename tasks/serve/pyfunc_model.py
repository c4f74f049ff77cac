"""The MLflow pyfunc wrapper of a trained AVFF, logged as "models from code" by
:func:`tasks.serve.scorer.log_pyfunc_model`.

Its own module because MLflow warns, when a ``PythonModel`` subclass is defined, that its
``predict`` has no type hints (hint-based validation does not fit a dict of arrays), and it
forces that warning through any filter. Only logging and MLflow's own loader import this
module, so ``avff predict`` and the flows stay quiet.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow

from storage.checkpoint import load_weights
from storage.decision import Decision
from tasks.serve.scorer import CONFIG_ARTIFACT, DECISION_ARTIFACT, WEIGHTS_ARTIFACT, Scorer


class AVFFPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc: ``{"video": (B, 3, T, H, W), "audio": (B, 1, F, Tm)}`` float32 (optionally ``"mouth"`` (B, 4),
    each clip's mouth box as fractions; without it, the crop template's) -> (B,) calibrated P(FAKE).

    A video's verdict is ``tasks.serve.decision.verdict(mean of its clips' P(FAKE), scorer.threshold)``,
    the rule ``avff predict`` and ``evaluate-avff`` apply; the threshold is the ``decision`` artifact's.
    """

    def load_context(self, context) -> None:
        weights, _, _ = load_weights(context.artifacts[WEIGHTS_ARTIFACT])
        config = json.loads(Path(context.artifacts[CONFIG_ARTIFACT]).read_text())
        self.scorer = Scorer.from_weights(weights, config)
        if DECISION_ARTIFACT in context.artifacts:  # models logged before it existed score uncalibrated
            self.scorer.use_decision(Decision.from_json(json.loads(Path(context.artifacts[DECISION_ARTIFACT]).read_text())))

    def predict(self, context, model_input, params=None):
        if not isinstance(model_input, dict) or not {"video", "audio"} <= set(model_input):
            raise ValueError("model_input must be a dict with 'video' and 'audio' arrays")
        return self.scorer.predict_proba(model_input["video"], model_input["audio"], mouth=model_input.get("mouth"))
