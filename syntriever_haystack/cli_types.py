"""argparse ``type=`` helpers shared by the sub-commands: numbers checked against a range where text enters.

argparse adds the option name to the message: ``argument --rpm: must be a number > 0, got '0'``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any


def ranged(
    kind: type[int] | type[float], minimum: float, *, strict: bool = False, maximum: float | None = None
) -> Callable[[str], Any]:
    """An argparse ``type=`` for ``kind`` values >= ``minimum`` (> with ``strict``) and <= ``maximum``.

    NaN and infinities are refused: an infinite number of seconds, steps or requests is never meant.
    """
    allowed = f"{'an integer' if kind is int else 'a number'} {'>' if strict else '>='} {minimum:g}"
    if maximum is not None:
        allowed += f" and <= {maximum:g}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        low_ok = value > minimum if strict else value >= minimum
        if not math.isfinite(value) or not low_ok or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
        return value

    parse.__name__ = allowed  # what argparse would print for a failed conversion
    return parse


POSITIVE_INT = ranged(int, 1)
NON_NEGATIVE_INT = ranged(int, 0)
POSITIVE_FLOAT = ranged(float, 0, strict=True)
NON_NEGATIVE_FLOAT = ranged(float, 0)
FRACTION = ranged(float, 0, maximum=1)
