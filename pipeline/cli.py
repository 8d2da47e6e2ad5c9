"""The ``whp`` command line: query datasets, list them, check the environment.

Stages run through DVC (``dvc repro``); this CLI is for looking at what they built.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from pipeline.errors import PipelineError

app = typer.Typer(
    help="Datasets for Who's-Harry-Potter-style unlearning: query, inspect, check.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)

ProjectOption = Annotated[Path, typer.Option("--project", "-C", help="Project root (default: current folder).")]
Format = Literal["table", "csv", "json"]


def _fail(exc: Exception) -> None:
    errors.print(f"[bold red]error:[/] {exc}", highlight=False)
    raise typer.Exit(1)


def _print_rows(columns: list[str], rows: list[tuple], fmt: Format) -> None:
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


def _interactive(con, fmt: Format) -> None:
    """A small SQL prompt: statements end with ';', `.tables` lists views, `.quit` leaves."""
    from pipeline.sql import run_query

    errors.print("whp query: SQL ending with ';'.  .tables lists datasets, .quit leaves.", style="dim")
    buffer: list[str] = []
    while True:
        try:
            line = input("whp> " if not buffer else "...> ")
        except EOFError:
            break
        stripped = line.strip()
        if not buffer and stripped in {".quit", ".exit", "quit", "exit"}:
            break
        if not buffer and stripped == ".tables":
            stripped = "show tables;"
        buffer.append(stripped)
        if not stripped.endswith(";"):
            continue
        sql, buffer = "\n".join(buffer), []
        try:
            _print_rows(*run_query(con, sql), fmt)
        except PipelineError as exc:
            errors.print(f"[red]error:[/] {exc}", highlight=False)


@app.command()
def query(
    sql: Annotated[str | None, typer.Argument(help="SQL to run; omit for an interactive prompt.")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read the SQL from a file.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    project: ProjectOption = Path("."),
) -> None:
    """Run SQL over every dataset (one view per dataset: passages, documents, ...)."""
    from pipeline.sql import connect, run_query

    if fmt not in ("table", "csv", "json"):
        _fail(ValueError(f"--format must be table, csv or json, not {fmt!r}"))
    if sql and file:
        _fail(ValueError("give SQL or --file, not both"))
    if file:
        try:
            sql = file.read_text(encoding="utf-8")
        except OSError as exc:
            _fail(ValueError(f"{file}: {exc.strerror}"))
    con = connect(project)
    if sql is None:
        _interactive(con, fmt)  # type: ignore[arg-type]
        return
    try:
        _print_rows(*run_query(con, sql), fmt)  # type: ignore[arg-type]
    except PipelineError as exc:
        _fail(exc)


@app.command()
def datasets(
    verify: Annotated[bool, typer.Option(help="Re-hash every part and compare with the manifest.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    project: ProjectOption = Path("."),
) -> None:
    """Every dataset: path, rows, bytes, columns, content hash, and the stage that wrote it."""
    from pipeline.store import list_datasets, read_manifest, verify_dataset

    entries = []
    for name in list_datasets(project):
        try:
            manifest = read_manifest(name, project)
        except PipelineError:
            entries.append({"dataset": name, "path": f"data/{name}", "stage": "?", "rows": None, "bytes": None,
                            "columns": [], "content_sha256": None, "verified": False})
            continue
        entry = {key: manifest[key] for key in ("dataset", "path", "stage", "rows", "bytes", "content_sha256")}
        entry["columns"] = [c["name"] for c in manifest["columns"]]
        entry["schema_version"] = manifest["schema"]["version"]
        entry["code_revision"] = manifest["code_revision"]
        if verify:
            entry["verified"] = verify_dataset(name, project)
        entries.append(entry)
    if fmt == "json":
        sys.stdout.write(json.dumps(entries, indent=1) + "\n")
    else:
        table = Table("dataset", "stage", "rows", "bytes", "columns", "content sha256", *(["verified"] if verify else []))
        for e in entries:
            table.add_row(
                e["dataset"], e["stage"], str(e["rows"]), str(e["bytes"]), ", ".join(e["columns"]),
                (e["content_sha256"] or "missing manifest")[:16],
                *(["yes" if e.get("verified") else "[red]NO[/]"] if verify else []),
            )
        console.print(table)
    if not entries:
        errors.print("no datasets yet: run `dvc repro`", style="yellow")
    if verify and not all(e.get("verified") for e in entries):
        raise typer.Exit(1)


@app.command()
def doctor(project: ProjectOption = Path(".")) -> None:
    """Check packages, params, model, spaCy pipeline, GPU, DVC and Label Studio; print each fix."""
    from pipeline.doctor import run_checks

    marks = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}
    table = Table("check", "status", "detail", "fix")
    checks = run_checks(project)
    for check in checks:
        table.add_row(check.name, marks[check.status], check.detail, check.fix)
    console.print(table)
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
