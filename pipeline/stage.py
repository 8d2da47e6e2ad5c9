"""What every stage's ``__main__`` shares: params, the transaction its writes join, errors.

:func:`run_stage` loads params, opens the stage's :class:`Transaction` and runs the stage: every
output the store writes (:mod:`pipeline.store`: datasets, manifests, model folders, metrics and
reports) joins it, and nothing is published until the stage returns. Then all of it is published
together; a :class:`~pipeline.errors.PipelineError` (exit 1, its message, no traceback), a bug, or
a kill leaves every previous output as it was. dvc.yaml marks the outputs ``persist: true`` so
that DVC does not delete them before the run either (docs/datasets.md, "Failures, transactions
and recovery").

Crash safety, step by step: a write never touches its target; it stages a new version next to
it (``.NAME.txn-new1-<pid>-<hex>``), fsynced. At commit, a journal listing every rename is
written and fsynced (the commit point), the staged versions are renamed over their targets (the
old ones kept as ``.NAME.txn-old-...`` backups until all are in place), and backups and journal
are removed. :func:`recover`, run before every stage and every read, rolls a dead transaction
forward when its journal exists and back otherwise.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from pipeline.errors import PipelineError
from pipeline.params import Params, load_params

console = Console(stderr=True)
TRANSACTIONS_DIR = Path("data/.transactions")
"""Records and journals of open transactions, relative to the project root."""


def run_stage(name: str, run: Callable[[Params], dict[str, Any]]) -> None:
    """Run a stage in its transaction; a :class:`PipelineError` exits 1 with its message, a bug
    keeps its traceback. Either way nothing the stage wrote is published."""
    started = time.perf_counter()
    try:
        params = load_params()
        if os.environ.get("RANK", "0") == "0":  # under `accelerate launch`, the main process publishes
            with stage_transaction(".", stage=name, outputs=declared_outputs(name)):
                summary = run(params)
        else:
            summary = run(params)
    except PipelineError as exc:
        console.print(f"[bold red]{name}: error[/]\n{exc}", highlight=False)
        sys.exit(1)
    figures = ", ".join(f"{key}={value}" for key, value in summary.items())
    console.print(f"[green]{name}[/] done in {time.perf_counter() - started:.1f}s: {figures}", highlight=False)


def declared_outputs(stage: str, root: Path | str = ".") -> tuple[Path, ...]:
    """The outputs (``outs``, ``metrics``, ``plots``) dvc.yaml declares for ``stage``; a
    ``foreach`` stage is named ``stage@item``. Empty without a dvc.yaml or such a stage."""
    try:
        spec = yaml.safe_load((Path(root) / "dvc.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return ()  # not run by DVC: nothing to hold the stage to
    name, _, item = stage.partition("@")
    entry = (spec.get("stages") or {}).get(name)
    if not isinstance(entry, dict) or ("foreach" in entry) != bool(item):
        return ()
    entry = entry.get("do", entry)
    found = []
    for key in ("outs", "metrics", "plots"):
        for out in entry.get(key) or []:
            path = out if isinstance(out, str) else next(iter(out))
            found.append(Path(path.replace("${item}", item)))
    return tuple(found)


# --------------------------------------------------------------------------- crash safety

FAULT_AT = "WHP_FAULT_AT"
"""Environment variable: kill the process (SIGKILL) at this write step (tests/test_faults.py)."""
FAULT_TRACE = "WHP_FAULT_TRACE"
"""Environment variable: a file that gets one line ``<step>\\t<stage>\\t<label>`` per write step."""
_fault_steps = 0


def fault_point(label: str) -> None:
    """Number one write step; with ``WHP_FAULT_AT=<n>`` the process dies at step ``n`` as it would
    in a power cut or at the hands of the OOM killer (no cleanup, no ``finally``)."""
    global _fault_steps
    _fault_steps += 1
    trace = os.environ.get(FAULT_TRACE)
    if trace:
        with open(trace, "a", encoding="utf-8") as handle:
            handle.write(f"{_fault_steps}\t{_active.stage if _active else '-'}\t{label}\n")
    if os.environ.get(FAULT_AT) == str(_fault_steps):
        os.kill(os.getpid(), signal.SIGKILL)


def fsync(path: Path) -> None:
    """Flush a file's bytes, or a folder's entries, to the disk: a rename is durable only then."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    for directory, _, files in os.walk(folder, topdown=False):
        for name in files:
            fsync(Path(directory) / name)
        fsync(Path(directory))


def remove(path: Path) -> None:
    """Remove a file or a folder tree; a missing one is fine (recovery may run twice)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def token() -> str:
    """``<pid>-<random>``: unique per writer, and says which process a temporary belongs to."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


class OutputsNotWrittenError(PipelineError):
    """A stage finished without writing an output dvc.yaml declares for it."""


class Transaction:
    """Every output of one stage (or of one stand-alone write), published together or not at all.

    ``begin()``, then the store's writers stage new versions (:meth:`staged_path`, :meth:`add`),
    then ``commit()`` or ``rollback()``. The transaction's records live in
    ``data/.transactions/<id>.lock`` (held with ``flock`` while the owner lives: a lock that can
    be taken belongs to a dead process) and, from the commit point on, ``<id>.commit``: the
    journal of every rename. :func:`recover` rolls a dead transaction forward when its journal
    exists, back otherwise.

    ``outputs`` (paths relative to ``root``, from dvc.yaml) are checked at commit: each must
    have been written, through the store or, for a file, directly (e.g. a loss log). A file
    output is copied aside at ``begin()`` so that a rollback restores it even when the stage
    wrote it in place.
    """

    def __init__(self, root: Path | str = ".", *, stage: str, outputs: tuple[Path | str, ...] = ()) -> None:
        self.root = Path(os.path.abspath(root))
        self.stage = stage
        self.id = token()
        self.outputs = [Path(out) for out in outputs]
        self._moves: dict[Path, Path] = {}  # target -> staged version, both absolute
        self._before: dict[Path, Any] = {}  # declared output -> "dir" or its file signature
        self._records: list[dict[str, Any]] = []
        self._snapshots: list[str] = []
        self._lock: int | None = None
        self._count = 0

    @property
    def _folder(self) -> Path:
        return self.root / TRANSACTIONS_DIR

    def _rel(self, path: Path) -> str:
        return Path(os.path.relpath(os.path.abspath(path), self.root)).as_posix()

    def _record(self, **entry: Any) -> None:
        assert self._lock is not None, "transaction not begun"
        self._records.append(entry)
        os.write(self._lock, (json.dumps(entry) + "\n").encode())

    def begin(self) -> "Transaction":
        recover(self.root, folders={self.root / out.parent for out in self.outputs}, names={out.name for out in self.outputs})
        for attempt in range(3):  # a concurrent recover() may remove the empty folder meanwhile
            self._folder.mkdir(parents=True, exist_ok=True)
            hidden = self._folder / f".{self.id}.lock"
            try:
                fd = os.open(hidden, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_APPEND, 0o644)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        # Locked before it gets its visible name: recover() never sees an unlocked live record.
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.replace(hidden, self._folder / f"{self.id}.lock")
        self._lock = fd
        self._record(stage=self.stage, pid=os.getpid())
        for out in self.outputs:
            self._snapshot(self.root / out)
        return self

    def _snapshot(self, target: Path) -> None:
        if target.is_dir():
            self._before[target] = "dir"  # folders are only ever replaced whole, by the store
            return
        if not target.exists():
            self._before[target] = None
            self._record(absent=self._rel(target))
            return
        copy = target.with_name(f".{target.name}.txn-snap-{self.id}")
        self._record(snapshot=self._rel(target), copy=self._rel(copy))
        shutil.copy2(target, copy)
        fsync(copy)
        self._record(snapshot_done=self._rel(target))
        self._snapshots.append(self._rel(copy))
        self._before[target] = _signature(target)

    def staged_path(self, target: Path, *, source: Path | None = None) -> Path:
        """A fresh hidden name next to ``target`` for its new version, recorded before it is
        created (with ``source``, a caller's temporary that will be renamed there)."""
        self._count += 1
        path = Path(os.path.abspath(target)).with_name(f".{Path(target).name}.txn-new{self._count}-{self.id}")
        if source is not None:
            self._record(source=self._rel(source))
        self._record(staged=self._rel(path))
        return path

    def add(self, staged: Path, target: Path) -> None:
        """Publish ``staged`` (complete and fsynced) as ``target`` at commit; the last one added wins."""
        target = Path(os.path.abspath(target))
        earlier = self._moves.pop(target, None)
        if earlier is not None and earlier != staged:
            remove(earlier)
        self._moves[target] = Path(os.path.abspath(staged))

    def visible(self, target: Path) -> Path:
        """Where ``target`` is read from inside this transaction: its staged version, if any."""
        return self._moves.get(Path(os.path.abspath(target)), target)

    def _check_outputs(self) -> None:
        missing = []
        for out in self.outputs:
            target = self.root / out
            if target in self._moves:
                continue
            before = self._before.get(target)
            if before != "dir" and target.is_file() and _signature(target) != before:
                continue  # written in place by the stage; its snapshot undoes that on rollback
            missing.append(out.as_posix())
        if missing:
            raise OutputsNotWrittenError(
                f"stage {self.stage!r} finished without writing {', '.join(missing)} (declared in dvc.yaml); "
                "nothing was published: the previous outputs are kept"
            )

    def commit(self) -> None:
        """Publish every staged version; after the journal is on disk the outcome is decided:
        an error later leaves it for :func:`recover` to finish."""
        try:
            self._check_outputs()
            if not self._moves:  # nothing staged: the stage wrote only in place (or nothing)
                _discard(self.root, {"moves": [], "discard": self._snapshots})
                self._end()
                return
            journal = {
                "stage": self.stage,
                "moves": [
                    {"staged": self._rel(staged), "target": self._rel(target),
                     "backup": self._rel(target.with_name(f".{target.name}.txn-old-{self.id}"))}
                    for target, staged in self._moves.items()
                ],
                "discard": self._snapshots,
            }
            path = self._folder / f"{self.id}.commit"
            hidden = path.with_name(f".{path.name}")
            fault_point(f"journal {self.stage}")
            with open(hidden, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(journal, indent=1) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            fault_point(f"commit {self.stage}")
            os.replace(hidden, path)  # the commit point
            fsync(self._folder)
        except BaseException:
            self.rollback()
            raise
        _roll_forward(self.root, journal)
        _discard(self.root, journal)
        fault_point(f"end {self.stage}")
        path.unlink()
        self._end()

    def rollback(self) -> None:
        """Remove every staged version and restore the file outputs written in place."""
        if self._lock is None:
            return
        _roll_back(self.root, self._records)
        self._end()

    def _end(self) -> None:
        assert self._lock is not None
        (self._folder / f"{self.id}.lock").unlink(missing_ok=True)
        os.close(self._lock)
        self._lock = None
        try:
            self._folder.rmdir()
        except OSError:
            pass  # other transactions' records are there


_active: Transaction | None = None


@contextmanager
def stage_transaction(root: Path | str = ".", *, stage: str, outputs: tuple[Path | str, ...] = ()) -> Iterator[Transaction]:
    """The transaction every write of a stage under ``root`` joins: committed when the block
    ends cleanly, rolled back when it raises (or exits: ``SystemExit``, ``KeyboardInterrupt``)."""
    global _active
    if _active is not None:
        raise RuntimeError(f"stage {stage!r}: a transaction for {_active.stage!r} is already open")
    txn = Transaction(root, stage=stage, outputs=outputs).begin()
    _active = txn
    try:
        yield txn
    except BaseException:
        _active = None
        txn.rollback()
        raise
    _active = None
    txn.commit()


def joining(target: Path) -> Transaction | None:
    """The open stage transaction if ``target`` is one of its outputs: under its root, and not a
    hidden scratch path (resume state, checkpoints), which must be written at once."""
    if _active is None:
        return None
    parts = Path(os.path.relpath(os.path.abspath(target), _active.root)).parts
    if not parts or parts[0] == ".." or any(part.startswith(".") for part in parts):
        return None
    return _active


def visible(path: Path) -> Path:
    return _active.visible(path) if _active is not None else path


def _roll_forward(root: Path, journal: dict[str, Any]) -> None:
    """Rename every staged version over its target, keeping the old one as a backup; safe to
    repeat after a crash at any point (a move already made is skipped)."""
    for move in journal["moves"]:
        staged, target, backup = (root / move[key] for key in ("staged", "target", "backup"))
        if not os.path.lexists(staged):
            continue
        if os.path.lexists(target):
            remove(backup)
            fault_point(f"backup {move['target']}")
            os.rename(target, backup)
        fault_point(f"publish {move['target']}")
        os.rename(staged, target)
        fsync(target.parent)


def _discard(root: Path, journal: dict[str, Any]) -> None:
    for path in [move["backup"] for move in journal["moves"]] + journal["discard"]:
        fault_point(f"discard {path}")
        remove(root / path)


def _roll_back(root: Path, records: list[dict[str, Any]]) -> None:
    """Undo an uncommitted transaction from its records, newest first."""
    snapshots = {r["snapshot_done"] for r in records if "snapshot_done" in r}
    for record in reversed(records):
        if "staged" in record or "source" in record:
            remove(root / record.get("staged", record.get("source")))
        elif "copy" in record:
            copy = root / record["copy"]
            if record["snapshot"] in snapshots and copy.exists():
                os.replace(copy, root / record["snapshot"])
            else:
                remove(copy)
        elif "absent" in record:
            remove(root / record["absent"])  # created in place by the stage: half written


def _read_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # torn by the kill: the path it would name was not created yet
    return records


def _recover_transaction(root: Path, lock: Path) -> None:
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its owner is alive (or recovering it)
        if _signature(lock) is None or os.fstat(fd).st_ino != lock.stat().st_ino:
            return  # finished between our open and our lock
        journal = lock.with_suffix(".commit")
        if journal.exists():
            entries = json.loads(journal.read_text(encoding="utf-8"))
            _roll_forward(root, entries)
            _discard(root, entries)
            journal.unlink()
        else:
            _roll_back(root, _read_records(lock))
        journal.with_name(f".{journal.name}").unlink(missing_ok=True)
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


# .NAME.KIND-TAG: what writers leave next to a target NAME while they work.
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>txn-new\d+|txn-old|txn-snap|tmp|bak|old)(?:-(?P<tag>.*))?")


def sweep(folder: Path, *, root: Path | None, names: set[str] | None = None) -> None:
    """Remove what dead writers left in ``folder``: temporaries go, a backup whose target is
    missing is renamed back (a crash between the two renames of a swap), other backups go.

    Names tagged ``<pid>-...`` are left alone while that process lives. With ``names`` (a stage
    sweeping the folders of its own outputs, under DVC's lock) only those targets are looked
    at, untagged temporaries included (``mkdtemp`` folders, a fixed ``.NAME.tmp``). Staged
    versions and backups of a transaction are only touched knowing the ``root`` whose records
    govern them (orphans: their records are gone)."""
    try:
        entries = list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return
    for path in entries:
        found = _LEFTOVER.fullmatch(path.name)
        if not found or (names is not None and found["name"] not in names):
            continue
        tag, kind = found["tag"] or "", found["kind"]
        pid = re.fullmatch(r"(\d+)(?:-[0-9a-f]+)?", tag)
        if pid is None and names is None:
            continue
        if pid is not None and _alive(int(pid.group(1))):
            continue
        if kind.startswith("txn-") and (root is None or any((root / TRANSACTIONS_DIR).glob(f"{tag}.*"))):
            continue  # its transaction's records govern it: _recover_transaction
        target = folder / found["name"]
        try:
            if kind in {"txn-old", "bak", "old"} and not os.path.lexists(target):
                os.rename(path, target)  # the swap was cut between its renames: the old version comes back
            else:
                remove(path)
        except FileNotFoundError:
            pass  # another process recovered it first


def recover(root: Path | str = ".", *, folders: Iterable[Path] = (), names: set[str] | None = None) -> None:
    """Finish or undo what killed writers left under ``root``.

    A transaction whose journal is on disk is rolled forward (every target gets its new
    version), one without is rolled back (staged versions removed, file outputs written in place
    restored). Then ``folders`` are swept (:func:`sweep`): stale temporaries removed, a target
    a crash left missing restored from its backup. Transactions and temporaries whose owner
    lives are left alone, so a reader can run this while a stage works.
    """
    root = Path(os.path.abspath(root))
    journals = root / TRANSACTIONS_DIR
    if journals.is_dir():
        for lock in sorted(journals.glob("*.lock")):
            _recover_transaction(root, lock)
        for stray in journals.glob(".*"):  # a record or journal cut before its rename
            pid = re.match(r"\.(\d+)-", stray.name)
            if pid is None or not _alive(int(pid.group(1))):
                stray.unlink(missing_ok=True)
        try:
            journals.rmdir()
        except OSError:
            pass
    for folder in folders:
        sweep(folder, root=root, names=names)


def recover_for_reading(root: Path | str, folders: Iterable[Path]) -> None:
    """:func:`recover` before a read, sweeping ``folders``; skipped inside a stage under
    ``root`` (its transaction's ``begin`` recovered), harmless on a read-only copy."""
    if _active is not None and _active.root == Path(os.path.abspath(root)):
        return
    try:
        recover(root, folders=folders)
    except PermissionError:
        pass  # nothing a reader could repair there
