"""What turns a model's logit into a verdict, stored beside its weights as ``decision.json``.

``{"threshold": t, "criterion": "f1", "temperature": T}``: P(FAKE) = sigmoid(logit / T) (T fitted
on val at the end of training, :mod:`tasks.evaluate.calibration`), and P(FAKE) >= t is a FAKE
verdict (t chosen on the calibrated val probabilities). A training run writes it into its best
checkpoint's directory; the registered pyfunc carries it as an artifact. A model without one,
or a file without ``temperature`` (written before calibration existed), scores with T = 1.

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
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Decision:
        return cls(data.get("threshold"), str(data.get("criterion", "default")), float(data.get("temperature", 1.0)))


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
                "P(FAKE) uncalibrated (temperature 1).")  # fmt: skip
    if decision.threshold is None or decision.criterion == "default":
        t = DEFAULT_THRESHOLD if decision.threshold is None else decision.threshold
        rule = f"FAKE when P(FAKE) >= {t:.3f} (default: no threshold could be chosen on the training run's val)"
    else:
        rule = (f"FAKE when P(FAKE) >= {decision.threshold:.3f}, the model's threshold "
                f"(chosen on val by {decision.criterion})")
    calibration = ("P(FAKE) uncalibrated (temperature 1)" if decision.temperature == 1.0 else
                   f"P(FAKE) = sigmoid(logit / {decision.temperature:.3f}), the temperature fitted on val")  # fmt: skip
    return f"{rule}; {calibration}."
