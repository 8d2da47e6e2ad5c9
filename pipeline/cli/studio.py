"""``whp studio``: the local Label Studio server (install, start, stop, status)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.cli.common import ProjectOption, console, fail, sub_app
from pipeline.errors import PipelineError


studio_app = sub_app("The local Label Studio server for the review: its own venv, data in .studio/, 127.0.0.1 only.")


def _print_studio_status(project: Path, state) -> None:
    from pipeline.env import setting
    from pipeline.review import studio
    from pipeline.review.connection import API_KEY_KEY, URL_KEY
    from pipeline.review.credentials import PASSWORD_KEY, USERNAME_KEY, mask

    yes_no = {True: "[green]yes[/]", False: "[red]no[/]", None: "[dim]not checked[/]"}
    table = Table("", "", show_header=False, box=None)
    table.add_row("server", f"running (pid {state.pid})" if state.running else "[yellow]not running[/]")
    table.add_row("url", state.url or "-")
    table.add_row("healthy", yes_no[state.healthy])
    table.add_row("API key accepted", yes_no[state.token_accepted])
    table.add_row("account", setting(USERNAME_KEY, project) or "(not set)")
    table.add_row("password", mask(setting(PASSWORD_KEY, project)))
    table.add_row("API key", mask(setting(API_KEY_KEY, project)))
    table.add_row("data", str(state.data_dir))
    table.add_row("log", str(state.log))
    table.add_row("venv", str(studio.venv_dir(project)))
    console.print(table, highlight=False)
    configured = setting(URL_KEY, project)
    if configured:
        console.print(f"{URL_KEY} is set: the pipeline uses {configured}", highlight=False)


@studio_app.command("install")
def studio_install(project: ProjectOption = Path(".")) -> None:
    """Create the server's venv (.studio/venv, or WHP_STUDIO_VENV) with label-studio; does nothing if done."""
    from pipeline.review import studio

    try:
        studio.install(root=project)
    except PipelineError as exc:
        fail(exc)


@studio_app.command("start")
def studio_start(
    port: Annotated[int | None, typer.Option(help="Port to try first (default: from LABEL_STUDIO_URL, else 8080).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for /health (the first start migrates).")] = 180.0,
    project: ProjectOption = Path("."),
) -> None:
    """Start the server in the background (installing it on first use); generate missing credentials into .env."""
    from pipeline.review import studio

    try:
        state = studio.start(project, port=port, timeout=timeout)
    except PipelineError as exc:
        fail(exc)
    _print_studio_status(project, state)
    if state.token_accepted is False:
        fail(studio.StudioError(f"the server at {state.url} is running but refuses LABEL_STUDIO_API_KEY: it keeps "
                                 "the token of its first start (restore that one in .env)"))


@studio_app.command("stop")
def studio_stop(project: ProjectOption = Path(".")) -> None:
    """Stop the server (a stale record of a server that is gone is removed)."""
    from pipeline.review import studio

    if not studio.stop(project):
        console.print("Label Studio was not running", highlight=False)


@studio_app.command("status")
def studio_status(project: ProjectOption = Path(".")) -> None:
    """Show the server's URL, health and whether it accepts the API key; exit 1 unless all is well."""
    from pipeline.review import studio

    state = studio.status(project)
    _print_studio_status(project, state)
    if not (state.running and state.healthy and state.token_accepted is not False):
        raise typer.Exit(1)
