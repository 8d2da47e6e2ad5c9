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


studio_app = typer.Typer(
    help="The local Label Studio server for the review: its own venv, data in .studio/, 127.0.0.1 only.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(studio_app, name="studio")


def _print_studio_status(project: Path, state) -> None:
    from pipeline import studio
    from pipeline.env import setting

    yes_no = {True: "[green]yes[/]", False: "[red]no[/]", None: "[dim]not checked[/]"}
    table = Table("", "", show_header=False, box=None)
    table.add_row("server", f"running (pid {state.pid})" if state.running else "[yellow]not running[/]")
    table.add_row("url", state.url or "-")
    table.add_row("healthy", yes_no[state.healthy])
    table.add_row("API key accepted", yes_no[state.token_accepted])
    table.add_row("account", setting(studio.USERNAME_KEY, project) or "(not set)")
    table.add_row("password", studio.mask(setting(studio.PASSWORD_KEY, project)))
    table.add_row("API key", studio.mask(setting(studio.API_KEY_KEY, project)))
    table.add_row("data", str(state.data_dir))
    table.add_row("log", str(state.log))
    table.add_row("venv", str(studio.venv_dir(project)))
    console.print(table, highlight=False)
    configured = setting(studio.URL_KEY, project)
    if configured:
        console.print(f"{studio.URL_KEY} is set: the pipeline uses {configured}", highlight=False)


@studio_app.command("install")
def studio_install(project: ProjectOption = Path(".")) -> None:
    """Create the server's venv (.studio/venv, or WHP_STUDIO_VENV) with label-studio; does nothing if done."""
    from pipeline import studio

    try:
        studio.install(root=project)
    except PipelineError as exc:
        _fail(exc)


@studio_app.command("start")
def studio_start(
    port: Annotated[int | None, typer.Option(help="Port to try first (default: from LABEL_STUDIO_URL, else 8080).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for /health (the first start migrates).")] = 180.0,
    project: ProjectOption = Path("."),
) -> None:
    """Start the server in the background (installing it on first use); generate missing credentials into .env."""
    from pipeline import studio

    try:
        state = studio.start(project, port=port, timeout=timeout)
    except PipelineError as exc:
        _fail(exc)
    _print_studio_status(project, state)
    if state.token_accepted is False:
        _fail(studio.StudioError(f"the server at {state.url} is running but refuses {studio.API_KEY_KEY}: it keeps "
                                 "the token of its first start (restore that one in .env)"))


@studio_app.command("stop")
def studio_stop(project: ProjectOption = Path(".")) -> None:
    """Stop the server (a stale record of a server that is gone is removed)."""
    from pipeline import studio

    if not studio.stop(project):
        console.print("Label Studio was not running", highlight=False)


@studio_app.command("status")
def studio_status(project: ProjectOption = Path(".")) -> None:
    """Show the server's URL, health and whether it accepts the API key; exit 1 unless all is well."""
    from pipeline import studio

    state = studio.status(project)
    _print_studio_status(project, state)
    if not (state.running and state.healthy and state.token_accepted is not False):
        raise typer.Exit(1)


review_app = typer.Typer(
    help="Human review in Label Studio: push tasks, pull the reviewers' work, see where it stands.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(review_app, name="review")
ReviewName = Annotated[str, typer.Argument(help="Review project: anchors, linguistic or evaluation.")]


def _review_client(project: Path):
    from pipeline.studio import client

    return client(project)


def _print_review(summary: dict) -> None:
    table = Table("", "", show_header=False, box=None)
    for name in ("project", "tasks", "tracked", "annotated", "annotations", "cancelled", "snapshot", "output",
                 "records"):
        if name in summary:
            table.add_row(name, str(summary[name]))
    if "reviewers" in summary:
        table.add_row("reviewers", ", ".join(summary["reviewers"]) or "-")
    if summary.get("decisions"):
        table.add_row("decisions", ", ".join(f"{k} {v}" for k, v in sorted(summary["decisions"].items())))
    agreement = summary.get("agreement") or {}
    if agreement.get("percent_agreement") is not None:
        kappa = agreement.get("kappa")
        table.add_row("agreement", f"{agreement['percent_agreement']:.1%} over {agreement['items']} item(s), "
                      f"{len(agreement['pairs'])} pair(s); kappa " + ("n/a" if kappa is None else f"{kappa:.2f}"))
    console.print(table, highlight=False)
    conflicts = summary.get("conflicts") or []
    if conflicts:
        rows = Table("task", "anchor", "aspect", "votes", title=f"{len(conflicts)} conflict(s) to adjudicate")
        for c in conflicts:
            rows.add_row(c["task"], c["anchor"], c["aspect"],
                         "; ".join(f"{value}: {', '.join(who)}" for value, who in c["votes"].items()))
        console.print(rows, highlight=False)
    for item in summary.get("disagreements") or []:
        decided = "; ".join(f"{d} in {', '.join(tasks)}" for d, tasks in item["decisions"].items())
        errors.print(f"[yellow]decided differently across tasks:[/] {item['anchor']}: {decided}", highlight=False)
    for problem in summary.get("problems") or []:
        errors.print(f"[yellow]problem:[/] {problem}", highlight=False)


@review_app.command("push")
def review_push(name: ReviewName, project: ProjectOption = Path(".")) -> None:
    """Create the project whp-<name> if needed and import or update its tasks (never duplicates)."""
    from pipeline.params import ReviewParams, load_params
    from pipeline.review import push

    try:
        # A folder without params.yaml (a bare review workspace) uses the defaults.
        has_params = (project / "params.yaml").is_file()
        settings = load_params(project / "params.yaml").review if has_params else ReviewParams()
        counts = push(name, project, _review_client(project), max_tasks=settings.max_tasks,
                      batch_size=settings.batch_size)
    except PipelineError as exc:
        _fail(exc)
    console.print(f"whp-{name} (project {counts['project_id']}): {counts['created']} created, "
                  f"{counts['updated']} updated, {counts['unchanged']} unchanged", highlight=False)
    if counts["untracked"]:
        errors.print(f"[yellow]{len(counts['untracked'])} task(s) on the server are not in labels/{name}/tasks.jsonl "
                     f"(pull will refuse them): {', '.join(counts['untracked'][:10])}", highlight=False)


@review_app.command("pull")
def review_pull(name: ReviewName, project: ProjectOption = Path(".")) -> None:
    """Export the reviewers' work: a snapshot under labels/<name>/snapshots/ and the normalised file."""
    from pipeline.review import pull

    try:
        summary = pull(name, project, _review_client(project))
    except PipelineError as exc:
        _fail(exc)
    _print_review(summary)


@review_app.command("status")
def review_status(
    name: ReviewName,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    project: ProjectOption = Path("."),
) -> None:
    """Tasks, annotated, cancelled, conflicts and agreement, from a fresh export (writes nothing);
    exit 1 when the export has problems that pull would refuse."""
    from pipeline.review import status

    if fmt not in ("table", "json"):
        _fail(ValueError(f"--format must be table or json, not {fmt!r}"))
    try:
        summary = status(name, project, _review_client(project))
    except PipelineError as exc:
        _fail(exc)
    if fmt == "json":
        sys.stdout.write(json.dumps(summary, indent=1) + "\n")
    else:
        _print_review(summary)
    if summary["problems"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
