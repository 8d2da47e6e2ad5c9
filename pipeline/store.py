"""The one writer and the one reader of every dataset, and the publisher of every stage output.

A dataset ``NAME`` is a folder ``data/NAME/`` of Parquet parts (``part-00000.parquet``, ...)
plus a manifest ``data/manifests/NAME.json``. The manifest lives outside the folder so that
the folder's bytes (and so its DVC hash) depend on the data alone: a rerun that yields the same
rows leaves every downstream stage untouched, even though the manifest records a new code
revision.

Writes are validated, deterministic and transactional:

* every part is validated against the dataset's pandera contract with ``lazy=True`` before
  it is written, and all failures are reported in one :class:`DatasetValidationError`;
* Parquet bytes are a pure function of the rows (fixed writer options, no timestamps);
* no write touches its target: a dataset folder, manifest, model folder or text file is
  *staged* next to it (``.NAME.txn-new1-<id>``), fsynced, and published by a
  :class:`pipeline.stage.Transaction`. Inside a stage (:func:`pipeline.stage.run_stage` opens
  the transaction) every write joins the stage's transaction and nothing is published before
  the stage returns; then a journal is written (the commit point) and every staged version is
  renamed over its target. Outside a stage each write is its own transaction (a dataset's
  folder and manifest together);
* :func:`pipeline.stage.recover` (run before every stage and every read) finishes a committed
  transaction that a crash interrupted, removes an uncommitted one, restores a target a crash
  left missing and removes stale temporaries. A killed stage therefore leaves its previous
  outputs or its new ones, never a mix (docs/datasets.md, "Failures, transactions and recovery").
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pandera.errors
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import DatasetNotFoundError, DatasetValidationError, PipelineError
from pipeline.stage import (
    Transaction, fault_point, fsync, fsync_tree, joining, recover_for_reading, remove, sweep, token, visible,
)
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
    """Writes one dataset, part by part, and publishes it with its manifest.

    Use as a context manager::

        with DatasetWriter(PASSAGES, stage="ingest", params=...) as writer:
            writer.write(frame)          # validated, then written as part-00000.parquet

    The parts go to a staged folder; leaving the block without an error adds the folder and the
    manifest to the stage's transaction (or, outside a stage, publishes both at once). Leaving
    it with an exception discards every part written so far and keeps the previous version.
    """

    contract: Contract
    stage: str
    params: dict[str, Any] = field(default_factory=dict)
    root: Path | str = "."
    arrow_schema: pa.Schema | None = None
    """Exact Arrow schema of the parts, metadata included (e.g. Hugging Face ``features``)."""
    _tmp: Path | None = field(default=None, init=False, repr=False)
    _txn: Transaction | None = field(default=None, init=False, repr=False)
    _own: bool = field(default=False, init=False, repr=False)
    _parts: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    _schema: pa.Schema | None = field(default=None, init=False, repr=False)

    def __enter__(self) -> "DatasetWriter":
        target = dataset_dir(self.contract.name, self.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._txn = joining(target)
        self._own = self._txn is None
        if self._txn is None:
            self._txn = Transaction(self.root, stage=self.stage).begin()
        self._tmp = self._txn.staged_path(target)
        self._tmp.mkdir()
        self._tmp.chmod(0o755)  # a dataset is for every user, whatever the umask
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
        fault_point(f"part {self.contract.name}/{path.name}")
        pq.write_table(
            table, path, compression="zstd", compression_level=3, use_dictionary=True,
            write_statistics=True, row_group_size=65536,
        )
        fsync(path)
        self._parts.append(
            {"path": path.name, "rows": table.num_rows, "bytes": path.stat().st_size,
             "sha256": sha256_file(path)}
        )

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._tmp is not None and self._txn is not None
        tmp, txn, self._tmp = self._tmp, self._txn, None
        if exc_type is not None:
            remove(tmp)
            if self._own:
                txn.rollback()
            return
        try:
            if not self._parts:  # an empty dataset still has a part, with the right columns
                self._tmp = tmp
                self.write(_empty_frame(self.contract))
                self._tmp = None
            fsync(tmp)
            txn.add(tmp, dataset_dir(self.contract.name, self.root))
            _stage_text(txn, manifest_path(self.contract.name, self.root), json.dumps(self._manifest(), indent=2) + "\n")
        except BaseException:
            remove(tmp)
            if self._own:
                txn.rollback()
            raise
        if self._own:
            txn.commit()

    def _manifest(self) -> dict[str, Any]:
        assert self._schema is not None
        # SOURCE_DATE_EPOCH (reproducible-builds.org) pins the time, e.g. to compare two runs byte for byte.
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        created = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
        return {
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
            "created_at": created.isoformat(timespec="seconds"),
        }


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


def _write_synced(path: Path, text: str) -> None:
    fault_point(f"write {path.name}")
    with open(path, "x", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, 0o644)


def _stage_text(txn: Transaction, path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = txn.staged_path(path)
    _write_synced(staged, text)
    txn.add(staged, path)


def publish_folder(tmp: Path, target: Path) -> None:
    """Publish a finished temporary folder (a model, a dataset) as ``target``.

    Its files are made readable and fsynced. Inside a stage it joins the stage's transaction
    (renamed to its staged name now, over ``target`` at commit); outside, it is swapped in at
    once by two renames, and a crash between them is undone by :func:`pipeline.stage.recover`.
    """
    tmp, target = Path(tmp), Path(target)
    # mkdtemp and save_pretrained leave private modes; folders inside (a log's) stay enterable.
    for directory, folders, files in os.walk(tmp):
        Path(directory).chmod(0o755)
        for name in files:
            (Path(directory) / name).chmod(0o644)
    fsync_tree(tmp)
    txn = joining(target)
    if txn is not None:
        staged = txn.staged_path(target, source=tmp)
        fault_point(f"stage {target.name}")
        os.rename(tmp, staged)
        txn.add(staged, target)
        return
    sweep(target.parent, root=None)
    backup = target.with_name(f".{target.name}.bak-{token()}")
    if os.path.lexists(target):
        fault_point(f"backup {target.name}")
        os.rename(target, backup)
    fault_point(f"publish {target.name}")
    os.rename(tmp, target)
    fsync(target.parent)
    if os.path.lexists(backup):
        fault_point(f"discard {backup.name}")
        remove(backup)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small text file (a metrics file, a report, a card) through a staged file.

    Inside a stage it joins the stage's transaction (published with the stage's other outputs);
    outside, it replaces ``path`` at once by a rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    txn = joining(path)
    if txn is not None:
        _stage_text(txn, path, text)
        return
    sweep(path.parent, root=None)
    tmp = path.with_name(f".{path.name}.tmp-{token()}")
    try:
        _write_synced(tmp, text)
        fault_point(f"publish {path.name}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync(path.parent)


def write_dataset(
    frame: pd.DataFrame, contract: Contract, *, stage: str, params: dict[str, Any] | None = None,
    root: Path | str = ".",
) -> pd.DataFrame:
    """Validate and write a whole dataset in one part; returns the coerced frame."""
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


# --------------------------------------------------------------------------- reading

class ManifestError(PipelineError):
    """A manifest is truncated, not JSON, or lacks keys; the message names the file and the fix."""


_MANIFEST_KEYS = {"dataset": str, "stage": str, "rows": int, "bytes": int, "columns": list,
                  "content_sha256": str, "files": list}


def parse_manifest(text: str | bytes, *, where: str) -> dict[str, Any]:
    """A manifest's JSON as a dict, checked for the keys readers rely on.

    Raises:
        ManifestError: naming ``where`` (a path, or ``path at <revision>``) and how to restore it.
    """
    fix = f"restore it with `dvc checkout {where}` or rebuild it with `dvc repro`"
    try:
        manifest = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        detail = f"{exc.msg} at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ManifestError(f"{where}: not a valid manifest (truncated or not JSON: {detail}); {fix}") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{where}: not a valid manifest (a JSON {type(manifest).__name__}, not an object); {fix}")
    wrong = [key for key, kind in _MANIFEST_KEYS.items() if not isinstance(manifest.get(key), kind)]
    if wrong:
        raise ManifestError(f"{where}: not a valid manifest (missing or mistyped: {', '.join(wrong)}); {fix}")
    if not all(isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str)
               for f in manifest["files"]):
        raise ManifestError(f"{where}: not a valid manifest (an entry of `files` lacks `path` or `sha256`); {fix}")
    return manifest


def read_manifest(name: str, root: Path | str = ".") -> dict[str, Any]:
    recover_for_reading(root, (Path(root) / DATA_DIR, Path(root) / DATA_DIR / MANIFEST_DIR))
    path = manifest_path(name, root)
    try:
        text = visible(path).read_bytes()
    except FileNotFoundError:
        raise DatasetNotFoundError(
            f"dataset {name!r}: no manifest at {path} (has the stage that writes it run? try `dvc repro`)"
        ) from None
    return parse_manifest(text, where=path.as_posix())


def read_dataset(name: str, root: Path | str = ".", *, columns: list[str] | None = None) -> pd.DataFrame:
    """Read every part of dataset ``name`` into one frame."""
    recover_for_reading(root, (Path(root) / DATA_DIR, Path(root) / DATA_DIR / MANIFEST_DIR))
    folder = visible(dataset_dir(name, root))
    parts = sorted(folder.glob("part-*.parquet"))
    if not parts:
        raise DatasetNotFoundError(
            f"dataset {name!r}: no Parquet parts in {dataset_dir(name, root)} (has the stage that writes it run? "
            "try `dvc repro`)"
        )
    table = pq.ParquetDataset(parts).read(columns=columns)
    frame = table.to_pandas()
    for f in table.schema:  # Arrow gives numpy arrays for lists; the contracts speak of lists
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type):
            frame[f.name] = frame[f.name].map(lambda v: [] if v is None else list(v))
    return frame


def list_datasets(root: Path | str = ".", *, with_manifests: bool = False) -> list[str]:
    """Names of the datasets under ``data/`` (folders with at least one part); with
    ``with_manifests``, also those whose manifest is there but whose folder is not."""
    recover_for_reading(root, (Path(root) / DATA_DIR, Path(root) / DATA_DIR / MANIFEST_DIR))
    base = Path(root) / DATA_DIR
    if not base.is_dir():
        return []
    names = {
        p.name for p in base.iterdir()
        if p.is_dir() and not p.name.startswith(".") and any(p.glob("part-*.parquet"))
    }
    if with_manifests:
        names |= {p.stem for p in (base / MANIFEST_DIR).glob("*.json") if not p.name.startswith(".")}
    return sorted(names)


def dataset_problem(name: str, root: Path | str = ".") -> str | None:
    """What is wrong with dataset ``name`` on disk, or None when its parts hash to its manifest."""
    try:
        manifest = read_manifest(name, root)
    except PipelineError as exc:
        return str(exc)
    folder = visible(dataset_dir(name, root))
    if not folder.is_dir():
        return (f"{dataset_dir(name, root)} is missing: restore it with `dvc checkout {manifest['stage']}` "
                f"or rebuild it with `dvc repro {manifest['stage']}`")
    parts = [{"path": p.name, "sha256": sha256_file(p)} for p in sorted(folder.glob("part-*.parquet"))]
    if content_hash(parts) != manifest["content_sha256"]:
        return (f"the parts in {dataset_dir(name, root)} do not hash to its manifest: restore them with "
                f"`dvc checkout {manifest['stage']}` or rebuild them with `dvc repro {manifest['stage']}`")
    return None


def verify_dataset(name: str, root: Path | str = ".") -> bool:
    """True when the parts on disk hash to the manifest's content hash."""
    return dataset_problem(name, root) is None
