"""The one rule for numbers in markdown tables (tasks/evaluate/markdown.py)."""

import math

import numpy as np

from tasks.evaluate.markdown import NA, number


def test_finite_numbers_are_printed_with_their_decimals():
    assert number(0.12345) == "0.123" and number(0.12345, 4) == "0.1235" and number(2) == "2.000"
    assert number(np.float32(0.5)) == "0.500" and number(np.int64(3), 1) == "3.0"


def test_what_is_not_a_finite_number_is_na():
    assert [number(x) for x in (None, math.nan, math.inf, -math.inf, np.nan, True, "0.5")] == [NA] * 7
