"""What every stage's ``__main__`` shares: load params, run, report errors without a traceback."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from pipeline.errors import PipelineError
from pipeline.params import Params, load_params

console = Console(stderr=True)


def run_stage(name: str, run: Callable[[Params], dict[str, Any]]) -> None:
    """Run a stage; a :class:`PipelineError` exits 1 with its message, a bug keeps its traceback."""
    started = time.perf_counter()
    try:
        summary = run(load_params())
    except PipelineError as exc:
        console.print(f"[bold red]{name}: error[/]\n{exc}", highlight=False)
        sys.exit(1)
    figures = ", ".join(f"{key}={value}" for key, value in summary.items())
    console.print(f"[green]{name}[/] done in {time.perf_counter() - started:.1f}s: {figures}", highlight=False)
