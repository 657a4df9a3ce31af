"""Print rich tables whole, so that no number or repo id is cut to ``85.…``.

Rich fits a table to the console's width and crops what does not fit. A terminal has a width to
fit, and the tables fold long names to fit it. A pipe or a log file has none (rich assumes 80
columns), so there the table is printed at its natural width instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = ["print_table"]

_UNBOUNDED = 10_000  # columns; wider than any table we draw


def print_table(console: Console, table: Table) -> None:
    """Print ``table`` on ``console``: folded to fit a terminal, at natural width anywhere else."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.measure import Measurement
    from rich.segment import Segments

    natural = Measurement.get(console, console.options.update_width(_UNBOUNDED), table).maximum
    options = console.options.update_width(max(console.width, natural))
    console.print(Segments(console.render(table, options)), crop=False)
