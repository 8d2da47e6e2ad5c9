"""The local server's process: free ports, liveness, stopping it, reading its log."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

HOST = "127.0.0.1"
STOP_TIMEOUT_S = 15.0

# Popen objects of servers this process started: kept referenced so that garbage collection
# neither warns about a running child nor forgets to reap one that exited.
_children: dict[int, subprocess.Popen] = {}


def remember(process: subprocess.Popen) -> None:
    """Keep a started server's Popen object (reaped by :func:`alive`, dropped by :func:`terminate`)."""
    _children[process.pid] = process


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


def alive(pid: int) -> bool:
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


def is_our_server(pid: int) -> bool:
    """``pid`` is alive and (where /proc tells) a Label Studio process, not a reused pid."""
    if not alive(pid):
        return False
    if not Path("/proc/self").exists():
        return True
    try:
        return b"label-studio" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def terminate(pid: int) -> None:
    """SIGTERM to the server's process group, SIGKILL after STOP_TIMEOUT_S."""
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.1)
        if not alive(pid):
            break
    _children.pop(pid, None)


_ANNOUNCED = re.compile(rb"Starting development server at https?://[^:/\s]+:(\d+)/")


def announced_port(log: Path) -> int | None:
    """The port Django's runserver announced in the latest start section of the log."""
    try:
        text = log.read_bytes()
    except OSError:
        return None
    text = text[text.rfind(b"=== whp studio start"):]
    found = _ANNOUNCED.findall(text)
    return int(found[-1]) if found else None


def tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("  " + line for line in text[-lines:])
