"""Synthetic external-set rows for the benchmark's scoring tests (tests/bench/test_results.py,
tests/tasks/evaluate/test_benchmark.py): one shape, so both test the same kind of input."""

from __future__ import annotations

import numpy as np

from storage.manipulations import MANIPULATIONS


def external_rows(rng: np.random.Generator, signal: float, seed: int = 0, groups: int = 12) -> list[dict]:
    """One seed's external rows: ``groups`` identities x (a REAL + one fake per type), P(FAKE) with ``signal``."""
    rows = []
    for g in range(groups):
        for m in (None, *MANIPULATIONS):
            fake = m is not None
            p = float(1 / (1 + np.exp(-(signal * fake + rng.normal()))))
            rows.append({"video_id": f"s{seed}g{g}{m}", "label": "FAKE" if fake else "REAL", "manipulation": m,
                         "group": f"g{g}", "reason": None, "p_fake": p})  # fmt: skip
    return rows
