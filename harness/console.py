"""Rich console output shared by the CLI commands: progress bars and key/value tables."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True)


@contextmanager
def progress_factory() -> Iterator[Callable[[int, str], Callable[[int], None]]]:
    """Yields ``start(total, label) -> advance(n)``; bars render on stderr with live rate/ETA."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        def start(total: int, label: str) -> Callable[[int], None]:
            task = progress.add_task(label, total=total)
            return lambda n: progress.advance(task, n)
        yield start


def key_value_table(title: str, rows: dict[str, object]) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for k, v in rows.items():
        table.add_row(k, str(v))
    return table
