"""The MLflow pyfunc wrapper of a trained AVFF, logged as "models from code" by
:func:`tasks.serve.scorer.log_pyfunc_model`.

Its input is a video, as a file path or as its bytes, one row per video; its output, one record
per video: P(FAKE), the verdict under the model's own rule, per-clip P(FAKE) and start times,
and the face crops the model saw, or the stable reason the video could not be scored. Behind it
runs what ``avff predict`` runs (:func:`tasks.serve.predict.score_video`), so ``mlflow models
serve`` of a registered version answers what ``avff predict`` prints.

Its own module because MLflow warns, when a ``PythonModel`` subclass is defined, that its
``predict`` has no type hints (hint-based validation does not fit a table of paths and bytes),
and it forces that warning through any filter. Only logging and MLflow's own loader import this
module, so ``avff predict`` and the flows stay quiet.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import mlflow

from storage.checkpoint import load_weights
from tasks.ingest.preprocess import face_detector
from storage.decision import Decision
from tasks.serve.predict import preprocess_for, result, score_bytes, score_video
from tasks.serve.scorer import CONFIG_ARTIFACT, DECISION_ARTIFACT, PREPROCESS_ARTIFACT, WEIGHTS_ARTIFACT, Scorer

# the input columns: one of path / video per row; name labels an uploaded video in the answer
PATH, VIDEO, NAME = "path", "video", "name"


def video_rows(model_input) -> list[dict]:
    """The pyfunc's input -> one ``{"path"|"video": ..., "name"?: ...}`` per video.

    Accepts what MLflow hands over after its schema check (a pandas DataFrame, binary columns
    already base64-decoded), a dict of one video, or a list of such dicts.
    """
    if hasattr(model_input, "to_dict") and hasattr(model_input, "columns"):  # a DataFrame
        rows = model_input.to_dict("records")
    elif isinstance(model_input, dict):
        rows = [model_input]
    elif isinstance(model_input, list) and all(isinstance(r, dict) for r in model_input):
        rows = model_input
    else:
        raise ValueError(f"input must be rows with a '{PATH}' (a video file) or '{VIDEO}' (its bytes) column, "
                         f"got {type(model_input).__name__}")  # fmt: skip
    out = []
    for i, row in enumerate(rows):
        row = {k: v for k, v in row.items() if isinstance(v, (str, bytes, bytearray))}  # NaN/None: a column left empty
        if (PATH in row) == (VIDEO in row):
            raise ValueError(f"row {i}: give exactly one of '{PATH}' (a video file) and '{VIDEO}' (its bytes)")
        out.append(row)
    return out


class AVFFPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc: rows of ``{"path": str}`` or ``{"video": bytes, "name": str}`` -> one record per video
    (:func:`tasks.serve.predict.result`: ``p_fake``, ``verdict``, ``threshold``, ``clip_p_fake``,
    ``clip_start_s``, ``faces`` (base64 JPEG), ``reason`` and ``error`` when not scored).

    A video's verdict is ``tasks.serve.decision.verdict(mean of its clips' P(FAKE), scorer.threshold)``,
    the rule ``avff predict`` and ``evaluate-avff`` apply; the threshold is the ``decision`` artifact's.
    """

    def load_context(self, context) -> None:
        weights, _, _ = load_weights(context.artifacts[WEIGHTS_ARTIFACT])
        config = json.loads(Path(context.artifacts[CONFIG_ARTIFACT]).read_text())
        self.scorer = Scorer.from_weights(weights, config)
        if DECISION_ARTIFACT in context.artifacts:  # models logged before it existed score uncalibrated
            self.scorer.use_decision(
                Decision.from_json(json.loads(Path(context.artifacts[DECISION_ARTIFACT]).read_text()))
            )
        if PREPROCESS_ARTIFACT in context.artifacts:  # else: defaults matched to the model's input shape
            self.scorer.preprocess = json.loads(Path(context.artifacts[PREPROCESS_ARTIFACT]).read_text())
        self.preprocess = preprocess_for(self.scorer)
        self.detector = face_detector(self.preprocess)  # one for the server's life: building it costs seconds
        self._lock = threading.Lock()  # the scoring server runs requests on threads; the detector is not shared-safe

    def predict(self, context, model_input, params=None) -> list[dict]:
        rows = video_rows(model_input)
        out = []
        with self._lock:
            for row in rows:
                if PATH in row:
                    s = score_video(row[PATH], self.scorer, self.preprocess, self.detector, faces=True)
                else:
                    s = score_bytes(bytes(row[VIDEO]), row.get(NAME, "upload"), self.scorer, self.preprocess,
                                    self.detector, faces=True)  # fmt: skip
                out.append(result(s, self.scorer.threshold))
        return out
