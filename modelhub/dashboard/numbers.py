"""How the dashboard writes numbers: a few significant digits and a unit, "—" when unknown.

Sizes and memory are in MB of 2**20 bytes, the unit of the readiness profiles and verdicts, so
that "2.65 MB" on a page and "size 2.65 MB > 2 MB" in a verdict agree.
"""

from __future__ import annotations

import math

MB = 1024 * 1024
UNKNOWN = "—"


def _known(value: float | None) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def significant(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits, never in scientific notation below 10**6."""
    if not _known(value):
        return UNKNOWN
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    text = f"{value:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def milliseconds(value: float | None) -> str:
    """A latency: "0.22 ms", "12.4 ms", "1,250 ms"."""
    return UNKNOWN if not _known(value) else f"{significant(value)} ms"


def megabytes(size_bytes: float | None) -> str:
    """A file size given in bytes: "2.65 MB" (MB of 2**20 bytes), small files in kB."""
    if not _known(size_bytes):
        return UNKNOWN
    if size_bytes < MB / 10:
        return f"{significant(size_bytes / 1024)} kB"
    return f"{significant(size_bytes / MB)} MB"


def memory(value_mb: float | None) -> str:
    """A memory figure already in MB: "27.1 MB"."""
    return UNKNOWN if not _known(value_mb) else f"{significant(value_mb)} MB"


def throughput(value: float | None) -> str:
    """Samples per second: "24,017 /s"."""
    return UNKNOWN if not _known(value) else f"{value:,.0f} /s" if value >= 100 else f"{significant(value)} /s"


def rate(value: float | None) -> str:
    """Samples per second without the unit (a column header names it): "24,017", "41.2"."""
    return UNKNOWN if not _known(value) else f"{value:,.0f}" if value >= 100 else significant(value)


def times(value: float | None) -> str:
    """A ratio: "2.96×"."""
    return UNKNOWN if not _known(value) else f"{significant(value)}×"


def percent(value: float | None, digits: int = 0) -> str:
    """A percentage given as 0..100: "45 %"."""
    return UNKNOWN if not _known(value) else f"{value:.{digits}f} %"


def metric(value: float | None) -> str:
    """An accuracy metric: four significant digits ("0.9987", "0.001523")."""
    return significant(value, 4)
