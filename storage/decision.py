"""The ``decision.json`` file format: what turns a model's logit into P(FAKE) and a verdict.

``{"threshold": t, "criterion": "f1", "slope": a, "intercept": b}``: P(FAKE) = sigmoid(a·logit + b)
(Platt scaling fitted on val at the end of training, :mod:`tasks.evaluate.calibration`), and
P(FAKE) >= t is a FAKE verdict (t chosen on the calibrated val probabilities). A training run
writes it into its best checkpoint's directory; the registered pyfunc carries it as an artifact.
Older files still load and mean what they meant: ``{"temperature": T}`` (temperature scaling,
before Platt) is a = 1 / T, b = 0; a file with neither (before calibration existed), or a model
without one, scores with the identity a = 1, b = 0. A run trained with ``readout="fitted"`` adds
``"readout": {...}``: the join of the model's logits fitted after training (:mod:`avff_model.readout`,
its ``to_json``), which replaces the model's own sum before the calibration applies; files without it
score with the model's own join.

Training writes it and serving reads it, so the format lives here, below both; the rule that
applies it is :mod:`tasks.serve.decision`. Beside it, ``preprocess.json``: the ingest's
PreprocessConfig (as a dict) of the shards the model trained on, so a scorer loaded from the
checkpoint repeats that preprocessing (clip mode, crop, frame rate) instead of the defaults.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from storage import fs

DECISION_FILE = "decision.json"
PREPROCESS_FILE = "preprocess.json"  # also the name the registered pyfunc model carries it under


@dataclass(frozen=True)
class Decision:
    threshold: float | None  # None: no threshold could be chosen (one-class val); verdicts use 0.5
    criterion: str  # f1 | youden | eer, or "default" without a threshold
    slope: float = 1.0  # calibrated logit = slope * logit + intercept
    intercept: float = 0.0
    readout: dict | None = None  # avff_model.readout.Readout.to_json(): how the logit is joined; None: the model's

    def __post_init__(self) -> None:
        if not (math.isfinite(self.slope) and self.slope > 0 and math.isfinite(self.intercept)):
            raise ValueError(f"calibration needs a finite slope > 0 and a finite intercept, got "
                             f"{self.slope!r}, {self.intercept!r}")  # fmt: skip

    def to_json(self) -> dict:
        data = asdict(self)
        if self.readout is None:  # files without a read-out keep the format older readers know
            del data["readout"]
        return data

    @classmethod
    def from_json(cls, data: dict) -> Decision:
        threshold, criterion = data.get("threshold"), str(data.get("criterion", "default"))
        if "slope" in data:
            return cls(threshold, criterion, float(data["slope"]), float(data.get("intercept", 0.0)),
                       data.get("readout"))  # fmt: skip
        temperature = float(data.get("temperature", 1.0))  # a file written before Platt scaling
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        return cls(threshold, criterion, 1.0 / temperature, 0.0)


def write_decision(directory: str, decision: Decision) -> str:
    """``<directory>/decision.json`` (local or object storage); returns its URI."""
    uri = fs.join(directory, DECISION_FILE)
    fs.atomic_write_bytes(uri, json.dumps(decision.to_json(), indent=2, sort_keys=True).encode())
    return uri


def read_decision(directory: str) -> Decision | None:
    """The decision stored in ``directory``, None when it holds none."""
    uri = fs.join(directory, DECISION_FILE)
    return Decision.from_json(json.loads(fs.read_bytes(uri))) if fs.exists(uri) else None


def write_preprocess(directory: str, preprocess: dict) -> str:
    """``<directory>/preprocess.json``; returns its URI."""
    uri = fs.join(directory, PREPROCESS_FILE)
    fs.atomic_write_bytes(uri, json.dumps(preprocess, indent=2, sort_keys=True).encode())
    return uri


def read_preprocess(directory: str) -> dict | None:
    """The preprocessing stored in ``directory``, None when it holds none."""
    uri = fs.join(directory, PREPROCESS_FILE)
    return json.loads(fs.read_bytes(uri)) if fs.exists(uri) else None


def ingest_preprocess(data: str) -> dict | None:
    """The PreprocessConfig ingest wrote with the shards under ``data`` (its ingest_config.json), if any."""
    path = fs.IngestLayout(data).config
    return json.loads(fs.read_bytes(path)).get("preprocess") if fs.exists(path) else None
