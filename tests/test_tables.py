"""trained_models.tables.markdown_table: the one markdown-table writer, against hand-written tables."""
from __future__ import annotations

import pytest

from trained_models.tables import markdown_table


def test_lines_rule_and_cells():
    assert markdown_table(["a", "b"], [[1, 0.25], ["x", None]]) == [
        "| a | b |", "|---|---|", "| 1 | 0.25 |", "| x | None |"]
    assert markdown_table(["only"], []) == ["| only |", "|---|"]


def test_cell_formatter_and_pipe_escaping():
    lines = markdown_table(["top | depth", "v"], [["a|b", 1 / 3]],
                           cell=lambda v: f"{v:.2f}" if isinstance(v, float) else v)
    assert lines == ["| top \\| depth | v |", "|---|---|", "| a\\|b | 0.33 |"]


def test_ragged_row_is_refused():
    with pytest.raises(ValueError, match="row 1 has 1 cells, the header 2"):
        markdown_table(["a", "b"], [[1, 2], [3]])


def test_rule_per_column_or_for_all():
    assert markdown_table(["a", "b"], [[1, 2]], rule="---:")[1] == "|---:|---:|"
    assert markdown_table(["a", "b"], [], rule=["---", ":---:"])[1] == "|---|:---:|"
    with pytest.raises(ValueError, match="1 rule cells for 2 columns"):
        markdown_table(["a", "b"], [], rule=["---"])
