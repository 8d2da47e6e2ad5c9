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


def _check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        _fail(ValueError(f"--format must be one of {', '.join(allowed)}, not {fmt!r}"))


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

    _check_format(fmt, ("table", "csv", "json"))
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
    for model, graded in sorted((summary.get("familiarity") or {}).items()):
        table.add_row(f"familiarity {model}", f"human {graded['human']:.3f}, automatic {graded['auto']:.3f} over "
                      f"{graded['n']} completion(s); agreement {graded['agreement']:.0%}")
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

    _check_format(fmt, ("table", "json"))
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


show_app = typer.Typer(help="Look inside datasets.", no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(show_app, name="show")


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
        tokenizer = load_tokenizer(project / "models" / "baseline")
    except PipelineError as exc:
        _fail(exc)
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


dataset_app = typer.Typer(
    help="Versions of the training dataset: git tags dataset/<name> over DVC-pushed data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(dataset_app, name="dataset")
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
        _fail(exc)
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

    _check_format(fmt, ("table", "json"))
    try:
        entries = versions(root=project, dataset=dataset)
    except PipelineError as exc:
        _fail(exc)
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

    _check_format(fmt, ("table", "json"))
    try:
        commit = resolve(version, root=project)
        manifest = read_manifest_at(version, root=project, dataset=dataset)
    except PipelineError as exc:
        _fail(exc)
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


if __name__ == "__main__":
    app()
