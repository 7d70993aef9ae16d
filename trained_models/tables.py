"""The one markdown-table writer: every report (the suite, the probe grid, the studies) renders its tables here.

It lives at the lowest layer that writes a table (``trained_models``); ``probe`` and ``analyses`` import it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["markdown_table"]


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]], cell: Callable[[Any], str] = str,
                   rule: str | Sequence[str] = "---") -> list[str]:
    """A markdown table as a list of lines: ``| a | b |``, the rule ``|---|---|``, one line per row.

    Body cells go through ``cell`` (default ``str``; the caller chooses the number format); a ``|`` in a
    header or body cell is escaped (``\\|``) so it cannot split its row. ``rule``: each column's rule
    cell (``---`` left, ``---:`` right, ``:---:`` centred), one for all columns or one per column. A row
    shorter or longer than the header raises ``ValueError``.
    """
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    header = [str(h) for h in header]
    rules = [rule] * len(header) if isinstance(rule, str) else list(rule)
    if len(rules) != len(header):
        raise ValueError(f"markdown_table: {len(rules)} rule cells for {len(header)} columns")
    lines = [line(header), "|" + "|".join(rules) + "|"]
    for i, row in enumerate(rows):
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"markdown_table: row {i} has {len(row)} cells, the header {len(header)}")
        lines.append(line([cell(v) for v in row]))
    return lines
