"""Tables for the commands' output that never cut a bot name or a figure.

A table wider than the console (80 columns when there is no terminal) is printed as one small
``field  value`` table per row instead, so every value stays whole on one line; rich would
otherwise shorten cells to ``eth-…`` or ``0.11…``.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


def print_fitted(
    console: Console,
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    caption: str | None = None,
) -> None:
    """Print ``rows`` under ``columns`` as one table if it fits the console, else record by
    record (the first column names each record)."""
    table = Table(title=title, caption=caption)
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    unlimited = console.options.update(max_width=10_000)  # the table's own width, unclamped
    if Measurement.get(console, unlimited, table).maximum <= console.width:
        console.print(table)
        return
    console.print(title, soft_wrap=True)
    for row in rows:
        record = Table(title=f"{columns[0]}: {row[0]}", title_justify="left", show_header=False)
        record.add_column(no_wrap=True)
        record.add_column(no_wrap=True)
        for column, value in zip(columns[1:], row[1:], strict=True):
            record.add_row(column, value)
        console.print(record)
    if caption:
        console.print(caption, soft_wrap=True)
