"""SQL over every dataset: a read-only, in-memory DuckDB with one view per dataset.

Views are created one by one, for each folder under ``data/`` holding Parquet parts, so a dataset
is queryable as soon as its stage has run, and a damaged one (a truncated part) does not take the
others down: a query that reads it fails with a message naming the dataset and the command that
restores it (``dvc checkout <stage>``). Results stream: :func:`run_query` hands rows over in
batches, never the whole result at once.

The connection reads nothing but the datasets' own folders: file access is limited to them
(not ``data/manifests``, not the transaction records, not ``.tmp/`` in the working folder,
which DuckDB allows by default as its spill folder: it spills to a private temporary folder
instead), the configuration is locked, and statements that write or attach (COPY, EXPORT,
ATTACH, INSTALL/LOAD) are refused before they run.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from pipeline.errors import PipelineError
from pipeline.store import dataset_dir, list_datasets, read_manifest

BATCH_ROWS = 10_000
_ALLOWED = {
    duckdb.StatementType.SELECT,
    duckdb.StatementType.EXPLAIN,
    duckdb.StatementType.PRAGMA,
    duckdb.StatementType.CREATE,  # temporary views/macros live in the in-memory database only
}


class QueryError(PipelineError):
    """The SQL is invalid or not allowed on the read-only connection, or a dataset is unreadable."""


@dataclass
class Database:
    """The read-only connection, and the datasets that got no view (name -> why, with the fix)."""

    connection: duckdb.DuckDBPyConnection
    root: Path
    unreadable: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        self.connection.close()


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _restore_hint(name: str, root: Path) -> str:
    try:
        stage = read_manifest(name, root)["stage"]
    except PipelineError:
        stage = None
    if stage is None:
        return f"restore data/{name} with `dvc checkout data/{name}` or rebuild it with `dvc repro`"
    return f"restore it with `dvc checkout {stage}` or rebuild it with `dvc repro {stage}`"


def _unreadable(name: str, root: Path, error: Exception) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (f"dataset {name!r} cannot be read: its files in data/{name} are damaged or incomplete ({first}); "
            f"{_restore_hint(name, root)}")


def connect(root: Path | str = ".") -> Database:
    """An in-memory connection with a view per readable dataset (``passages``, ``documents``, ...)."""
    root = Path(root).resolve()
    con = duckdb.connect(":memory:")
    database = Database(con, root)
    folders = []
    for name in list_datasets(root):
        folder = dataset_dir(name, root)
        pattern = (folder / "part-*.parquet").as_posix()
        try:  # binding reads every part's footer: a truncated part fails here, alone
            con.execute(f"CREATE VIEW {_identifier(name)} AS SELECT * FROM read_parquet({_literal(pattern)})")
        except duckdb.Error as exc:
            database.unreadable[name] = _unreadable(name, root, exc)
            continue
        folders.append(folder.as_posix() + "/")
    spill = tempfile.mkdtemp(prefix="whp-duckdb-")
    weakref.finalize(database, shutil.rmtree, spill, ignore_errors=True)
    con.execute(f"SET temp_directory = {_literal(spill)}")
    con.execute(f"SET allowed_directories = [{', '.join(_literal(f) for f in folders)}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return database


def _explain(database: Database, error: duckdb.Error) -> QueryError:
    """A QueryError for ``error``, naming a damaged dataset and its fix when one is the cause."""
    message = str(error)
    for name, why in database.unreadable.items():
        if re.search(rf"\b{re.escape(name)}\b", message):
            return QueryError(why)
    found = re.search(r"/data/([^/\s\"']+)/part-\d+\.parquet", message)
    if found and (database.root / "data" / found.group(1)).is_dir():
        return QueryError(_unreadable(found.group(1), database.root, error))
    return QueryError(message)


def run_query(
    database: Database, sql: str, *, batch_rows: int = BATCH_ROWS,
) -> tuple[list[str], Iterator[list[tuple]]]:
    """Run ``sql`` (one or more statements); return the last one's columns and its rows, as an
    iterator of batches of at most ``batch_rows`` rows fetched as they are consumed."""
    con = database.connection
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"invalid SQL: {exc}") from None
    if not statements:
        raise QueryError("no SQL statement given")
    for statement in statements:
        if statement.type not in _ALLOWED:
            raise QueryError(
                f"{statement.type.name} statements are not allowed: `whp query` is read-only "
                "(use plain duckdb with read_parquet to export; see docs/datasets.md)"
            )
    result = None
    try:
        for statement in statements:
            result = con.execute(statement.query)
    except duckdb.Error as exc:
        raise _explain(database, exc) from None
    columns = [d[0] for d in result.description] if result.description else []

    def batches() -> Iterator[list[tuple]]:
        while columns:
            try:
                rows = result.fetchmany(batch_rows)
            except duckdb.Error as exc:
                raise _explain(database, exc) from None
            if not rows:
                return
            yield rows

    return columns, batches()
