"""The one decision rule: how a model's P(FAKE) and its ``decision.json`` become a verdict.

:func:`verdict` is the one decision rule: ``avff predict``, ``evaluate-avff`` and whoever reads
the pyfunc's P(FAKE) call FAKE exactly when P(FAKE) >= the model's threshold (0.5, said so,
for a model without one); :func:`describe` says in one sentence which rule was applied. The
file format (:class:`~storage.decision.Decision`, ``decision.json``) is :mod:`storage.decision`.
"""

from __future__ import annotations

from storage.decision import Decision
from storage.shard_schema import FAKE, REAL

DEFAULT_THRESHOLD = 0.5  # verdicts of a model that carries no threshold


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
        rule = (
            f"FAKE when P(FAKE) >= {decision.threshold:.3f}, the model's threshold "
            f"(chosen on val by {decision.criterion})"
        )
    calibration = ("P(FAKE) uncalibrated" if (decision.slope, decision.intercept) == (1.0, 0.0) else
                   f"P(FAKE) = sigmoid({decision.slope:.3f} * logit {decision.intercept:+.3f}), Platt scaling fitted on val")  # fmt: skip
    if decision.readout is not None:  # readout="fitted": the logit is the join fitted after training
        weights = ", ".join(f"{k} {w:+.3f}" for k, w in decision.readout["weights"].items())
        calibration += f"; the logit joined by the read-out fitted after training ({weights})"
    return f"{rule}; {calibration}."
