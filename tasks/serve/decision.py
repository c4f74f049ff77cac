"""What turns a model's logit into a verdict, stored beside its weights as ``decision.json``.

``{"threshold": t, "criterion": "f1", "slope": a, "intercept": b}``: P(FAKE) = sigmoid(a·logit + b)
(Platt scaling fitted on val at the end of training, :mod:`tasks.evaluate.calibration`), and
P(FAKE) >= t is a FAKE verdict (t chosen on the calibrated val probabilities). A training run
writes it into its best checkpoint's directory; the registered pyfunc carries it as an artifact.
Older files still load and mean what they meant: ``{"temperature": T}`` (temperature scaling,
before Platt) is a = 1 / T, b = 0; a file with neither (before calibration existed), or a model
without one, scores with the identity a = 1, b = 0.

:func:`verdict` is the one decision rule: ``avff predict``, ``evaluate-avff`` and whoever reads
the pyfunc's P(FAKE) call FAKE exactly when P(FAKE) >= the model's threshold (0.5, said so,
for a model without one); :func:`describe` says in one sentence which rule was applied.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from storage import fs
from storage.shard_schema import FAKE, REAL

DECISION_FILE = "decision.json"
DEFAULT_THRESHOLD = 0.5  # verdicts of a model that carries no threshold


@dataclass(frozen=True)
class Decision:
    threshold: float | None  # None: no threshold could be chosen (one-class val); verdicts use 0.5
    criterion: str  # f1 | youden | eer, or "default" without a threshold
    slope: float = 1.0  # calibrated logit = slope * logit + intercept
    intercept: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.slope) and self.slope > 0 and math.isfinite(self.intercept)):
            raise ValueError(f"calibration needs a finite slope > 0 and a finite intercept, got "
                             f"{self.slope!r}, {self.intercept!r}")  # fmt: skip

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Decision:
        threshold, criterion = data.get("threshold"), str(data.get("criterion", "default"))
        if "slope" in data:
            return cls(threshold, criterion, float(data["slope"]), float(data.get("intercept", 0.0)))
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


def verdict(p_fake: float | None, threshold: float | None) -> dict:
    """FAKE when P(FAKE) >= the model's threshold (chosen on val at training), else REAL; 0.5 without one.

    ``{"verdict": FAKE|REAL|None, "threshold": t, "threshold_source": "model"|"default"}``; an
    unscored video (``p_fake`` None) has no verdict.
    """
    source = "model" if threshold is not None else "default"
    t = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    label = None if p_fake is None else (FAKE if p_fake >= t else REAL)
    return {"verdict": label, "threshold": t, "threshold_source": source}


def describe(decision: Decision | None) -> str:
    """The decision rule a model scores with, as one sentence for a report."""
    if decision is None:
        return (f"FAKE when P(FAKE) >= {DEFAULT_THRESHOLD:.3f} (default: the model carries no decision.json); "
                "P(FAKE) uncalibrated.")  # fmt: skip
    if decision.threshold is None or decision.criterion == "default":
        t = DEFAULT_THRESHOLD if decision.threshold is None else decision.threshold
        rule = f"FAKE when P(FAKE) >= {t:.3f} (default: no threshold could be chosen on the training run's val)"
    else:
        rule = (f"FAKE when P(FAKE) >= {decision.threshold:.3f}, the model's threshold "
                f"(chosen on val by {decision.criterion})")
    calibration = ("P(FAKE) uncalibrated" if (decision.slope, decision.intercept) == (1.0, 0.0) else
                   f"P(FAKE) = sigmoid({decision.slope:.3f} * logit {decision.intercept:+.3f}), Platt scaling fitted on val")  # fmt: skip
    return f"{rule}; {calibration}."
