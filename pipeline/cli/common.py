"""What every ``whp`` command shares: the consoles, the project option, errors and row output."""

from __future__ import annotations

import csv
import json
import sys
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


def print_rows(columns: list[str], rows: list[tuple], fmt: Format) -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps([dict(zip(columns, row)) for row in rows], default=str, indent=1) + "\n")
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        table = Table(*columns, show_lines=False)
        for row in rows:
            table.add_row(*("NULL" if v is None else str(v) for v in row))
        console.print(table)
        console.print(f"{len(rows)} row(s)", style="dim")
