"""Profiles: named sets of parameter overrides on top of ``params.yaml``.

``params.yaml`` is the default profile (the 2-core CPU run). Another profile is a file
``profiles/<name>.yaml`` holding only the keys it changes, in the layout of ``params.yaml``.
It is applied through DVC's own override mechanism, so the run is recorded as an experiment
with its parameters::

    dvc exp run --name full $(python -m pipeline.tools.profiles full)

(``make repro-full``). :func:`apply_profile` validates the merged parameters first, so a profile
with an unknown key or a wrong value fails before anything runs, naming the key.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ParamsError
from pipeline.params import PARAMS_FILE, Params, parse_params

PROFILES_DIR = Path("profiles")


def profile_path(name: str, *, root: Path = Path(".")) -> Path:
    path = root / PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (root / PROFILES_DIR).glob("*.yaml"))
        raise ParamsError(f"{path}: no such profile (known: {', '.join(known) or 'none'})")
    return path


def read_overrides(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of params.yaml sections")
    return raw


def flatten(overrides: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"a": {"b": 1}}`` -> ``[("a.b", 1)]``; lists and scalars are leaves."""
    leaves: list[tuple[str, Any]] = []
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            leaves += flatten(value, dotted + ".")
        else:
            leaves.append((dotted, value))
    return leaves


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with every leaf of ``overrides`` set (nested mappings merged)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_profile(name: str, *, root: Path = Path(".")) -> tuple[Params, list[tuple[str, Any]]]:
    """The validated parameters of profile ``name`` and its overrides as ``(key, value)``."""
    path = profile_path(name, root=root)
    overrides = read_overrides(path)
    base = yaml.safe_load((root / PARAMS_FILE).read_text(encoding="utf-8"))
    params = parse_params(merge(base, overrides), source=f"{PARAMS_FILE} with {path}")
    return params, flatten(overrides)


def dvc_set_args(leaves: list[tuple[str, Any]]) -> list[str]:
    """``-S key=value`` arguments for ``dvc exp run`` (values in JSON, which its override
    grammar reads: numbers, ``null``, quoted strings, ``[lists]``)."""
    args = [arg for key, value in leaves for arg in ("-S", f"{key}={json.dumps(value, separators=(',', ':'))}")]
    for arg in args:
        if any(c.isspace() for c in arg):  # printed for $(...), which splits on whitespace
            raise ParamsError(f"profile value with whitespace is not supported: {arg}")
    return args


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m pipeline.tools.profiles NAME   (prints the dvc exp run -S arguments)", file=sys.stderr)
        return 2
    try:
        _, leaves = apply_profile(argv[0])
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(" ".join(dvc_set_args(leaves)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
