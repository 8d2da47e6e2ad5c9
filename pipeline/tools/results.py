"""README's results, regenerated from the evaluation report (never typed by hand).

``python -m pipeline.tools.results`` reads ``reports/evaluation.md`` (stage ``report``) and
rewrites the block of README between the two ``RESULTS`` markers: for each headline in
:data:`ROWS`, the baseline's value with its interval and the unlearned model's paired change,
exactly as the report prints them. ``--check`` writes nothing and exits 1 when README's block
differs from what the report gives (the tests run it, so README cannot drift from the report).
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.core.headlines import BY_KEY
from pipeline.errors import PipelineError
from pipeline.store import atomic_write_text

README = Path("README.md")
REPORT = Path("reports/evaluation.md")
START, END = "<!-- results:start (python -m pipeline.tools.results) -->", "<!-- results:end -->"
# The headlines README shows, in order: what was forgotten, then what was kept.
ROWS = (
    "known_familiarity_mean_prob", "known_familiarity_top1_rate", "familiarity_mean_prob",
    "familiarity_tier_known_mean_prob", "familiarity_untrained_mean_prob", "completion_familiarity",
    "verbatim_trained_rouge_l", "verbatim_trained_memorised_rate", "retain_perplexity", "general_top1_rate",
    "near_top1_rate", "near_outside_dictionary_top1_rate", "general_heldout_top1_rate", "near_heldout_top1_rate",
)


def report_tables(text: str) -> list[dict[str, list[str]]]:
    """Every Markdown table of the report: label (first cell, stripped) -> the other cells."""
    tables: list[dict[str, list[str]]] = []
    current: dict[str, list[str]] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if current is None:
            current = {"": cells[1:]}  # the header row
            tables.append(current)
        elif not set(cells[0]) <= set("-"):
            current[cells[0]] = cells[1:]
    return tables


def results_block(report: str, *, source: Path = REPORT) -> str:
    """The README table: baseline value and unlearned change for each of :data:`ROWS`."""
    tables = report_tables(report)
    values = next((t for t in tables if "baseline" in t[""] and "unlearned" in t[""]), None)
    changes = next((t for t in tables if t is not values and "unlearned" in t.get("", [])), None)
    if values is None or changes is None:
        raise PipelineError(f"{source}: no values table and change table with columns baseline and unlearned; "
                            "run `dvc repro report`")
    base, unlearned = values[""].index("baseline"), changes[""].index("unlearned")
    lines = ["| metric | baseline [95% interval] | unlearned: change [paired 95% interval] |", "|---|---|---|"]
    for key in ROWS:
        label = BY_KEY[key].label.strip()
        if label not in values or label not in changes:
            raise PipelineError(f"{source}: no row {label!r} ({key}); run `dvc repro report`")
        lines.append(f"| {label} | {values[label][base]} | {changes[label][unlearned]} |")
    return "\n".join(lines)


def replace_block(readme: str, block: str, *, source: Path = README) -> str:
    if readme.count(START) != 1 or readme.count(END) != 1 or readme.index(START) > readme.index(END):
        raise PipelineError(f"{source}: needs exactly one {START} line followed by one {END} line")
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{block}\n{END}{tail}"


def main(argv: list[str], root: Path = Path(".")) -> int:
    check = "--check" in argv
    try:
        report_path, readme_path = root / REPORT, root / README
        if not report_path.exists():
            raise PipelineError(f"{report_path}: missing; run `dvc repro report`")
        readme = readme_path.read_text(encoding="utf-8")
        updated = replace_block(readme, results_block(report_path.read_text(encoding="utf-8"), source=REPORT))
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if check:
        if updated != readme:
            print(f"{README}: results differ from {REPORT}; run `python -m pipeline.tools.results`", file=sys.stderr)
            return 1
        return 0
    if updated != readme:
        atomic_write_text(readme_path, updated)
    print(f"{README}: results from {REPORT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
