"""``whp query``, ``whp datasets``, ``whp show`` and ``whp dataset``: looking at what the stages built."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.cli.common import Format, ProjectOption, check_format, console, errors, fail, print_rows, sub_app
from pipeline.errors import PipelineError
from pipeline.paths import BASELINE


LimitOption = Annotated[int | None, typer.Option("--limit", "-n", min=0, help="Print at most N rows (stop fetching there).")]


def _interactive(database, fmt: Format, limit: int | None) -> None:
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
            print_rows(*run_query(database, sql), fmt, limit=limit)
        except PipelineError as exc:
            errors.print(f"[red]error:[/] {exc}", highlight=False)


def query(
    sql: Annotated[str | None, typer.Argument(help="SQL to run; omit for an interactive prompt.")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read the SQL from a file.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json (csv and json stream every row; "
                                     "a table shows 1000 unless --limit says otherwise).")] = "table",
    limit: LimitOption = None,
    project: ProjectOption = Path("."),
) -> None:
    """Run SQL over every dataset (one view per dataset: passages, documents, ...)."""
    from pipeline.sql import connect, run_query

    check_format(fmt, ("table", "csv", "json"))
    if sql and file:
        fail(ValueError("give SQL or --file, not both"))
    if file:
        try:
            sql = file.read_text(encoding="utf-8")
        except OSError as exc:
            fail(ValueError(f"{file}: {exc.strerror}"))
    try:
        database = connect(project)
    except PipelineError as exc:
        fail(exc)
    for why in database.unreadable.values():
        errors.print(f"[yellow]warning:[/] {why}", highlight=False)
    if sql is None:
        _interactive(database, fmt, limit)  # type: ignore[arg-type]
        return
    try:
        print_rows(*run_query(database, sql), fmt, limit=limit)  # type: ignore[arg-type]
    except PipelineError as exc:
        fail(exc)


def datasets(
    verify: Annotated[bool, typer.Option(help="Re-hash every part and compare with the manifest.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    project: ProjectOption = Path("."),
) -> None:
    """Every dataset: path, rows, bytes, columns, content hash, and the stage that wrote it.

    A dataset is listed when its folder or its manifest is there; with --verify, one whose
    folder is gone, whose manifest is unreadable or whose parts differ from it fails the command.
    """
    from pipeline.store import dataset_problem, list_datasets, read_manifest

    check_format(fmt, ("table", "json"))
    entries = []
    for name in list_datasets(project, with_manifests=True):
        try:
            manifest = read_manifest(name, project)
        except PipelineError as exc:
            entries.append({"dataset": name, "path": f"data/{name}", "stage": "?", "rows": None, "bytes": None,
                            "columns": [], "content_sha256": None, "verified": False, "problem": str(exc)})
            continue
        entry = {key: manifest[key] for key in ("dataset", "path", "stage", "rows", "bytes", "content_sha256")}
        entry["columns"] = [c.get("name") for c in manifest["columns"] if isinstance(c, dict)]
        entry["schema_version"] = (manifest.get("schema") or {}).get("version")
        entry["code_revision"] = manifest.get("code_revision")
        if verify:
            entry["problem"] = dataset_problem(name, project)
            entry["verified"] = entry["problem"] is None
        entries.append(entry)
    if fmt == "json":
        sys.stdout.write(json.dumps(entries, indent=1) + "\n")
    else:
        table = Table("dataset", "stage", "rows", "bytes", "columns", "content sha256", *(["verified"] if verify else []))
        for e in entries:
            table.add_row(
                e["dataset"], e["stage"], str(e["rows"]), str(e["bytes"]), ", ".join(e["columns"]),
                (e["content_sha256"] or "unreadable manifest")[:19],
                *(["yes" if e.get("verified") else "[red]NO[/]"] if verify else []),
            )
        console.print(table)
    for e in entries:
        if e.get("problem"):
            errors.print(f"[red]{e['dataset']}:[/] {e['problem']}", highlight=False)
    if not entries:
        errors.print("no datasets yet: run `dvc repro`", style="yellow")
    if any(e.get("problem") for e in entries) or (verify and not all(e.get("verified") for e in entries)):
        raise typer.Exit(1)


show_app = sub_app("Look inside datasets.")


@show_app.command("block")
def show_block(
    block_id: Annotated[str, typer.Argument(help="A block id, e.g. 'forget:book.txt@3'.")],
    start: Annotated[int, typer.Option(help="First position shown.")] = 0,
    limit: Annotated[int, typer.Option(help="Positions shown.")] = 60,
    project: ProjectOption = Path("."),
) -> None:
    """The original tokens, their aligned translation and the generic target, side by side.

    Dropped positions (outside the loss) are marked with the reason.
    """
    from pipeline.models import load_tokenizer
    from pipeline.store import read_dataset

    try:
        blocks = read_dataset("blocks", project)
        rows = blocks[blocks["block_id"] == block_id]
        if rows.empty:
            raise PipelineError(f"no block {block_id!r} (try: whp query \"select block_id from blocks limit 5\")")
        block = rows.iloc[0]
        try:
            training = read_dataset("dataset", project, columns=["block_id", "labels"])
            labels = training.set_index("block_id")["labels"].get(block_id)
        except PipelineError:
            labels = None
        tokenizer = load_tokenizer(project / BASELINE)
    except PipelineError as exc:
        fail(exc)
    console.print(f"[bold]{block_id}[/] world {block['world']}; anchors: {', '.join(block['anchors']) or 'none'}", highlight=False)
    table = Table("i", "original", "j(i)", "translation", "generic target", "note")
    for i in range(start, min(start + limit, len(block["input_ids"]))):
        j = block["alignment"][i]
        original = tokenizer.decode([block["input_ids"][i]])
        translated = tokenizer.decode([block["translated_ids"][j]]) if j >= 0 else ""
        target = "" if labels is None or labels[i] < 0 else tokenizer.decode([labels[i]])
        next_original = tokenizer.decode([block["input_ids"][i + 1]]) if i + 1 < len(block["input_ids"]) else ""
        note = block["drop_reasons"][i] or ("changed" if target and target != next_original else "")
        style = "dim" if j < 0 else ("bold yellow" if note == "changed" else "")
        table.add_row(str(i), repr(original), str(j), repr(translated), repr(target), note, style=style)
    console.print(table)


dataset_app = sub_app("Versions of the training dataset: git tags dataset/<name> over DVC-pushed data.")
DatasetOption = Annotated[str, typer.Option("--dataset", "-d", help="Which dataset (folder data/<name>).")]


@dataset_app.command("tag")
def dataset_tag(
    name: Annotated[str, typer.Argument(help="Version name, e.g. v1 (the tag is dataset/v1).")],
    message: Annotated[str | None, typer.Option("--message", "-m", help="A note for the tag.")] = None,
    dataset: DatasetOption = "dataset",
    project: ProjectOption = Path("."),
) -> None:
    """Tag the committed, up-to-date dataset as dataset/NAME and push its data to the DVC remote."""
    from pipeline.versions import read_manifest_at, tag

    try:
        tag_name = tag(name, root=project, dataset=dataset, message=message)
        manifest = read_manifest_at(tag_name, root=project, dataset=dataset)
    except PipelineError as exc:
        fail(exc)
    console.print(f"tagged {tag_name}: {dataset}, {manifest['rows']} rows, content sha256 "
                  f"{manifest['content_sha256'][:16]}; data pushed to the DVC remote", highlight=False)
    errors.print(f"share the tag with `git push origin {tag_name}`", style="dim", highlight=False)


@dataset_app.command("versions")
def dataset_versions(
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    dataset: DatasetOption = "dataset",
    project: ProjectOption = Path("."),
) -> None:
    """Every tagged version (commit, date, rows, content hash), then the working copy."""
    from pipeline.versions import versions

    check_format(fmt, ("table", "json"))
    try:
        entries = versions(root=project, dataset=dataset)
    except PipelineError as exc:
        fail(exc)
    if fmt == "json":
        sys.stdout.write(json.dumps(entries, indent=1) + "\n")
        return
    table = Table("version", "commit", "date", "rows", "content sha256", "message")
    for e in entries:
        table.add_row(
            e["version"], (e["commit"] or "-")[:12], (e["date"] or "-")[:16].replace("T", " "),
            "?" if e["rows"] is None else str(e["rows"]),
            (e["content_sha256"] or "?")[:16], e["message"] or "",
        )
    console.print(table, highlight=False)
    for e in entries:
        if e.get("error"):
            errors.print(f"[yellow]{e['version']}:[/] {e['error']}", highlight=False)
    if not entries:
        errors.print(f"no versions of {dataset!r} yet: `dvc repro`, commit, then `whp dataset tag v1`", style="yellow")


@dataset_app.command("show")
def dataset_show(
    version: Annotated[str, typer.Argument(help="A tag (v1 or dataset/v1), a git revision, or 'workspace'.")],
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    dataset: DatasetOption = "dataset",
    project: ProjectOption = Path("."),
) -> None:
    """A version's manifest: rows, bytes, columns, content hash, stage, params, code revision."""
    from pipeline.versions import WORKSPACE, read_manifest_at, resolve

    check_format(fmt, ("table", "json"))
    try:
        commit = resolve(version, root=project)
        manifest = read_manifest_at(version, root=project, dataset=dataset)
    except PipelineError as exc:
        fail(exc)
    summary = {"version": version, "commit": None if commit == WORKSPACE else commit, **manifest}
    if fmt == "json":
        sys.stdout.write(json.dumps(summary, indent=1) + "\n")
        return
    table = Table("", "", show_header=False, box=None)
    for key in ("version", "commit", "dataset", "stage", "rows", "bytes", "content_sha256", "code_revision",
                "created_at"):
        table.add_row(key, "-" if summary.get(key) is None else str(summary[key]))
    schema = manifest.get("schema") or {}
    table.add_row("schema", f"{schema.get('contract', '?')} v{schema.get('version', '?')}")
    table.add_row("columns", ", ".join(f"{c['name']} ({c['type']})" for c in manifest.get("columns", [])))
    table.add_row("parts", str(len(manifest.get("files", []))))
    table.add_row("params", json.dumps(manifest.get("params", {}), sort_keys=True))
    console.print(table, highlight=False)
