"""The project's import graph, and dvc.yaml code deps derived from it.

A stage must rerun when any code it runs changes, so its ``deps`` in dvc.yaml list every module in
its import closure (function-level imports included). ``python -m pipeline.tools.imports`` prints
what each stage misses; ``--fix`` rewrites the code deps of every stage (data deps stay as they
are). ``tests/test_architecture.py`` fails when dvc.yaml and the imports disagree.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "schemas")
MAX_MODULE_LINES = 600


def module_files() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name (packages by their ``__init__``)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imported_modules(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports anywhere in its body (``from a import b`` is ``a.b``
    when ``b`` is a module, else ``a``); relative imports are resolved against ``name``."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` runs a, a.b and a.b.c; the closure adds the parents below.
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(path, name, modules) for name, path in modules.items()}


def parents(name: str) -> list[str]:
    """The packages whose ``__init__`` runs before ``name`` (``a.b.c`` -> ``a``, ``a.b``)."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(start: str, graph: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(graph[module] | {p for p in parents(module) if p in graph})
    return seen


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None (depth-first, three colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def docstring_only(path: Path) -> bool:
    """A module holding nothing but a docstring (and ``__future__`` imports) runs no code."""
    body = ast.parse(path.read_text()).body
    return all(
        (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        or (isinstance(node, ast.ImportFrom) and node.module == "__future__")
        for node in body
    )


def stage_modules() -> dict[str, str]:
    """Stage name -> the module its command runs (``python -m pipeline.<module> ...``)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    found = {}
    for name, stage in stages.items():
        words = stage.get("do", stage)["cmd"].split()
        found[name] = words[words.index("-m") + 1]
    return found


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(REPO)
    return any(relative == Path(dep) or Path(dep) in relative.parents for dep in deps)


def stage_code(stage: str, graph: dict[str, set[str]] | None = None) -> list[str]:
    """The files a stage runs, relative to the repository (docstring-only packages left out)."""
    graph = graph or import_graph()
    files = module_files()
    return sorted(
        str(files[m].relative_to(REPO)) for m in closure(stage_modules()[stage], graph) if not docstring_only(files[m])
    )


def fix_dvc_yaml(path: Path = REPO / "dvc.yaml") -> bool:
    """Rewrite each stage's code deps (``pipeline/``, ``schemas/``) to its import closure, keeping
    data deps, order of data deps, comments and everything else as written. Returns whether the file changed."""
    graph = import_graph()
    lines = path.read_text().splitlines(keepends=True)
    out, i, current = [], 0, None
    while i < len(lines):
        line = lines[i]
        if match := re.match(r"^  (\w+):\s*$", line):
            current = match.group(1)
        if current and re.match(r"^\s+deps:\s*$", line):
            out.append(line)
            i += 1
            block = []
            while i < len(lines) and re.match(r"^\s+- ", lines[i]):
                block.append(lines[i])
                i += 1
            indent = re.match(r"^(\s+)- ", block[0]).group(1)
            data = [b for b in block if not re.match(r"^\s+- (pipeline|schemas)/", b)]
            out += data + [f"{indent}- {code}\n" for code in stage_code(current, graph)]
            continue
        out.append(line)
        i += 1
    text = "".join(out)
    changed = text != path.read_text()
    if changed:
        path.write_text(text)
    return changed


def missing_deps() -> dict[str, list[str]]:
    """Per stage, the code it runs that its dvc.yaml deps do not cover."""
    graph = import_graph()
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    found = {}
    for name, spec in stages.items():
        deps = spec.get("do", spec)["deps"]
        missing = [code for code in stage_code(name, graph) if not covered(REPO / code, deps)]
        if missing:
            found[name] = missing
    return found


def main(argv: list[str]) -> int:
    if "--fix" in argv:
        print("dvc.yaml rewritten" if fix_dvc_yaml() else "dvc.yaml already lists every module")
        return 0
    missing = missing_deps()
    for stage, files in missing.items():
        print(f"{stage}: {', '.join(files)}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
