"""A warm parent for short-lived processes that tests kill: imports the heavy modules once, then
forks one child per run, so a run costs its own work and not ``import torch`` again.

Usage::

    with Zygote(["pipeline.store"]) as zygote:
        code = zygote.run(module="pipeline.ingest", cwd=project, env={"WHP_FAULT_AT": "7"})
        code = zygote.run(call="tests.test_store:publish_generation", args=[str(root), "v2"], cwd=root)

``run`` returns the child's exit status as :func:`os.waitstatus_to_exitcode` gives it: ``0``,
``1`` (a reported error), or ``-9`` when the child was killed with SIGKILL (the store's
``WHP_FAULT_AT`` hook). The child is a real process: a kill leaves what a kill leaves, with no
cleanup handler run. Its stdout and stderr go to ``log`` (appended), for the assertion messages.

The server itself never runs the code it preloads, so it holds no threads when it forks. It
learns: what a child imported lazily (transformers' model classes, say) it imports after that
child ends, so the next child starts warm.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class Zygote:
    """``code``: where ``pipeline`` is imported from (a test project's own copy, so that what runs
    is what that project's git commit holds); this repository by default."""

    def __init__(self, preload: list[str], *, code: Path = REPO) -> None:
        self.preload = preload
        self.code = code
        self._server: subprocess.Popen | None = None

    def __enter__(self) -> "Zygote":
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.code), str(REPO)])}
        self._server = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *self.preload], cwd=self.code, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        return self

    def __exit__(self, *exc) -> None:
        assert self._server is not None
        self._server.stdin.close()
        self._server.wait(timeout=60)

    def run(
        self, *, cwd: Path, module: str | None = None, call: str | None = None, args: list[str] = (),
        env: dict[str, str] | None = None, log: Path | None = None, timeout: float = 600,
        checkpoints_are_steps: bool = False,
    ) -> int:
        """Fork a child that runs ``python -m module args`` or ``call(*args)`` in ``cwd``; a child
        still running after ``timeout`` seconds is killed and reported as an error.

        ``checkpoints_are_steps``: each ``torch.save`` (a training checkpoint) is a write step of
        the store's fault hook too, so ``WHP_FAULT_AT`` can stop a training stage mid-training."""
        assert self._server is not None and (module is None) != (call is None)
        request = {"cwd": str(cwd), "module": module, "call": call, "args": list(args), "env": env or {},
                   "log": str(log or os.devnull), "timeout": timeout, "checkpoints": checkpoints_are_steps}
        self._server.stdin.write(json.dumps(request) + "\n")
        self._server.stdin.flush()
        answer = self._server.stdout.readline()
        if not answer:
            raise RuntimeError(f"the zygote died (exit {self._server.poll()})")
        status = json.loads(answer)["status"]
        if status == "timeout":
            raise TimeoutError(f"{module or call} in {cwd}: still running after {timeout} s (log: {log})")
        return status


def _child(request: dict) -> int:
    os.chdir(request["cwd"])
    os.environ.update(request["env"])
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    if request["checkpoints"]:
        _count_checkpoints()
    try:
        if request["module"]:
            sys.argv = [request["module"], *request["args"]]
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        else:
            module, _, name = request["call"].partition(":")
            getattr(importlib.import_module(module), name)(*request["args"])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def _count_checkpoints() -> None:
    import torch

    from pipeline.stage import fault_point

    save = torch.save

    def counted(obj, f, *args, **kwargs):
        fault_point("checkpoint (torch.save)")
        return save(obj, f, *args, **kwargs)

    torch.save = counted


def main(preload: list[str]) -> None:
    import warnings

    # runpy warns that a preloaded module is run again as __main__: that is the point here.
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")
    # Answers go through a private copy of stdout: whatever a module prints goes to stderr.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for name in preload:
        importlib.import_module(name)
    learned = Path(f"/tmp/zygote-{os.getpid()}-modules.txt")
    for line in sys.stdin:
        request = json.loads(line)
        before = set(sys.modules)
        pid = os.fork()
        if pid == 0:
            code = _child(request)
            sys.stdout.flush()
            sys.stderr.flush()
            # What the run imported lazily (transformers' model classes, pandera backends, ...):
            # the server imports it too, so the next child starts with it.
            learned.write_text("\n".join(sorted(set(sys.modules) - before)))
            os._exit(code)
        deadline = time.monotonic() + request["timeout"]
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                answer = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                answer = "timeout"
                break
            time.sleep(0.02)
        _learn(learned)
        answers.write(json.dumps({"status": answer}) + "\n")
        answers.flush()


def _learn(listing: Path) -> None:
    try:
        names = listing.read_text().split()
    except FileNotFoundError:
        return  # the child was killed before it could say
    listing.unlink()
    for name in names:
        if name.startswith(("__main__", "pipeline", "tests")) or name in sys.modules:
            continue  # the code under test runs fresh in every child
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - a module that only imports in context: the child will
            pass


if __name__ == "__main__":
    main(sys.argv[1:])
