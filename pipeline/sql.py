"""SQL over every dataset: a read-only, in-memory DuckDB with one view per dataset.

Views are created for each folder under ``data/`` holding Parquet parts, so a dataset is
queryable as soon as its stage has run. The connection cannot write files: filesystem access
is limited to ``data/``, the configuration is locked, and statements that write or attach
(COPY, EXPORT, ATTACH, INSTALL/LOAD) are refused before they run.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from pipeline.errors import PipelineError
from pipeline.store import DATA_DIR, dataset_dir, list_datasets

_ALLOWED = {
    duckdb.StatementType.SELECT,
    duckdb.StatementType.EXPLAIN,
    duckdb.StatementType.PRAGMA,
    duckdb.StatementType.CREATE,  # temporary views/macros live in the in-memory database only
}


class QueryError(PipelineError):
    """The SQL is invalid or not allowed on the read-only connection."""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def connect(root: Path | str = ".") -> duckdb.DuckDBPyConnection:
    """An in-memory connection with a view per dataset (``passages``, ``documents``, ...)."""
    root = Path(root).resolve()
    con = duckdb.connect(":memory:")
    for name in list_datasets(root):
        pattern = (dataset_dir(name, root) / "part-*.parquet").as_posix()
        con.execute(f"CREATE VIEW {_identifier(name)} AS SELECT * FROM read_parquet({_literal(pattern)})")
    con.execute(f"SET allowed_directories = [{_literal((root / DATA_DIR).as_posix() + '/')}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def run_query(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple]]:
    """Run ``sql`` (one or more statements); return the columns and rows of the last one."""
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
                "(use plain duckdb with read_parquet to export; see README)"
            )
    result = None
    try:
        for statement in statements:
            result = con.execute(statement.query)
        columns = [d[0] for d in result.description] if result.description else []
        return columns, result.fetchall() if columns else []
    except duckdb.Error as exc:
        raise QueryError(str(exc)) from None
