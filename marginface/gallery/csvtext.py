"""CSV exports that a spreadsheet opens as data, never as formulas.

Names and camera sources are chosen by whoever holds an enrol or recognise key; a cell such as
``=HYPERLINK(...)`` would run as a formula when an administrator opens the export. Following
OWASP's advice on CSV injection, a text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return is prefixed with a single quote, which spreadsheets show as text. Numbers
are written as numbers (a negative score stays a number). ``defusedcsv`` was considered: it does
not neutralise the tab and carriage return that OWASP lists, and it rewrites ``|`` anywhere in a
cell, so the rule is kept here, in one place.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["FORMULA_PREFIXES", "csv_text", "safe_cell"]

#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """``value`` as a CSV cell that cannot be read as a formula (numbers and None unchanged)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A CSV document (header line, then one line per row) with every cell made safe."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([safe_cell(h) for h in header])
    writer.writerows([safe_cell(v) for v in row] for row in rows)
    return buf.getvalue()
