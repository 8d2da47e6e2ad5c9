"""The one writer and the one reader of every dataset.

A dataset ``NAME`` is a folder ``data/NAME/`` of Parquet parts (``part-00000.parquet``, ...)
plus a manifest ``data/manifests/NAME.json``. The manifest lives outside the folder so that
the folder's bytes (and so its DVC hash) depend on the data alone: a rerun that yields the same
rows leaves every downstream stage untouched, even though the manifest records a new code
revision.

Writes are validated and atomic:

* every part is validated against the dataset's pandera contract with ``lazy=True`` before
  it is written, and all failures are reported in one :class:`DatasetValidationError`;
* parts go to a hidden temporary folder that replaces ``data/NAME`` by rename only when the
  writer closes without error, so a crashed stage leaves the previous version (or nothing),
  never half a dataset;
* Parquet bytes are a pure function of the rows (fixed writer options, no timestamps).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.errors
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import DatasetNotFoundError, DatasetValidationError
from schemas import Contract
from schemas.rejects import RejectSchema, rejects_contract

DATA_DIR = "data"
MANIFEST_DIR = "manifests"
PART_PATTERN = "part-{:05d}.parquet"
_MAX_LISTED_FAILURES = 40


def dataset_dir(name: str, root: Path | str = ".") -> Path:
    return Path(root) / DATA_DIR / name


def manifest_path(name: str, root: Path | str = ".") -> Path:
    return Path(root) / DATA_DIR / MANIFEST_DIR / f"{name}.json"


def validate_frame(frame: pd.DataFrame, contract: Contract, *, where: str = "") -> pd.DataFrame:
    """Validate (and coerce) ``frame``; raise one error listing every failing value."""
    try:
        # A fresh RangeIndex: failures then name row positions, and duplicate labels from a
        # concat cannot break pandera's reporting.
        return contract.model.validate(frame.reset_index(drop=True), lazy=True)
    except pandera.errors.SchemaErrors as exc:
        raise DatasetValidationError(_describe_failures(contract, exc.failure_cases, where)) from None


def _describe_failures(contract: Contract, cases: pd.DataFrame, where: str) -> str:
    # pandera reports a failed frame-wide check once per column of the failing row: keep one
    # line per (check, row) so they cannot crowd out the column failures.
    frame_wide = (cases["schema_context"] == "DataFrameSchema") & cases["index"].notna()
    cases = pd.concat([
        cases[~frame_wide],
        cases[frame_wide].drop_duplicates(["check", "index"]).assign(column=None, failure_case="(row)"),
    ])
    head = f"dataset {contract.name!r}{where}: {len(cases)} schema violation(s) (contract v{contract.version})"
    lines = []
    for case in cases.head(_MAX_LISTED_FAILURES).itertuples(index=False):
        column = case.column if isinstance(case.column, str) else "(frame)"
        row = "" if pd.isna(case.index) else f" row {case.index}"
        value = str(case.failure_case)
        value = value if len(value) <= 80 else value[:77] + "..."
        lines.append(f"  - {column}{row}: {case.check} (value: {value!r})")
    if len(cases) > _MAX_LISTED_FAILURES:
        lines.append(f"  ... and {len(cases) - _MAX_LISTED_FAILURES} more")
    return "\n".join([head, *lines])


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_CODE_ROOT = Path(__file__).resolve().parents[1]


def code_revision() -> str:
    """The git commit of the code that wrote a dataset, ``+dirty`` when the code was edited."""
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=_CODE_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        revision = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--", "pipeline", "schemas")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"
    return revision + ("+dirty" if dirty else "")


@dataclass
class DatasetWriter:
    """Writes one dataset atomically, part by part.

    Use as a context manager::

        with DatasetWriter(PASSAGES, stage="ingest", params=...) as writer:
            writer.write(frame)          # validated, then written as part-00000.parquet

    Leaving the block with an exception discards every part written so far and keeps the
    previous version of the dataset.
    """

    contract: Contract
    stage: str
    params: dict[str, Any] = field(default_factory=dict)
    root: Path | str = "."
    arrow_schema: pa.Schema | None = None
    """Exact Arrow schema of the parts, metadata included (e.g. Hugging Face ``features``)."""
    _tmp: Path | None = field(default=None, init=False, repr=False)
    _parts: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    _schema: pa.Schema | None = field(default=None, init=False, repr=False)

    def __enter__(self) -> "DatasetWriter":
        target = dataset_dir(self.contract.name, self.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(target)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        self._tmp.chmod(0o755)  # mkdtemp makes it private; a dataset is for every user
        return self

    def write(self, frame: pd.DataFrame) -> None:
        """Validate ``frame`` and write it as the next part."""
        if self._tmp is None:
            raise RuntimeError("DatasetWriter.write outside its `with` block")
        index = len(self._parts)
        frame = validate_frame(frame, self.contract, where=f" (part {index})")
        table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
        # Pandas metadata embeds library versions and index details: drop it so the bytes
        # depend only on the rows and the Arrow schema.
        table = table.replace_schema_metadata(None)
        table = table.cast(self.arrow_schema) if self.arrow_schema is not None else _concrete_types(table)
        if self._schema is None:
            self._schema = table.schema
        elif not table.schema.equals(self._schema):
            table = table.cast(self._schema)
        path = self._tmp / PART_PATTERN.format(index)
        pq.write_table(
            table, path, compression="zstd", compression_level=3, use_dictionary=True,
            write_statistics=True, row_group_size=65536,
        )
        self._parts.append(
            {"path": path.name, "rows": table.num_rows, "bytes": path.stat().st_size,
             "sha256": sha256_file(path)}
        )

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._tmp is not None
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        if not self._parts:  # an empty dataset still has a part, with the right columns
            self.write(_empty_frame(self.contract))
        _replace_dir(self._tmp, dataset_dir(self.contract.name, self.root))
        self._write_manifest()

    def _write_manifest(self) -> None:
        assert self._schema is not None
        manifest = {
            "dataset": self.contract.name,
            "stage": self.stage,
            "path": f"{DATA_DIR}/{self.contract.name}",
            "schema": {"contract": self.contract.model.__name__, "version": self.contract.version},
            "rows": sum(p["rows"] for p in self._parts),
            "bytes": sum(p["bytes"] for p in self._parts),
            "columns": [{"name": f.name, "type": str(f.type)} for f in self._schema],
            "content_sha256": content_hash(self._parts),
            "files": self._parts,
            "params": self.params,
            "code_revision": code_revision(),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write_text(manifest_path(self.contract.name, self.root), json.dumps(manifest, indent=2) + "\n")


def _concrete_types(table: pa.Table) -> pa.Table:
    """All-null or all-empty-list columns infer as ``null`` types: store them as strings so a
    dataset's schema does not depend on whether a part happened to have values."""
    fields = []
    for f in table.schema:
        if pa.types.is_null(f.type):
            f = f.with_type(pa.large_string())
        elif pa.types.is_list(f.type) and pa.types.is_null(f.type.value_type):
            f = f.with_type(pa.list_(pa.string()))  # what a list of Python str infers to
        fields.append(f)
    schema = pa.schema(fields)
    return table if schema.equals(table.schema) else table.cast(schema)


def content_hash(parts: list[dict[str, Any]]) -> str:
    """Hash of a dataset's parts (names and bytes), independent of the manifest."""
    digest = hashlib.sha256()
    for part in sorted(parts, key=lambda p: p["path"]):
        digest.update(f"{part['path']}:{part['sha256']}\n".encode())
    return digest.hexdigest()


def _empty_frame(contract: Contract) -> pd.DataFrame:
    schema = contract.model.to_schema()
    return pd.DataFrame({name: pd.Series(dtype=str(col.dtype)) for name, col in schema.columns.items()})


def _replace_dir(new: Path, target: Path) -> None:
    """Swap ``new`` in for ``target`` with renames; at every instant one complete version exists."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def publish_folder(tmp: Path, target: Path) -> None:
    """Make a finished temporary folder (a model, a dataset) readable and swap it in for
    ``target`` by renames, so readers see the old version or the new one, never half of one."""
    tmp.chmod(0o755)  # mkdtemp and save_pretrained leave private modes
    for path in tmp.iterdir():
        path.chmod(0o644)
    _replace_dir(tmp, target)


def _remove_stale_temporaries(target: Path) -> None:
    # Left by a writer that was killed (SIGKILL, power loss); never a complete dataset.
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small text file through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_dataset(
    frame: pd.DataFrame, contract: Contract, *, stage: str, params: dict[str, Any] | None = None,
    root: Path | str = ".",
) -> pd.DataFrame:
    """Validate and atomically write a whole dataset in one part; returns the coerced frame."""
    with DatasetWriter(contract, stage=stage, params=params or {}, root=root) as writer:
        writer.write(frame)
    return validate_frame(frame, contract)


def write_rejects(
    rejects: list[dict[str, Any]], parent: Contract, *, stage: str, params: dict[str, Any] | None = None,
    root: Path | str = ".",
) -> None:
    """Write ``<parent>_rejects`` (always, possibly empty, so the stage's outputs exist)."""
    columns = list(RejectSchema.to_schema().columns)
    frame = pd.DataFrame(rejects, columns=columns)
    frame["record"] = frame["record"].astype(str).str.slice(0, 500)
    write_dataset(frame, rejects_contract(parent), stage=stage, params=params, root=root)


def read_manifest(name: str, root: Path | str = ".") -> dict[str, Any]:
    path = manifest_path(name, root)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetNotFoundError(
            f"dataset {name!r}: no manifest at {path} (has the stage that writes it run? try `dvc repro`)"
        ) from None


def read_dataset(name: str, root: Path | str = ".", *, columns: list[str] | None = None) -> pd.DataFrame:
    """Read every part of dataset ``name`` into one frame."""
    folder = dataset_dir(name, root)
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        raise DatasetNotFoundError(
            f"dataset {name!r}: no Parquet parts in {folder} (has the stage that writes it run? try `dvc repro`)"
        )
    table = pq.ParquetDataset(parts).read(columns=columns)
    frame = table.to_pandas()
    for f in table.schema:  # Arrow gives numpy arrays for lists; the contracts speak of lists
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type):
            frame[f.name] = frame[f.name].map(lambda v: [] if v is None else list(v))
    return frame


def list_datasets(root: Path | str = ".") -> list[str]:
    """Names of the datasets present under ``data/`` (those with at least one part)."""
    base = Path(root) / DATA_DIR
    if not base.is_dir():
        return []
    return sorted(
        p.name for p in base.iterdir()
        if p.is_dir() and not p.name.startswith(".") and any(p.glob("part-*.parquet"))
    )


def verify_dataset(name: str, root: Path | str = ".") -> bool:
    """True when the parts on disk hash to the manifest's content hash."""
    manifest = read_manifest(name, root)
    folder = dataset_dir(name, root)
    parts = [{"path": p.name, "sha256": sha256_file(p)} for p in sorted(folder.glob("part-*.parquet"))]
    return content_hash(parts) == manifest["content_sha256"]
