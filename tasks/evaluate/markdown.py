"""Numbers in the markdown reports and tables (training report, model card, evaluation, experiments).

One rule for every table: a finite number is printed with ``nd`` decimals, anything else (None, NaN,
an infinity, a bool, text) is "n/a", so an undefined metric reads the same in every report.
"""

from __future__ import annotations

import math
import numbers

NA = "n/a"


def number(x: object, nd: int = 3) -> str:
    """``x`` with ``nd`` decimals, or "n/a" when it is not a finite number."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x):
        return NA
    return f"{float(x):.{nd}f}"
