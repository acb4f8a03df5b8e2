"""Error rates as text: the one rule for reading a false-accept or false-positive rate.

Cards, reports, settings and requests key rates by one canonical text, so ``0.001``,
``"0.001"`` and ``"1e-3"`` are one target (``"1e-3"``).
"""

from __future__ import annotations

import math

from marginface.errors import DataError

__all__ = ["far_key", "parse_far"]


def far_key(far: float | str) -> str:
    """The canonical key of a false-accept rate: ``0.001`` and ``"1e-3"`` both give ``"1e-3"``."""
    value = parse_far(far)
    exponent = math.log10(value)
    if abs(exponent - round(exponent)) < 1e-9:
        return f"1e{round(exponent)}"
    mantissa, exp = f"{value:.6e}".split("e")
    return f"{float(mantissa):g}e{int(exp)}"


def parse_far(far: float | str) -> float:
    """A false-accept rate as a float in ``(0, 1)``; strings such as ``"1e-3"`` are accepted."""
    try:
        value = float(far)
    except (TypeError, ValueError):
        raise DataError(f"not a false-accept rate: {far!r}") from None
    if not 0.0 < value < 1.0:
        raise DataError(f"a false-accept rate must lie in (0, 1), got {far!r}")
    return value
