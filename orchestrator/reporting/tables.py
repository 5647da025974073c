"""Rich tables for the CLI's reports, whose cells are never read as markup and never cut.

Rich reads ``[...]`` in a string as markup, so a level or a term such as ``opt[sgd]`` printed as ``opt``: every cell
and header here is a :class:`~rich.text.Text`, printed as given. A table wider than the console (80 columns in a
pipe) has its columns shrunk and its cells cut (``learning_…``), so a main effect and its interactions looked alike.
Here every column keeps the width of its longest cell (a name, a date, a number) except the ``wrap`` columns (free
text: reasons, lists), which take what is left and wrap at words; when even that is too wide, cells fold onto more
lines, whole.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from rich.cells import cell_len
from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

WRAP_MIN = 24  # narrower, a free-text column wraps a reason into a word a line


def table(headers: Sequence[str], rows: Iterable[Sequence[str | Text]], *, title: str | None = None,
          wrap: Collection[str] = ()) -> Table:
    """A table of ``rows`` (str cells are shown as plain text; a Text cell keeps its style)."""
    cells = [[c if isinstance(c, Text) else Text(str(c)) for c in row] for row in rows]
    columns = []
    for i, header in enumerate(headers):
        width = None if header in wrap else max([1, cell_len(header), *(row[i].cell_len for row in cells)])
        columns.append(Column(Text(header), width=width, overflow="fold"))
    out = Table(*columns, title=Text(title, style="table.title") if title else None)
    for row in cells:
        out.add_row(*row)
    return out


def fits(console: Console, table: Table) -> bool:
    """Whether ``table`` fits the console with its names whole and each ``wrap`` column at least :data:`WRAP_MIN`
    wide (or as wide as its longest cell, when that is less)."""
    widths = [column.width if column.width is not None
              else min(WRAP_MIN, max((cell.cell_len for cell in column.cells), default=1))
              for column in table.columns]
    return sum(widths) + 3 * len(widths) + 1 <= console.width  # a space each side of a cell, a border between
