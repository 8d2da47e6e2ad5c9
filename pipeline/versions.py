"""Named, immutable versions of a dataset: git tags over DVC-tracked outputs.

A version is the annotated git tag ``dataset/<name>`` on a commit whose ``dvc.lock`` records
the dataset's folder and manifest. The bytes live in the DVC cache and the default DVC remote
(:func:`tag` pushes them there first), so any clone can read a version with ``dvc.api``
without checking it out or rerunning the pipeline::

    tag("v1", root=".", message="first review round")     # -> "dataset/v1"
    read_version("v1", root=".")                          # the rows at v1, hash-checked
    read_version(None, root=".")                          # the working copy

A version is any of: a tag name (``v1`` or ``dataset/v1``), any git revision (a commit, a
branch), or ``None`` / ``"workspace"`` for the files on disk. Every read is checked against
the manifest's content hash (``pipeline.store.content_hash``), so a corrupt cache or remote
copy is an error, never silently different training data.

``dvc.api`` reads a revision with the DVC config committed at that revision: a tag therefore
requires the default remote to be in the committed ``.dvc/config``.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import DatasetNotFoundError, PipelineError
from pipeline.store import (
    DATA_DIR, MANIFEST_DIR, content_hash, dataset_dir, manifest_path, parse_manifest, read_dataset, read_manifest,
    sha256_file,
)

TAG_PREFIX = "dataset/"
WORKSPACE = "workspace"
DEFAULT_DATASET = "dataset"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Trailers in the tag message: what the version holds, readable without DVC (`git show`).
_TRAILERS = {"dataset": "Dataset", "rows": "Rows", "content_sha256": "Content-SHA256"}
# The files whose committed state defines what a revision's dataset is.
_DEFINING_FILES = ("dvc.yaml", "dvc.lock", ".dvc/config")


class DatasetVersionError(PipelineError):
    """A dataset version cannot be tagged or read as asked; the message says what to run."""


class VersionNotFoundError(DatasetVersionError):
    """No tag and no git revision has the given name; the message lists the known tags."""


class DatasetIntegrityError(DatasetVersionError):
    """The bytes read for a version do not hash to its manifest's content hash."""


# --------------------------------------------------------------------------- public API


def tag(name: str, *, root: Path | str = ".", dataset: str = DEFAULT_DATASET, message: str | None = None) -> str:
    """Tag the committed, up-to-date version of ``dataset`` as ``dataset/<name>``; push its data.

    Refuses (with the command to run) when the tag exists, when ``dvc.yaml``, ``dvc.lock`` or
    ``.dvc/config`` differ from ``HEAD``, when ``dvc status`` finds the dataset or anything
    upstream of it out of date, when the parts on disk do not match the manifest, or when the
    committed config has no default remote. The data (folder and manifest) is pushed to that
    remote before the tag is created, so a tag never names data that only one machine holds.

    Args:
        name: the version name, e.g. ``v1`` (``dataset/v1`` is accepted too).
        root: the project root (a git + DVC repository).
        dataset: which dataset (folder ``data/<dataset>``) the version is of.
        message: a note for the tag; the dataset's name, rows and content hash are appended.

    Returns:
        The full tag name, ``dataset/<name>``.
    """
    root = Path(root)
    _check_dataset_name(dataset)
    tag_name = _tag_name(name)
    existing = _git(root, "rev-parse", "--verify", "--quiet", f"refs/tags/{tag_name}^{{commit}}", check=False)
    if existing:
        raise DatasetVersionError(
            f"tag {tag_name} already exists (commit {existing[:12]}): a version never moves; pick another name"
        )
    if not _git(root, "rev-parse", "--verify", "--quiet", "HEAD", check=False):
        raise DatasetVersionError(f"{root}: no commit yet: `dvc repro`, then `git add -A && git commit`")

    dirty = _git(root, "status", "--porcelain", "--untracked-files=all", "--", *_DEFINING_FILES, strip=False)
    if dirty.strip():
        files = " ".join(line[3:] for line in dirty.splitlines() if line.strip())
        raise DatasetVersionError(
            f"uncommitted changes in {files}: a tag names a commit, which would not describe the data on "
            f"disk; run `git add {files} && git commit` first"
        )
    remote = _committed_default_remote(root)
    manifest = read_manifest(dataset, root)  # DatasetNotFoundError says to run `dvc repro`
    outputs = [f"{DATA_DIR}/{dataset}", f"{DATA_DIR}/{MANIFEST_DIR}/{dataset}.json"]
    stale = _dvc_status(root, outputs)
    if stale:
        raise DatasetVersionError(
            f"dataset {dataset!r} is not up to date ({stale}): run `dvc repro`, then "
            "`git add dvc.lock && git commit`, then tag again"
        )
    actual = _workspace_hash(dataset, root)
    if actual != manifest["content_sha256"]:
        raise DatasetIntegrityError(
            f"the parts in {DATA_DIR}/{dataset} do not match its manifest (content sha256 {actual[:16]}, "
            f"manifest {manifest['content_sha256'][:16]}): run `dvc checkout {DATA_DIR}/{dataset}` or `dvc repro`"
        )
    _check_can_tag(root, tag_name)  # everything that could still fail after the push, checked before it
    _dvc(root, "push", "--remote", remote, *outputs, what=f"pushing {dataset!r} to the DVC remote {remote!r}")

    trailers = {"dataset": dataset, "rows": manifest["rows"], "content_sha256": manifest["content_sha256"]}
    body = "\n".join(f"{_TRAILERS[key]}: {value}" for key, value in trailers.items())
    text = f"{message.strip() if message else f'{dataset} {tag_name[len(TAG_PREFIX):]}'}\n\n{body}\n"
    _git(root, "tag", "--annotate", "--file", "-", tag_name, "HEAD", stdin=text)
    return tag_name


def versions(*, root: Path | str = ".", dataset: str = DEFAULT_DATASET) -> list[dict[str, Any]]:
    """Every tagged version of ``dataset`` (oldest first), then the working copy if present.

    Returns:
        One dict per version: ``version`` (``v1`` or ``workspace``), ``tag`` (``dataset/v1``
        or None), ``commit`` (full sha, None for the workspace), ``date`` (ISO 8601: the tag's
        date, or the manifest's ``created_at`` for the workspace), ``content_sha256`` and
        ``rows`` (from the manifest at that revision), and ``message`` (the tag's first line).
        When a tagged manifest cannot be read (no DVC cache or remote copy), the hash and rows
        come from the tag message and ``error`` says why; a damaged workspace manifest gives
        the workspace entry an ``error`` and no hash or rows.
    """
    root = Path(root)
    _check_dataset_name(dataset)
    entries = []
    for found in _tags(root):
        recorded = found["trailers"].get("dataset")
        if recorded is not None and recorded != dataset:
            continue  # a version of another dataset
        entry = {
            "version": found["tag"][len(TAG_PREFIX):], "tag": found["tag"], "commit": found["commit"],
            "date": found["date"], "content_sha256": None, "rows": None, "message": found["subject"],
        }
        try:
            manifest = _read_manifest_at_rev(root, dataset, found["commit"], label=found["tag"])
            entry.update(content_sha256=manifest["content_sha256"], rows=manifest["rows"])
        except PipelineError as exc:
            rows = found["trailers"].get("rows")
            entry.update(content_sha256=found["trailers"].get("content_sha256"),
                         rows=int(rows) if rows and rows.isdigit() else None, error=str(exc))
        entries.append(entry)
    if manifest_path(dataset, root).is_file():
        entry = {"version": WORKSPACE, "tag": None, "commit": None, "date": None, "content_sha256": None,
                 "rows": None, "message": None}
        try:
            manifest = read_manifest(dataset, root)
            entry.update(date=manifest.get("created_at"), content_sha256=manifest["content_sha256"], rows=manifest["rows"])
        except PipelineError as exc:  # a damaged workspace manifest: the tags are still worth listing
            entry["error"] = str(exc)
        entries.append(entry)
    return entries


def resolve(version: str | None, *, root: Path | str = ".") -> str:
    """The full commit sha that ``version`` names, or ``"workspace"``.

    A tag name wins over a branch or ref of the same name: ``v1`` means ``dataset/v1`` when that
    tag exists. Raises :class:`VersionNotFoundError` (listing the known tags) otherwise.
    """
    root = Path(root)
    if version is None or version == WORKSPACE:
        return WORKSPACE
    if not version or version.startswith("-"):
        raise VersionNotFoundError(f"{version!r} is not a dataset version")
    candidates = [f"refs/tags/{TAG_PREFIX}{version}", version]
    if version.startswith(TAG_PREFIX):
        candidates.insert(0, f"refs/tags/{version}")
    for candidate in candidates:
        commit = _git(root, "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}", check=False)
        if commit:
            return commit
    known = [t["tag"][len(TAG_PREFIX):] for t in _tags(root)]
    listing = ", ".join(known) if known else "none yet (create one with `whp dataset tag NAME`)"
    raise VersionNotFoundError(
        f"unknown dataset version {version!r}: no tag {TAG_PREFIX}{version.removeprefix(TAG_PREFIX)} "
        f"and no git revision of that name; known versions: {listing}"
    )


def read_manifest_at(version: str | None, *, root: Path | str = ".", dataset: str = DEFAULT_DATASET) -> dict[str, Any]:
    """The manifest of ``dataset`` at ``version`` (see :func:`resolve`), as a dict."""
    root = Path(root)
    _check_dataset_name(dataset)
    rev = resolve(version, root=root)
    if rev == WORKSPACE:
        return read_manifest(dataset, root)
    return _read_manifest_at_rev(root, dataset, rev, label=version or rev)


def read_version(
    version: str | None, *, root: Path | str = ".", dataset: str = DEFAULT_DATASET, columns: list[str] | None = None,
) -> pd.DataFrame:
    """The rows of ``dataset`` at ``version``, checked against that version's manifest.

    The workspace is read from disk; any other version through ``dvc.api`` from the local DVC
    cache, else the remote committed at that revision (nothing is checked out, the workspace
    is left as it is). Each part is hashed as it is read; a part or content hash that differs
    from the manifest raises :class:`DatasetIntegrityError`.

    Args:
        version: a tag (``v1``/``dataset/v1``), a git revision, or None/``"workspace"``.
        columns: read only these columns (all when None).

    Returns:
        One frame, ``[rows, columns]``, typed as :func:`pipeline.store.read_dataset` types it.
    """
    from dvc.exceptions import DvcException

    root = Path(root)
    _check_dataset_name(dataset)
    rev = resolve(version, root=root)
    if rev == WORKSPACE:
        manifest = read_manifest(dataset, root)
        actual = _workspace_hash(dataset, root)
        if actual != manifest["content_sha256"]:
            raise DatasetIntegrityError(
                f"dataset {dataset!r} in the workspace: the parts hash to {actual[:16]}, the manifest says "
                f"{manifest['content_sha256'][:16]}: run `dvc checkout {DATA_DIR}/{dataset}` or `dvc repro`"
            )
        return read_dataset(dataset, root, columns=columns)

    label = f"{version} (commit {rev[:12]})" if version != rev else rev[:12]
    fs = _dvc_fs(root, rev)  # opened once: each dvc.api.open would open the repository again
    manifest = _read_manifest_at_rev(root, dataset, rev, label=label, fs=fs)
    folder = f"{DATA_DIR}/{dataset}"
    with tempfile.TemporaryDirectory(prefix="whp-version-") as tmp:
        # Parts are copied next to a bare `data/` so that the one reader (store.read_dataset)
        # reads them; each is hashed while it streams in, never read twice.
        target = dataset_dir(dataset, tmp)
        target.mkdir(parents=True)
        parts = []
        for part in manifest["files"]:
            digest = hashlib.sha256()
            try:
                source = fs.open(f"{folder}/{part['path']}", mode="rb")
                with source, (target / part["path"]).open("wb") as sink:
                    for chunk in iter(lambda: source.read(1 << 20), b""):
                        digest.update(chunk)
                        sink.write(chunk)
            except (DvcException, OSError) as exc:
                raise DatasetVersionError(
                    f"dataset {dataset!r} at {label}: cannot read {folder}/{part['path']} from the DVC cache or "
                    f"the remote committed at that revision ({exc}); was it pushed (`dvc push`)?"
                ) from None
            if digest.hexdigest() != part["sha256"]:
                raise DatasetIntegrityError(
                    f"dataset {dataset!r} at {label}: {part['path']} has sha256 {digest.hexdigest()[:16]}, the "
                    f"manifest says {part['sha256'][:16]}: the DVC cache or remote copy is corrupt"
                )
            parts.append({"path": part["path"], "sha256": digest.hexdigest()})
        if content_hash(parts) != manifest["content_sha256"]:
            raise DatasetIntegrityError(
                f"dataset {dataset!r} at {label}: the parts do not hash to the manifest's content_sha256"
            )
        return read_dataset(dataset, tmp, columns=columns)


# --------------------------------------------------------------------------- git and dvc


def _git(root: Path, *args: str, check: bool = True, stdin: str | None = None, strip: bool = True) -> str:
    try:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, input=stdin)
    except FileNotFoundError:
        raise DatasetVersionError("git is not installed (dataset versions are git tags)") from None
    if check and result.returncode != 0:
        raise DatasetVersionError(f"`git {' '.join(args)}` failed in {root}: {result.stderr.strip()}")
    if result.returncode != 0:
        return ""
    return result.stdout.strip() if strip else result.stdout


def _dvc(root: Path, *args: str, what: str) -> str:
    # The CLI, not dvc's internal Repo API: a stable interface, and its messages are the user's.
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise DatasetVersionError(f"{what}: `dvc {' '.join(args)}` failed: {' '.join(detail[-3:])}")
    return result.stdout


def _dvc_status(root: Path, outputs: list[str]) -> str:
    """What ``dvc status`` finds out of date for ``outputs`` and everything upstream ('' if none).

    Both the folder and the manifest are named: a status targeted at one output ignores the
    stage's other outputs.
    """
    report = json.loads(_dvc(root, "status", "--with-deps", "--json", *outputs, what="checking the dataset") or "{}")
    changes = []
    for stage, items in report.items():
        for item in items:
            if isinstance(item, dict):
                for kind, paths in item.items():
                    listed = ", ".join(f"{p} {s}" for p, s in paths.items()) if isinstance(paths, dict) else str(paths)
                    changes.append(f"stage {stage}: {kind}: {listed}")
            else:
                changes.append(f"stage {stage}: {item}")
    return "; ".join(changes)


def _committed_default_remote(root: Path) -> str:
    """The default remote named in ``.dvc/config`` at HEAD: what a clone's ``dvc.api`` reads."""
    from configobj import ConfigObj  # dvc's own config parser (a dependency of dvc)

    text = _git(root, "show", "HEAD:.dvc/config", check=False)
    remote = ConfigObj(text.splitlines()).get("core", {}).get("remote") if text else None
    if not remote:
        raise DatasetVersionError(
            "no default DVC remote in the committed .dvc/config, so no clone could read this version: "
            "run `dvc remote add -d NAME URL` and `git commit .dvc/config`"
        )
    return remote


def _tags(root: Path) -> list[dict[str, Any]]:
    """Every ``dataset/*`` tag, oldest first: tag, commit, date, subject and message trailers."""
    fields = ["refname:strip=2", "objecttype", "objectname", "*objectname", "creatordate:iso-strict", "contents"]
    fmt = "%00".join(f"%({field})" for field in fields) + "%01"
    out = _git(root, "for-each-ref", "--sort=creatordate", f"--format={fmt}", f"refs/tags/{TAG_PREFIX}")
    found = []
    for record in filter(None, (r.strip("\n") for r in out.split("\x01"))):
        name, kind, obj, peeled, date, contents = record.split("\x00", 5)
        trailers = {}
        for line in contents.splitlines():
            for key, label in _TRAILERS.items():
                if line.startswith(f"{label}: "):
                    trailers[key] = line[len(label) + 2:].strip()
        found.append({
            "tag": name, "commit": peeled if kind == "tag" else obj, "date": date,
            "subject": contents.splitlines()[0] if contents.strip() else None, "trailers": trailers,
        })
    return found


def _dvc_fs(root: Path, rev: str):
    """``dvc.api``'s view of the repository at ``rev``: its dvc.lock, its config, its remote."""
    import dvc.api

    return dvc.api.DVCFileSystem(repo=str(root), rev=rev)


def _read_manifest_at_rev(root: Path, dataset: str, rev: str, *, label: str, fs=None) -> dict[str, Any]:
    from dvc.exceptions import DvcException

    path = f"{DATA_DIR}/{MANIFEST_DIR}/{dataset}.json"
    try:
        fs = fs or _dvc_fs(root, rev)
        with fs.open(path, mode="rb") as handle:
            text = handle.read()
    except (DvcException, OSError) as exc:
        raise DatasetNotFoundError(
            f"dataset {dataset!r} at {label}: cannot read {path}: not an output at that revision, or in neither "
            f"the DVC cache nor the remote committed there ({exc})"
        ) from None
    return parse_manifest(text, where=f"{path} at {label}")


# --------------------------------------------------------------------------- small checks


def _workspace_hash(dataset: str, root: Path) -> str:
    folder = dataset_dir(dataset, root)
    return content_hash([{"path": p.name, "sha256": sha256_file(p)} for p in sorted(folder.glob("part-*.parquet"))])


def _check_can_tag(root: Path, tag_name: str) -> None:
    """Refuse before pushing what would make ``git tag`` fail after it: an invalid ref name, or
    no identity to sign the annotated tag with (git asks for one; the push would be done already)."""
    if subprocess.run(["git", "check-ref-format", f"refs/tags/{tag_name}"], cwd=root, capture_output=True).returncode:
        raise DatasetVersionError(f"{tag_name!r} is not a valid git tag name")
    result = subprocess.run(["git", "var", "GIT_COMMITTER_IDENT"], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        detail = "; ".join(line.removeprefix("fatal: ") for line in result.stderr.splitlines() if line.startswith("fatal:"))
        raise DatasetVersionError(
            f"git has no identity to sign the tag with ({detail or 'git var GIT_COMMITTER_IDENT failed'}); nothing "
            'was pushed or tagged: run `git config user.name "Your Name"` and `git config user.email you@example.com`, '
            "then tag again"
        )


def _tag_name(name: str) -> str:
    short = name.removeprefix(TAG_PREFIX)
    if short == WORKSPACE or not _NAME.fullmatch(short) or short.endswith((".lock", ".")) or ".." in short:
        raise DatasetVersionError(
            f"{name!r} is not a usable version name: letters, digits, '.', '_' and '-' (e.g. v1), not 'workspace'"
        )
    return TAG_PREFIX + short


def _check_dataset_name(dataset: str) -> None:
    if not _NAME.fullmatch(dataset):
        raise DatasetVersionError(f"{dataset!r} is not a dataset name (a folder under {DATA_DIR}/)")


def read_pinned(params, *, root: Path | str = ".", columns: list[str] | None = None):
    """The training dataset at the version ``finetune.dataset`` pins, hash-checked.

    A version that does not exist is a :class:`VersionNotFoundError` naming it and listing the
    known versions.
    """
    return read_version(params.finetune.dataset, root=root, dataset=DEFAULT_DATASET, columns=columns)
