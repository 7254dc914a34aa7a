"""Rich console output shared by the CLI commands: progress bars and key/value tables."""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

if TYPE_CHECKING:
    from harness.store.summary import RunSummary

console = Console(stderr=True)  # progress and status
stdout = Console()  # data a user may pipe (listings)


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


def summary_table(summary: RunSummary) -> Table:
    """A run summary for people: headline figures, then one row per node with each figure's basis."""
    table = Table(title=f"run {summary['run_id']} ({summary['experiment']}, {summary['samples']} samples)")
    for col in ("node", "device", "latency p50 / p90 / p99", "host RTT p50", "flash / RAM"):
        table.add_column(col)
    for n in summary["nodes"]:
        lat = n["latency"]
        fmt = "{:,.0f}" if lat["unit"] == "instructions" else "{:,.1f}"
        figures = " / ".join(fmt.format(lat[k]) for k in ("p50", "p90", "p99")) + f" {lat['unit']}"
        mem = "-" if n["flash_bytes"] is None else f"{n['flash_bytes']:,} / {n['ram_bytes']:,} B"
        table.add_row(str(n["node"]), n["device"], figures, f"{n['host_round_trip_ms']['p50']:.1f} ms", mem)
    table.caption = (f"accuracy {summary['accuracy']:.4f} (golden {summary['golden_accuracy']:.4f}), "
                     f"bit-exact {summary['bitexact_rate']:.4f}; {summary['bits_per_inference']} bits "
                     f"({summary['payload_bytes_per_inference']} B) per inference vs {summary['raw_bits_per_inference']} "
                     f"raw bits; {summary['wire_bytes_per_inference']:.0f} wire bytes per inference. Latency: "
                     + "; ".join(sorted({n["latency"]["basis"] for n in summary["nodes"]})))
    return table
