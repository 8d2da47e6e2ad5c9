"""``whp review``: push tasks to Label Studio, pull the reviewers' work, see where it stands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.cli.common import ProjectOption, check_format, console, errors, fail, sub_app
from pipeline.errors import PipelineError


review_app = sub_app("Human review in Label Studio: push tasks, pull the reviewers' work, see where it stands.")
ReviewName = Annotated[str, typer.Argument(help="Review project: anchors, linguistic or evaluation.")]


def _review_client(project: Path):
    from pipeline.review.studio import client

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
    from pipeline.review.sync import push

    try:
        # A folder without params.yaml (a bare review workspace) uses the defaults.
        has_params = (project / "params.yaml").is_file()
        settings = load_params(project / "params.yaml").review if has_params else ReviewParams()
        counts = push(name, project, _review_client(project), max_tasks=settings.max_tasks,
                      batch_size=settings.batch_size)
    except PipelineError as exc:
        fail(exc)
    repaired = f", {counts['repaired']} repaired (pre-annotations restored)" if counts["repaired"] else ""
    console.print(f"whp-{name} (project {counts['project_id']}): {counts['created']} created, "
                  f"{counts['updated']} updated, {counts['unchanged']} unchanged{repaired}", highlight=False)
    if counts["untracked"]:
        errors.print(f"[yellow]{len(counts['untracked'])} task(s) on the server are not in labels/{name}/tasks.jsonl "
                     f"(pull will refuse them): {', '.join(counts['untracked'][:10])}", highlight=False)


@review_app.command("pull")
def review_pull(
    name: ReviewName,
    force: Annotated[bool, typer.Option("--force", help="Write even when records pulled earlier would vanish because "
                                        "their reviewers' work is no longer on the server (a reset server).")] = False,
    project: ProjectOption = Path("."),
) -> None:
    """Export the reviewers' work: a snapshot under labels/<name>/snapshots/ and the normalised file.
    Refuses (exit 1, labels/ untouched) when records already pulled would vanish, unless --force."""
    from pipeline.review.sync import pull

    try:
        summary = pull(name, project, _review_client(project), force=force)
    except PipelineError as exc:
        fail(exc)
    _print_review(summary)


@review_app.command("status")
def review_status(
    name: ReviewName,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    project: ProjectOption = Path("."),
) -> None:
    """Tasks, annotated, cancelled, conflicts and agreement, from a fresh export (writes nothing);
    exit 1 when the export has problems that pull would refuse."""
    from pipeline.review.sync import status

    check_format(fmt, ("table", "json"))
    try:
        summary = status(name, project, _review_client(project))
    except PipelineError as exc:
        fail(exc)
    if fmt == "json":
        sys.stdout.write(json.dumps(summary, indent=1) + "\n")
    else:
        _print_review(summary)
    if summary["problems"]:
        raise typer.Exit(1)
