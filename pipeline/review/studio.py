"""A managed local Label Studio server for the human review: its own venv, data under ``.studio/``.

Label Studio pins pyarrow and an exact SDK that conflict with the pipeline's own packages, so the
server runs from a separate virtual environment (``.studio/venv``, or ``WHP_STUDIO_VENV``); the
pipeline talks to it only through ``label-studio-sdk``. Everything is bound to 127.0.0.1.

Layout inside the project (ignored by git)::

    .studio/data/         LABEL_STUDIO_BASE_DATA_DIR: the SQLite database, media, exports
    .studio/server.log    the server's output
    .studio/server.json   {"pid", "port", "url", ...} of the running server (no secrets)

Credentials come from the environment or the ignored ``.env`` (:func:`pipeline.env.setting`):
``LABEL_STUDIO_USERNAME`` (an email), ``LABEL_STUDIO_PASSWORD``, ``LABEL_STUDIO_API_KEY`` (a
legacy user token, 6-40 characters). :func:`start` generates the missing ones and appends them to
``.env`` (mode 0600). Label Studio applies them only when it creates the user, on the first start
with an empty data folder: later changes are ignored by the server.

``whp studio install|start|stop|status`` (or ``python -m pipeline.cli studio ...``) drives it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from pipeline.env import ENV_FILE, setting
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from label_studio_sdk import LabelStudio

LABEL_STUDIO_VERSION = "1.23.2"
STUDIO_DIR = ".studio"
DEFAULT_PORT = 8080
HOST = "127.0.0.1"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 15.0
INSTALLED_STAMP = ".whp-installed"

USERNAME_KEY = "LABEL_STUDIO_USERNAME"
PASSWORD_KEY = "LABEL_STUDIO_PASSWORD"
API_KEY_KEY = "LABEL_STUDIO_API_KEY"
URL_KEY = "LABEL_STUDIO_URL"
VENV_KEY = "WHP_STUDIO_VENV"

console = Console(stderr=True)
# Popen objects of servers this process started: kept referenced so that garbage collection
# neither warns about a running child nor forgets to reap one that exited.
_children: dict[int, subprocess.Popen] = {}


class StudioError(PipelineError):
    """The Label Studio server cannot be installed, started, reached, or refuses the API key."""


@dataclass(frozen=True)
class Credentials:
    """The reviewer account Label Studio creates on its first start, and its API token."""

    username: str
    password: str
    api_key: str

    def __repr__(self) -> str:  # never show the secrets, even in a traceback
        return f"Credentials(username={self.username!r}, password={mask(self.password)!r}, api_key={mask(self.api_key)!r})"


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


def mask(secret: str | None) -> str:
    """``secret`` with all but its last 4 characters hidden (``'********a1b2'``)."""
    if not secret:
        return "(not set)"
    return "*" * 8 + secret[-4:] if len(secret) > 4 else "*" * 8


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
                raise StudioError(f"{title} failed (exit {process.returncode}); see {log}:\n{_tail(log)}")
    stamp.write_text(f"label-studio=={LABEL_STUDIO_VERSION}\n", encoding="utf-8")
    if not quiet:
        console.print(f"[green]Label Studio {LABEL_STUDIO_VERSION} installed[/] in "
                      f"{time.perf_counter() - started:.0f}s", highlight=False)
    return venv


# --- credentials -------------------------------------------------------------------------------


def credentials(root: Path | str = ".") -> Credentials | None:
    """The configured credentials (environment, else ``.env``), or None if any is missing."""
    values = [setting(key, root) for key in (USERNAME_KEY, PASSWORD_KEY, API_KEY_KEY)]
    if not all(values):
        return None
    return Credentials(*values)  # type: ignore[arg-type]


def ensure_credentials(root: Path | str = ".") -> Credentials:
    """The configured credentials; the missing ones are generated and appended to ``<root>/.env``.

    Generating is refused when the server's data folder already exists: Label Studio keeps the
    account it created on its first start, so new credentials would not be accepted.
    """
    root = Path(root).resolve()
    values = {key: setting(key, root) for key in (USERNAME_KEY, PASSWORD_KEY, API_KEY_KEY)}
    token = values[API_KEY_KEY]
    if token and not 6 <= len(token) <= 40:
        raise StudioError(f"{API_KEY_KEY} must be 6-40 characters (Label Studio's legacy token), not {len(token)}")
    missing = [key for key, value in values.items() if not value]
    if not missing:
        return Credentials(values[USERNAME_KEY], values[PASSWORD_KEY], values[API_KEY_KEY])  # type: ignore[arg-type]
    if (data_dir(root) / "label_studio.sqlite3").exists():
        raise StudioError(
            f"{', '.join(missing)} not set (environment or {root / ENV_FILE}), but {data_dir(root)} already holds "
            "a Label Studio account created with other credentials. Restore them in .env, or move that folder "
            "away to start with an empty server (its projects and annotations stay in the moved folder)."
        )
    _refuse_tracked_env_file(root)
    generated = {
        USERNAME_KEY: "reviewer@whp.local",
        PASSWORD_KEY: secrets.token_hex(16),
        API_KEY_KEY: secrets.token_hex(20),  # 40 characters: the longest legacy token allowed
    }
    new = {key: generated[key] for key in missing}
    _append_env(root / ENV_FILE, new)
    values.update(new)
    console.print(f"generated {', '.join(missing)} into {root / ENV_FILE} (mode 0600)", highlight=False)
    return Credentials(values[USERNAME_KEY], values[PASSWORD_KEY], values[API_KEY_KEY])  # type: ignore[arg-type]


def _refuse_tracked_env_file(root: Path) -> None:
    """Secrets go only to a ``.env`` that git ignores (outside a git repository: any ``.env``)."""
    try:
        result = subprocess.run(["git", "-C", str(root), "check-ignore", "-q", ENV_FILE],
                                check=False, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return
    if result.returncode == 1:  # 0: ignored; 128: not a git repository
        raise StudioError(f"{root / ENV_FILE} is not ignored by git: add `.env` to .gitignore before secrets go there")


def _append_env(path: Path, values: dict[str, str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)
        if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            out.write("\n")
        out.write("# Label Studio reviewer account, generated by `whp studio start`\n")
        for key, value in values.items():
            out.write(f"{key}={value}\n")


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

    creds = creds or ensure_credentials(root)
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
    _children[process.pid] = process
    url = f"http://{HOST}:{chosen}"
    _write_record(root, {"pid": process.pid, "port": chosen, "url": url, "data_dir": str(data_dir(root)),
                         "log": str(log), "venv": str(venv), "username": creds.username,
                         "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    try:
        _wait_healthy(root, process.pid, chosen, timeout)
    except BaseException:
        _terminate(process.pid)
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
            if not _alive(pid):
                raise StudioError(f"Label Studio exited while starting; see {log}:\n{_tail(log)}")
            moved = _announced_port(log)
            if moved is not None and moved != port:
                raise StudioError(f"Label Studio took port {moved} instead of {port} (taken meanwhile?); "
                                  "run `whp studio start` again")
            if _http_status(f"{url}/health", timeout=2.0) == 200:
                break
            if elapsed > timeout:
                raise StudioError(f"Label Studio did not answer {url}/health within {timeout:.0f}s; see {log}:\n"
                                  f"{_tail(log)}")
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
    if record is None or not _is_our_server(record["pid"]):
        return False
    _terminate(record["pid"])
    console.print(f"Label Studio stopped (pid {record['pid']}, {record['url']})", highlight=False)
    return True


def status(root: Path | str = ".", *, api_key: str | None = None) -> ServerStatus:
    """Whether the project's managed server runs, answers ``/health``, and accepts the API key.

    ``api_key`` defaults to ``LABEL_STUDIO_API_KEY`` (environment / ``.env``).
    """
    record = _read_record(root)
    running = record is not None and _is_our_server(record["pid"])
    url = record["url"] if running else None
    healthy = running and _http_status(f"{url}/health", timeout=3.0) == 200
    api_key = api_key or setting(API_KEY_KEY, root)
    token_accepted = None
    if healthy and api_key:
        token_accepted = _http_status(f"{url}/api/projects", token=api_key, timeout=10.0) == 200
    return ServerStatus(running=running, url=url, pid=record["pid"] if running else None, healthy=healthy,
                        token_accepted=token_accepted, data_dir=data_dir(root), log=log_path(root))


def resolve_url(root: Path | str = ".") -> str | None:
    """The server the pipeline uses: ``LABEL_STUDIO_URL`` if set, else the running managed server."""
    configured = setting(URL_KEY, root)
    if configured:
        return configured.rstrip("/")
    record = _read_record(root)
    if record is not None and _is_our_server(record["pid"]):
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
    from label_studio_sdk import LabelStudio
    from label_studio_sdk.core.api_error import ApiError

    url = (url or resolve_url(root) or "").rstrip("/")
    if not url:
        raise StudioError(f"no Label Studio server: run `whp studio start`, or set {URL_KEY} (environment or .env)")
    api_key = api_key or setting(API_KEY_KEY, root)
    if not api_key:
        raise StudioError(f"{API_KEY_KEY} is not set (environment or .env) for {url}: run `whp studio start` "
                          "to generate one for the local server, or copy the token of the server's account")
    health = _http_status(f"{url}/health", timeout=5.0)
    if health is None:
        raise StudioError(f"Label Studio at {url} is unreachable: run `whp studio start`, or fix {URL_KEY}")
    if health != 200:
        raise StudioError(f"Label Studio at {url} answered /health with HTTP {health}: see its log "
                          f"({STUDIO_DIR}/server.log for the local server)")
    refused = (f"Label Studio at {url} refused the API key: fix {API_KEY_KEY} (environment or .env) - the local "
               f"server keeps the token it was first started with")
    try:
        # Both arguments explicitly: the SDK's defaults read the environment at import time.
        sdk = LabelStudio(base_url=url, api_key=api_key, timeout=timeout)
        sdk.users.whoami()
    except ApiError as exc:
        if exc.status_code in (401, 403):
            raise StudioError(f"{refused} (HTTP {exc.status_code})") from None
        raise StudioError(f"Label Studio at {url} answered HTTP {exc.status_code} to the API key check (whoami)") from None
    except Exception as exc:  # noqa: BLE001 - httpx transport errors: the server went away
        raise StudioError(f"Label Studio at {url} is unreachable ({type(exc).__name__}): run `whp studio start`, "
                          f"or fix {URL_KEY}") from None
    return sdk


# --- internals ---------------------------------------------------------------------------------


def free_port(port: int, *, host: str = HOST, tries: int = 100) -> int:
    """``port`` if nothing listens on ``host:port``, else the next free one (else any free port)."""
    for candidate in range(port, min(port + tries, 65536)):
        if _port_free(candidate, host):
            return candidate
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _port_free(port: int, host: str) -> bool:
    # Label Studio itself probes with a connect; a bind also catches a socket bound but not listening.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        if probe.connect_ex((host, port)) == 0:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the server binds: connections of a stopped server in TIME_WAIT do not make it busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _configured_port(root: Path) -> int:
    configured = setting(URL_KEY, root)
    if configured:
        parts = urllib.parse.urlsplit(configured)
        if parts.hostname in ("127.0.0.1", "localhost") and parts.port:
            return parts.port
    return DEFAULT_PORT


def _http_status(url: str, *, token: str | None = None, timeout: float = 5.0) -> int | None:
    """The HTTP status of a GET, or None if nothing answers. Loopback requests bypass proxies."""
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token}"} if token else {})
    host = urllib.parse.urlsplit(url).hostname
    opener = (urllib.request.build_opener(urllib.request.ProxyHandler({}))
              if host in ("127.0.0.1", "localhost", "::1") else urllib.request.build_opener())
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError, ValueError):
        return None


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


def _alive(pid: int) -> bool:
    try:
        # Reaps our own exited child (a zombie still answers kill(pid, 0)).
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            _children.pop(pid, None)
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_server(pid: int) -> bool:
    """``pid`` is alive and (where /proc tells) a Label Studio process, not a reused pid."""
    if not _alive(pid):
        return False
    if not Path("/proc/self").exists():
        return True
    try:
        return b"label-studio" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _terminate(pid: int) -> None:
    """SIGTERM to the server's process group, SIGKILL after STOP_TIMEOUT_S."""
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if not _alive(pid):
            break
    _children.pop(pid, None)


_ANNOUNCED = re.compile(rb"Starting development server at https?://[^:/\s]+:(\d+)/")


def _announced_port(log: Path) -> int | None:
    """The port Django's runserver announced in the latest start section of the log."""
    try:
        text = log.read_bytes()
    except OSError:
        return None
    text = text[text.rfind(b"=== whp studio start"):]
    found = _ANNOUNCED.findall(text)
    return int(found[-1]) if found else None


def _tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("  " + line for line in text[-lines:])
