"""What every ``whp`` command shares: the consoles, the project option, errors and row output."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Literal, NoReturn

import typer
from rich.console import Console
from rich.table import Table

console = Console()
errors = Console(stderr=True)

ProjectOption = Annotated[Path, typer.Option("--project", "-C", help="Project root (default: current folder).")]
Format = Literal["table", "csv", "json"]


def sub_app(help: str) -> typer.Typer:
    """A command group (``whp studio``, ``whp review``...) with the CLI's shared settings."""
    return typer.Typer(help=help, no_args_is_help=True, pretty_exceptions_enable=False)


def fail(exc: Exception) -> NoReturn:
    """Print ``exc`` as a one-line error (no traceback) and exit 1."""
    errors.print(f"[bold red]error:[/] {exc}", highlight=False)
    raise typer.Exit(1)


def check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        fail(ValueError(f"--format must be one of {', '.join(allowed)}, not {fmt!r}"))


TABLE_ROWS = 1000
"""Rows a ``--format table`` shows without ``--limit``: a table is laid out once all its rows are in."""


def _take(batches: Iterable[list[tuple]], limit: int | None) -> Iterator[list[tuple]]:
    left = limit
    for batch in batches:
        if left is not None:
            batch = batch[:left]
            left -= len(batch)
        if batch:
            yield batch
        if left == 0:
            return  # the rest is never fetched


def print_rows(columns: list[str], batches: Iterable[list[tuple]], fmt: Format, *, limit: int | None = None) -> int:
    """Print rows batch by batch as they are fetched; returns how many were printed.

    ``csv`` and ``json`` stream (memory holds one batch); ``table`` holds at most ``limit`` rows,
    or :data:`TABLE_ROWS` when no limit is given, and says when there were more.
    """
    printed = 0
    if fmt == "table":
        cap = limit if limit is not None else TABLE_ROWS
        rows = [row for batch in _take(batches, cap + (limit is None)) for row in batch]
        more = len(rows) > cap
        table = Table(*columns, show_lines=False)
        for row in rows[:cap]:
            table.add_row(*("NULL" if v is None else str(v) for v in row))
        console.print(table)
        printed = min(len(rows), cap)
        note = "; more not shown: --limit N, or --format csv/json to stream them all" if more else ""
        console.print(f"{printed} row(s){note}", style="dim")
        return printed
    out = sys.stdout
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        for batch in _take(batches, limit):
            writer.writerows(batch)
            printed += len(batch)
        return printed
    out.write("[")
    for batch in _take(batches, limit):
        out.write("".join(("\n" if printed + i == 0 else ",\n") + json.dumps(dict(zip(columns, row)), default=str)
                          for i, row in enumerate(batch)))
        printed += len(batch)
    out.write("\n]\n" if printed else "]\n")
    return printed
