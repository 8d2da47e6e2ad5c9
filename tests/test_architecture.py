"""The layout's rules, checked on the source: true DVC code deps, no import cycles, thin stages.

Imports are read from the syntax tree, function-level imports included (a stage that imports a
module inside a function still runs its code), so the checks hold whatever is imported lazily.
``python -m pipeline.tools.imports --fix`` rewrites dvc.yaml's code deps when a check below fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.tools.imports import (
    REPO, closure, covered, docstring_only, find_cycle, import_graph, imported_modules, module_files, stage_modules,
)

MAX_MODULE_LINES = 600


# --- the checks on small graphs (so a broken checker cannot pass the real tree vacuously) ------


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_imported_modules_sees_function_level_and_from_imports(tmp_path: Path):
    source = tmp_path / "m.py"
    source.write_text(
        "import os\nfrom p import q\n\ndef f():\n    from p.r import thing\n    import p.s.t\n"
    )
    modules = {"p": source, "p.q": source, "p.r": source, "p.s": source, "m": source}
    assert imported_modules(source, "m", modules) == {"p.q", "p.r", "p.s"}


def test_closure_runs_parent_packages():
    graph = {"a": set(), "a.b": {"c"}, "c": set(), "d": {"a.b"}}
    assert closure("d", graph) == {"d", "a.b", "a", "c"}


# --- the rules on the real tree -------------------------------------------------------------


def test_the_packages_have_no_import_cycle():
    assert find_cycle(import_graph()) is None


@pytest.mark.parametrize("stage", sorted(stage_modules()))
def test_dvc_yaml_lists_every_module_a_stage_runs(stage: str):
    """A stage whose imported code changed must rerun: each module in its import closure is a
    dependency in dvc.yaml, itself or through a folder that holds it."""
    graph, files = import_graph(), module_files()
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    deps = spec.get("do", spec)["deps"]
    missing = [
        str(files[module].relative_to(REPO))
        for module in sorted(closure(stage_modules()[stage], graph))
        if not covered(files[module], deps) and not docstring_only(files[module])
    ]
    assert not missing, f"dvc.yaml stage {stage!r} misses code it imports: {missing}"


def test_no_stage_imports_another_stage():
    graph, stages = import_graph(), set(stage_modules().values())
    crossing = {s: sorted(graph[s] & stages) for s in stages if graph[s] & stages}
    assert not crossing, f"stages import other stages (move the shared code below them): {crossing}"


def test_no_module_is_a_god_module():
    long = {
        str(path.relative_to(REPO)): n
        for path in module_files().values()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {long}"


def test_the_core_reads_no_files_and_no_params():
    """``pipeline.core`` is the algorithm: stages, the store, params and the review sit above it.
    It may use the error types and the contracts' domain constants (kinds of anchor, the ignore index)."""
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith("pipeline.core"):
            outside = {t for t in targets if not t.startswith(("pipeline.core", "schemas")) and t != "pipeline.errors"}
            assert not outside, f"{module} imports {sorted(outside)}"
