"""Argument checks that the C++ ops cannot make: Python types, counts, and the tighter ranges
an API documents on top of the ops' own (fish-speech's ``generate_long`` keeps temperature in
(0, 2), llm_utils' ``LLM.generate`` in [0, 2]). The ops' ranges are checked once, in C++
(``ops.check_sampling_params``); every failure here is a ``ValueError`` naming the argument,
the same exception type the ops raise.
"""
from __future__ import annotations

__all__ = ["check_int", "check_range", "check_flag"]


def check_int(name: str, value, minimum: int) -> int:
    """``value`` must be an int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_range(name: str, value, lo: float, hi: float, *, lo_open: bool,
                hi_open: bool) -> float:
    """``value`` must be a real number in the interval between ``lo`` and ``hi`` (open or
    closed at each end); returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        raise ValueError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}"
                         f"{')' if hi_open else ']'}, got {value!r}")
    return float(value)


def check_flag(name: str, value) -> bool:
    """``value`` must be a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value
