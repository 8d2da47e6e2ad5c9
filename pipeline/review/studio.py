"""A managed local Label Studio server for the human review: its own venv, data under ``.studio/``.

Label Studio pins pyarrow and an exact SDK that conflict with the pipeline's own packages, so the
server runs from a separate virtual environment (``.studio/venv``, or ``WHP_STUDIO_VENV``); the
pipeline talks to it only through ``label-studio-sdk``. Everything is bound to 127.0.0.1.

Layout inside the project (ignored by git)::

    .studio/data/         LABEL_STUDIO_BASE_DATA_DIR: the SQLite database, media, exports
    .studio/server.log    the server's output
    .studio/server.json   {"pid", "port", "url", ...} of the running server (no secrets)

Credentials: :mod:`pipeline.review.credentials` (:func:`start` generates the missing ones into
``.env``); health and key checks and the SDK client: :mod:`pipeline.review.connection`; the
process itself: :mod:`pipeline.review.processes`.

``whp studio install|start|stop|status`` (or ``python -m pipeline.cli studio ...``) drives it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from pipeline.env import setting
from pipeline.review.connection import API_KEY_KEY, URL_KEY, StudioError, check_server, sdk_client
from pipeline.review.credentials import Credentials, ensure_credentials
from pipeline.review.processes import (
    HOST, alive, announced_port, free_port, is_our_server, remember, tail, terminate,
)

if TYPE_CHECKING:
    from label_studio_sdk import LabelStudio

LABEL_STUDIO_VERSION = "1.23.2"
STUDIO_DIR = ".studio"
DEFAULT_PORT = 8080
START_TIMEOUT_S = 180.0
INSTALLED_STAMP = ".whp-installed"
VENV_KEY = "WHP_STUDIO_VENV"

console = Console(stderr=True)


@dataclass(frozen=True)
class ServerStatus:
    """What is known about the managed server of one project.

    ``token_accepted`` is None when it was not checked (no API key, or the server is not healthy).
    """

    running: bool
    url: str | None
    pid: int | None
    healthy: bool
    token_accepted: bool | None
    data_dir: Path
    log: Path


# --- paths -------------------------------------------------------------------------------------


def studio_dir(root: Path | str = ".") -> Path:
    return Path(root).resolve() / STUDIO_DIR


def data_dir(root: Path | str = ".") -> Path:
    return studio_dir(root) / "data"


def log_path(root: Path | str = ".") -> Path:
    return studio_dir(root) / "server.log"


def record_path(root: Path | str = ".") -> Path:
    return studio_dir(root) / "server.json"


def venv_dir(root: Path | str = ".") -> Path:
    """The server's virtual environment: ``WHP_STUDIO_VENV`` (relative to ``root``) or ``.studio/venv``."""
    configured = setting(VENV_KEY, root)
    if configured:
        return (Path(root) / Path(configured).expanduser()).resolve()
    return studio_dir(root) / "venv"


def _executable(venv: Path) -> Path:
    return venv / "bin" / "label-studio"


# --- install -----------------------------------------------------------------------------------


def is_installed(venv: Path) -> bool:
    stamp = venv / INSTALLED_STAMP
    return (
        _executable(venv).is_file()
        and stamp.is_file()
        and stamp.read_text(encoding="utf-8").strip() == f"label-studio=={LABEL_STUDIO_VERSION}"
    )


def install(venv: Path | str | None = None, *, root: Path | str = ".", quiet: bool = False) -> Path:
    """Create the server's venv with ``label-studio==LABEL_STUDIO_VERSION`` unless it is there already.

    About 1 GB and 1-3 minutes. The stamp file ``<venv>/.whp-installed`` marks a finished install
    (and is touched on every call, so that ``make`` sees it up to date). Returns the venv folder.
    """
    venv = Path(venv).resolve() if venv is not None else venv_dir(root)
    stamp = venv / INSTALLED_STAMP
    if is_installed(venv):
        stamp.touch()
        if not quiet:
            console.print(f"Label Studio {LABEL_STUDIO_VERSION} already installed in {venv}", highlight=False)
        return venv
    venv.mkdir(parents=True, exist_ok=True)
    log = venv / "whp-install.log"
    started = time.perf_counter()
    steps = []
    if not (venv / "bin" / "python").is_file():
        steps.append(("creating the virtual environment", [sys.executable, "-m", "venv", str(venv)]))
    steps.append((f"installing label-studio=={LABEL_STUDIO_VERSION} (about 1 GB)",
                  [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                   f"label-studio=={LABEL_STUDIO_VERSION}"]))
    if not quiet:
        console.print(f"Label Studio server environment: {venv} (log: {log})", highlight=False)
    with open(log, "a", encoding="utf-8") as out, console.status("", spinner="dots") as spinner:
        for title, command in steps:
            if not quiet:
                console.print(f"  {title}", highlight=False)
            out.write(f"$ {' '.join(command)}\n")
            out.flush()
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       env=_clean_env())
            assert process.stdout is not None
            for line in process.stdout:
                out.write(line)
                # pip prints one "Collecting ..." per package, then one long "Installing ..." pause.
                if not quiet and line.startswith(("Collecting", "Downloading", "Installing", "Successfully")):
                    spinner.update(f"[dim]{line.strip()[:100]}  ({time.perf_counter() - started:.0f}s)[/]")
            if process.wait() != 0:
                raise StudioError(f"{title} failed (exit {process.returncode}); see {log}:\n{tail(log)}")
    stamp.write_text(f"label-studio=={LABEL_STUDIO_VERSION}\n", encoding="utf-8")
    if not quiet:
        console.print(f"[green]Label Studio {LABEL_STUDIO_VERSION} installed[/] in "
                      f"{time.perf_counter() - started:.0f}s", highlight=False)
    return venv


# --- server ------------------------------------------------------------------------------------


def start(
    root: Path | str = ".",
    *,
    port: int | None = None,
    creds: Credentials | None = None,
    venv: Path | str | None = None,
    timeout: float = START_TIMEOUT_S,
) -> ServerStatus:
    """Start the project's Label Studio server (or return the one already running) and wait for it.

    Args:
        root: the project root; the server's data, log and record go to ``<root>/.studio``.
        port: the loopback port to try first; default: the port of a loopback ``LABEL_STUDIO_URL``,
            else 8080. A busy port is replaced by the next free one (reported).
        creds: the account and token; default: :func:`ensure_credentials` (environment / ``.env``,
            generating the missing ones).
        venv: the server's venv (installed on first use); default: :func:`venv_dir`.
        timeout: seconds to wait for ``/health``; the first start runs migrations (1-2 min on two cores).

    Raises:
        StudioError: the server did not become healthy, or exited; the message points at the log.
    """
    root = Path(root).resolve()
    current = status(root, api_key=creds.api_key if creds else None)
    if current.running:
        if current.healthy:
            console.print(f"Label Studio already running at {current.url} (pid {current.pid})", highlight=False)
            return current
        _wait_healthy(root, current.pid, int(urllib.parse.urlsplit(current.url).port), timeout)  # type: ignore[arg-type]
        return status(root, api_key=creds.api_key if creds else None)
    record_path(root).unlink(missing_ok=True)

    creds = creds or ensure_credentials(root, server_data=data_dir(root))
    venv = Path(venv).resolve() if venv is not None else venv_dir(root)
    if not is_installed(venv):
        install(venv)
    wanted = port or _configured_port(root)
    chosen = free_port(wanted)
    if chosen != wanted:
        console.print(f"[yellow]port {wanted} is busy:[/] using {chosen}", highlight=False)

    data_dir(root).mkdir(parents=True, exist_ok=True)
    env = _clean_env() | {
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir(root)),
        "LABEL_STUDIO_USERNAME": creds.username,
        "LABEL_STUDIO_PASSWORD": creds.password,
        "LABEL_STUDIO_USER_TOKEN": creds.api_key,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
    }
    command = [str(_executable(venv)), "start", "--no-browser", "--internal-host", HOST, "--port", str(chosen)]
    log = log_path(root)
    with open(log, "ab") as out:
        out.write(f"\n=== whp studio start {time.strftime('%Y-%m-%d %H:%M:%S')} port {chosen}\n".encode())
        out.flush()
        # A new session: the server outlives this process and is stopped as one process group.
        process = subprocess.Popen(command, env=env, cwd=studio_dir(root), stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    remember(process)
    url = f"http://{HOST}:{chosen}"
    _write_record(root, {"pid": process.pid, "port": chosen, "url": url, "data_dir": str(data_dir(root)),
                         "log": str(log), "venv": str(venv), "username": creds.username,
                         "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    try:
        _wait_healthy(root, process.pid, chosen, timeout)
    except BaseException:
        terminate(process.pid)
        record_path(root).unlink(missing_ok=True)
        raise
    result = status(root, api_key=creds.api_key)
    configured = setting(URL_KEY, root)
    if configured and configured.rstrip("/") != url:
        console.print(f"[yellow]note:[/] {URL_KEY} is {configured}, so the pipeline's client still uses that "
                      f"server; unset it (or set it to {url}) to use this one", highlight=False)
    return result


def _wait_healthy(root: Path, pid: int, port: int, timeout: float) -> None:
    url = f"http://{HOST}:{port}"
    log = log_path(root)
    started = time.perf_counter()
    with console.status(f"starting Label Studio at {url} (the first start runs migrations, about a minute)"):
        while True:
            elapsed = time.perf_counter() - started
            if not alive(pid):
                raise StudioError(f"Label Studio exited while starting; see {log}:\n{tail(log)}")
            moved = announced_port(log)
            if moved is not None and moved != port:
                raise StudioError(f"Label Studio took port {moved} instead of {port} (taken meanwhile?); "
                                  "run `whp studio start` again")
            if check_server(url, timeout=2.0).healthy:
                break
            if elapsed > timeout:
                raise StudioError(f"Label Studio did not answer {url}/health within {timeout:.0f}s; see {log}:\n"
                                  f"{tail(log)}")
            time.sleep(0.5)
    console.print(f"[green]Label Studio is up[/] at {url} after {time.perf_counter() - started:.1f}s "
                  f"(pid {pid}, log {log})", highlight=False)


def stop(root: Path | str = ".") -> bool:
    """Stop the project's server (its whole process group). False if none was running.

    A stale ``server.json`` (its process gone, or the pid now belongs to another program) is
    removed without touching any process.
    """
    record = _read_record(root)
    record_path(root).unlink(missing_ok=True)
    if record is None or not is_our_server(record["pid"]):
        return False
    terminate(record["pid"])
    console.print(f"Label Studio stopped (pid {record['pid']}, {record['url']})", highlight=False)
    return True


def status(root: Path | str = ".", *, api_key: str | None = None) -> ServerStatus:
    """Whether the project's managed server runs, answers ``/health``, and accepts the API key.

    ``api_key`` defaults to ``LABEL_STUDIO_API_KEY`` (environment / ``.env``).
    """
    record = _read_record(root)
    running = record is not None and is_our_server(record["pid"])
    url = record["url"] if running else None
    checked = check_server(url, api_key=api_key or setting(API_KEY_KEY, root), timeout=10.0) if running else None
    return ServerStatus(running=running, url=url, pid=record["pid"] if running else None,
                        healthy=bool(checked and checked.healthy),
                        token_accepted=checked.token_accepted if checked else None,
                        data_dir=data_dir(root), log=log_path(root))


def resolve_url(root: Path | str = ".") -> str | None:
    """The server the pipeline uses: ``LABEL_STUDIO_URL`` if set, else the running managed server."""
    configured = setting(URL_KEY, root)
    if configured:
        return configured.rstrip("/")
    record = _read_record(root)
    if record is not None and is_our_server(record["pid"]):
        return record["url"]
    return None


def client(root: Path | str = ".", *, url: str | None = None, api_key: str | None = None,
           timeout: float = 60.0) -> LabelStudio:
    """An SDK client for the review server, checked to be reachable and to accept the API key.

    Args:
        root: the project root (for ``.env`` and the managed server's record).
        url: default :func:`resolve_url` (``LABEL_STUDIO_URL``, else the managed server).
        api_key: default ``LABEL_STUDIO_API_KEY``; a legacy token or a personal access token (JWT).
        timeout: seconds for each request the client makes.

    Raises:
        StudioError: no server configured, unreachable, or the key refused; the message names the
            URL and the fix, never the key.
    """
    url = (url or resolve_url(root) or "").rstrip("/")
    if not url:
        raise StudioError(f"no Label Studio server: run `whp studio start`, or set {URL_KEY} (environment or .env)")
    api_key = api_key or setting(API_KEY_KEY, root)
    if not api_key:
        raise StudioError(f"{API_KEY_KEY} is not set (environment or .env) for {url}: run `whp studio start` "
                          "to generate one for the local server, or copy the token of the server's account")
    return sdk_client(url, api_key, timeout=timeout)


# --- internals ---------------------------------------------------------------------------------


def _configured_port(root: Path) -> int:
    configured = setting(URL_KEY, root)
    if configured:
        parts = urllib.parse.urlsplit(configured)
        if parts.hostname in ("127.0.0.1", "localhost") and parts.port:
            return parts.port
    return DEFAULT_PORT


def _clean_env() -> dict[str, str]:
    """This process's environment without what would leak the project venv into the server's."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", URL_KEY, API_KEY_KEY}
    return {key: value for key, value in os.environ.items() if key not in drop}


def _read_record(root: Path | str) -> dict | None:
    try:
        record = json.loads(record_path(root).read_text(encoding="utf-8"))
        int(record["pid"]), str(record["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def _write_record(root: Path, record: dict) -> None:
    path = record_path(root)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    partial.replace(path)
