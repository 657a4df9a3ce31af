"""Print rich tables whole, so that no number or repo id is cut to ``85.…``.

Rich fits a table to the console's width and crops what does not fit. A terminal has a width to
fit, and the tables fold long names to fit it, as far as every cell stays whole. A pipe or a log file
has none (rich assumes 80 columns), so there the table is printed at its natural width instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = ["print_table"]

_UNBOUNDED = 10_000  # columns; wider than any table we draw


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` on ``console``: folded to fit a terminal, at natural width anywhere else.

    Either way nothing is cropped: a terminal too narrow for the table even folded (the FusionBench 8 tasks'
    comparison at 80 columns, the plan at 40) gets it wider than its window, for the terminal to wrap."""
    from rich.measure import Measurement
    from rich.segment import Segments

    if console.is_terminal:
        _keep_cells_whole(console, table)
        width = _floors_width(console, table)
    else:
        width = Measurement.get(console, console.options.update_width(_UNBOUNDED), table).maximum
    options = console.options.update_width(max(console.width, width))
    console.print(Segments(console.render(table, options)), crop=False)


def _floors_width(console: Console, table: Table) -> int:
    """The width ``table`` takes with every column at its floor (``_keep_cells_whole``), padding and borders
    included. Given less, rich's last resort shrinks every column evenly and draws the first ones at no width:
    at 30 columns the plan lost its inputs' names, models and revisions whole."""
    from rich.measure import Measurement

    widest = [column.max_width for column in table.columns]
    for column in table.columns:
        column.max_width = column.min_width
    try:
        return Measurement.get(console, console.options.update_width(_UNBOUNDED), table).maximum
    finally:
        for column, width in zip(table.columns, widest):
            column.max_width = width


def _keep_cells_whole(console: Console, table: Table) -> None:
    """Floors under the columns rich shrinks to fit a narrow terminal: a number (no_wrap) keeps its width,
    a wrapped text its longest word, a folded name its header's width (or its column's min_width). Without
    them rich shrank a name to nothing and ended numbers and words in an ellipsis."""
    from rich.measure import Measurement

    options = console.options.update_width(_UNBOUNDED)
    for column in table.columns:
        cells = [Measurement.get(console, options, cell) for cell in (column.header, *column.cells)]
        widest = max(cell.maximum for cell in cells)
        if column.no_wrap:
            floor = widest
        elif column.overflow == "fold":  # to its own floor, where the table gives it one
            floor = cells[0].maximum if column.min_width is None else 0
        else:
            floor = max(cell.minimum for cell in cells)
        column.min_width = max(column.min_width or 0, floor)
