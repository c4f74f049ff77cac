"""A read-out fitted after training: the model's logit as a linear join of its parts (issue 22).

End-to-end training joins the fusion head's logit and the signal head's by a sum, and the signal head learns its
read-out of the frozen-by-then branch features by SGD on ~20 training identities. docs/learning.md ("Where the
cue is lost") measured that this loses the texture cue the features hold: a logistic regression on the same
texture features, fitted on the train split, reads visual_artifact at 0.85–0.90 on new people where the trained
head reads 0.67–0.75, and the fusion head's logit, memorised on its training identities, adds noise in the sum.
A :class:`Readout` replaces the sum at scoring time by

    logit = w_fusion · fusion + w_signals · signals + w_probe · (texture @ probe + probe_bias) + bias

where ``fusion`` and ``signals`` are the logits the model already joins (:meth:`AVFF.branch_logits`; the signal
branches' noisy-OR with ``signal_fusion="noisy_or"``), ``texture`` the texture branch's features (B, S), and
every number is fitted after training by :mod:`tasks.train.readout` (the probe on the train split, the join on
val, where the calibration is fitted). A part the model lacks (no texture branch) has no weight. Nothing here
learns by gradient: a Readout is plain numbers, stored in ``decision.json`` beside the checkpoint, not in the
weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .heads import noisy_or

PARTS = ("fusion", "signals", "probe")  # the join's inputs, in this order


def logit_parts(branches: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """:meth:`AVFF.branch_logits` -> "fusion" (B,) and, with signal branches, "signals" (B,): the signal head's
    logit, or the noisy-OR of its per-branch logits ("sync", "texture") as the model joins them."""
    out = {"fusion": branches["fusion"]}
    signal = [v for k, v in branches.items() if k != "fusion"]  # "signals" ("sum") | "sync", "texture"
    if signal:
        out["signals"] = signal[0] if len(signal) == 1 else noisy_or(torch.stack(signal, dim=1))  # (B, K) -> (B,)
    return out


@dataclass(frozen=True)
class Readout:
    weights: dict[str, float]  # part name (of PARTS) -> its weight in the join; a part absent here is unused
    bias: float
    probe: tuple[float, ...] = ()  # (S,) weights over the texture branch's features; () without the part
    probe_bias: float = 0.0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.weights) - set(PARTS))
        if unknown:
            raise ValueError(f"a readout joins {PARTS}, got weights for {unknown}")
        if ("probe" in self.weights) != bool(self.probe):
            raise ValueError("a readout has a texture probe exactly when it weighs one")
        values = [*self.weights.values(), self.bias, *self.probe, self.probe_bias]
        if not all(isinstance(v, (int, float)) and abs(v) < float("inf") for v in values):
            raise ValueError("a readout's numbers must be finite")

    def parts(self, branches: dict[str, torch.Tensor], texture: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The join's inputs, each (B,): :func:`logit_parts` of ``branches``, and the probe of ``texture``
        (B, S) when this readout has one."""
        out = logit_parts(branches)
        if texture is not None and self.probe:  # float32 even under autocast: the weights are fitted in float64
            w = torch.tensor(self.probe, dtype=torch.float32, device=texture.device)  # (S,)
            out["probe"] = texture.float() @ w + self.probe_bias  # (B, S) @ (S,) -> (B,)
        return out

    def __call__(self, branches: dict[str, torch.Tensor], texture: torch.Tensor | None) -> torch.Tensor:
        """-> (B,) the joined logit, float32."""
        parts = self.parts(branches, texture)
        missing = sorted(set(self.weights) - set(parts))
        if missing:
            raise ValueError(f"this readout weighs {missing}, which the model does not produce")
        logit = torch.full_like(parts["fusion"], self.bias, dtype=torch.float32)  # (B,)
        for name, w in self.weights.items():
            logit = logit + w * parts[name].float()
        return logit

    def to_json(self) -> dict:
        return {"weights": dict(self.weights), "bias": self.bias, "probe": list(self.probe),
                "probe_bias": self.probe_bias}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict) -> Readout:
        return cls({str(k): float(v) for k, v in data["weights"].items()}, float(data["bias"]),
                   tuple(float(v) for v in data.get("probe", ())), float(data.get("probe_bias", 0.0)))  # fmt: skip
