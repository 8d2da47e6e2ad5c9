"""The GPU run: the whole pipeline under a profile, timed, with throughput, MFU and the evaluation.

Runs ``dvc exp run`` with the profile's overrides (``profiles/<name>.yaml``, as ``make
repro-full`` does), echoing its output, and then prints:

* each stage's wall time (from DVC's ``Running stage '<name>'`` line to the next one: process
  start, model loading and DVC's bookkeeping included);
* label tokens/s (``generic_labels``: block positions labelled per second, each read by both
  models) and training tokens/s (``reinforce``; ``finetune``: forget tokens, the paired retain
  blocks come on top), from the stages' own summaries;
* MFU = achieved FLOP/s / the GPU's peak dense bf16 FLOP/s, with FLOPs per token from
  :func:`pipeline.tools.plan.training_flops_per_token` (``6 P + 12 L h s``): reinforce one
  trained token, finetune with the retain KL two trained tokens and one forward of the frozen
  baseline per forget token, labels two forwards per token;
* the evaluation table (``reports/evaluation.md``).

The figures also go to ``reports/gpu_run.json`` and ``reports/gpu_run.md``. Run through
``scripts/gpu_run.sh`` (``make gpu-run``), which installs what is missing first::

    python -m benchmarks.gpu_run --profile full [--max-blocks 800] [--peak-tflops 989]

On a CPU (tests) ``--peak-tflops`` gives the peak to divide by; ``--profile default`` runs
params.yaml as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

RUNNING = re.compile(r"Running stage '([^']+)'")
SKIPPED = re.compile(r"Stage '([^']+)' didn't change, skipping")
# pipeline.stage.run_stage: "<stage> done in 12.3s: key=value, key=value"
SUMMARY = re.compile(r"^(\S+) done in ([0-9.]+)s: (.*)$")
# Peak dense bf16 tensor FLOP/s by GPU name (vendor data sheets; no sparsity). Most specific first.
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4), ("B200", 2250.0),
    ("A100", 312.0), ("L40S", 362.1), ("L4", 121.0),
)
TIME_LIMIT_S = 600
TARGETS = {"label_tokens_per_s": 300_000, "reinforce_tokens_per_s": 200_000}


@dataclass
class RunLog:
    """What the run's output said: stage wall times (in order) and each stage's summary."""

    stage_seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    summaries: dict[str, dict[str, str]] = field(default_factory=dict)


def parse_summary(text: str) -> dict[str, str]:
    """``"rows=3, device=cuda"`` -> ``{"rows": "3", "device": "cuda"}``."""
    pairs = (part.split("=", 1) for part in text.split(", ") if "=" in part)
    return {key.strip(): value.strip() for key, value in pairs}


def read_log(lines: Iterable[tuple[float, str]], *, end: float) -> RunLog:
    """A :class:`RunLog` from ``(monotonic seconds, line)`` pairs of the run's output.

    A summary printed by a non-main rank (it has ``rank=``) is ignored: the main rank's holds
    the figures of all ranks."""
    log = RunLog()
    current: tuple[str, float] | None = None
    for stamp, line in lines:
        line = line.strip()
        if match := RUNNING.search(line):
            if current:
                log.stage_seconds[current[0]] = round(stamp - current[1], 1)
            current = (match.group(1), stamp)
        elif match := SKIPPED.search(line):
            log.skipped.append(match.group(1))
        elif match := SUMMARY.match(line):
            figures = parse_summary(match.group(3))
            if "rank" not in figures:
                log.summaries[match.group(1)] = figures
    if current:
        log.stage_seconds[current[0]] = round(end - current[1], 1)
    return log


def peak_flops(device_name: str | None, override_tflops: float | None) -> float | None:
    """Peak bf16 FLOP/s of the GPU (``override_tflops`` first); None when unknown."""
    if override_tflops:
        return override_tflops * 1e12
    for key, tflops in PEAK_TFLOPS:
        if device_name and key in device_name:
            return tflops * 1e12
    return None


def figures(log: RunLog, *, root: Path, peak: float | None) -> dict[str, float | None]:
    """Throughputs from the summaries, and the MFU of each (None without a known peak)."""
    from pipeline.params import load_params
    from pipeline.tools.plan import forward_flops_per_token, shape_from_config, training_flops_per_token

    params = load_params(root / "params.yaml")
    shape = shape_from_config(json.loads((root / "models" / "baseline" / "config.json").read_text()))
    seq = params.blocks.block_size
    train, forward = training_flops_per_token(shape, seq_len=seq), forward_flops_per_token(shape, seq_len=seq)
    retain = params.finetune.retain
    uses_retain = retain.kind != "none" and retain.weight > 0
    # Per forget token: its own training, its paired retain token's, the frozen baseline's forward (kl).
    per_forget_token = train + (train if uses_retain else 0) + (forward if uses_retain and retain.kind == "kl" else 0)
    result: dict[str, float | None] = {"parameters": shape.parameters, "seq_len": seq}
    for name, stage, flops in (("label", "generic_labels", 2 * forward), ("reinforce", "reinforce", train),
                               ("finetune", "finetune", per_forget_token)):
        rate = log.summaries.get(stage, {}).get("tokens_per_s")
        value = float(rate) if rate is not None else None
        result[f"{name}_tokens_per_s"] = value
        result[f"{name}_mfu"] = round(value * flops / peak, 4) if value is not None and peak else None
    return result


def _fmt(value: float | None, *, percent: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1%}" if percent else f"{value:,.0f}"


def report(log: RunLog, numbers: dict, *, device: str, peak: float | None, total_s: float, profile: str,
           evaluation: Path) -> str:
    """The printed (Markdown) report."""
    lines = [
        f"# GPU run: profile `{profile}` on {device}",
        "",
        f"Total wall time {total_s:,.0f} s ({'within' if total_s <= TIME_LIMIT_S else 'OVER'} the "
        f"{TIME_LIMIT_S} s budget); peak {peak / 1e12:,.1f} TFLOP/s bf16." if peak else
        f"Total wall time {total_s:,.0f} s; peak FLOP/s unknown for this device (pass --peak-tflops).",
        "",
        "| stage | seconds |", "|---|---|",
        *(f"| {stage} | {seconds:,.1f} |" for stage, seconds in log.stage_seconds.items()),
        *(f"| {stage} | skipped (unchanged) |" for stage in log.skipped),
        "",
        "| figure | value | MFU | target |", "|---|---|---|---|",
    ]
    for name, label in (("label", "label tokens/s (generic_labels)"), ("reinforce", "training tokens/s (reinforce)"),
                        ("finetune", "training forget tokens/s (finetune)")):
        target = TARGETS.get(f"{name}_tokens_per_s")
        value = numbers.get(f"{name}_tokens_per_s")
        verdict = "" if target is None else f">= {target:,}" + (
            "" if value is None else (" (met)" if value >= target else " (missed)"))
        lines.append(f"| {label} | {_fmt(value)} | {_fmt(numbers.get(f'{name}_mfu'), percent=True)} | {verdict} |")
    lines += ["", f"FLOPs per token: 6 x {numbers['parameters']:,} parameters + attention at {numbers['seq_len']} "
              "tokens (pipeline/tools/plan.py); finetune counts the retain blocks and the frozen baseline's forward.",
              ""]
    if evaluation.is_file():
        table = [line for line in evaluation.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
        lines += ["## Evaluation", "", *table]
    else:
        lines.append(f"(no {evaluation}: the evaluation did not run)")
    return "\n".join(lines) + "\n"


def dvc_command(profile: str, *, root: Path, name: str, max_blocks: int | None, launch_config: str | None) -> list[str]:
    from pipeline.tools.profiles import apply_profile, dvc_set_args

    leaves = [] if profile == "default" else apply_profile(profile, root=root)[1]
    if max_blocks is not None:
        leaves = [(k, v) for k, v in leaves if k != "blocks.max_blocks"] + [("blocks.max_blocks", max_blocks)]
    if launch_config:
        leaves.append(("launch.config", launch_config))
    return [sys.executable, "-m", "dvc", "exp", "run", "--name", name, *dvc_set_args(leaves)]


def stream(command: list[str], *, cwd: Path, log_path: Path) -> tuple[list[tuple[float, str]], int]:
    """Run ``command``, echoing and keeping each output line with its time; the lines and exit code.

    The stages' ``python -m ...`` (dvc.yaml) must be this interpreter, whatever ``python`` is on
    the machine's PATH (a fresh machine may have only ``python3``): a folder holding a ``python``
    that runs it goes first on the PATH (a script, not a link: a virtual environment's
    interpreter started through a link elsewhere would not find its ``pyvenv.cfg``)."""
    shims = Path(tempfile.mkdtemp(prefix="whp-python-"))
    shim = shims / "python"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n', encoding="utf-8")
    shim.chmod(0o755)
    env = {
        **os.environ, "PATH": f"{shims}{os.pathsep}{os.environ.get('PATH', '')}",
        "COLUMNS": "1000", "PYTHONUNBUFFERED": "1",  # one summary per line, unwrapped, in time
    }
    lines: list[tuple[float, str]] = []
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as log, subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        errors="replace",
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append((time.monotonic(), line))
            sys.stdout.write(line)
            log.write(line)
        code = process.wait()
    shutil.rmtree(shims, ignore_errors=True)
    return lines, code


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return "CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="full", help="profiles/<name>.yaml, or `default` (params.yaml)")
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--max-blocks", type=int, help="a subset: only the first N blocks of the forget corpus")
    parser.add_argument("--launch-config", help="run the training and label stages under this accelerate config")
    parser.add_argument("--peak-tflops", type=float, help="peak bf16 TFLOP/s (default: from the GPU's name)")
    parser.add_argument("--name", default=f"gpu-run-{time.strftime('%Y%m%d-%H%M%S')}")
    args = parser.parse_args(argv)
    root = args.project.resolve()
    device = device_name()
    peak = peak_flops(device, args.peak_tflops)
    command = dvc_command(args.profile, root=root, name=args.name, max_blocks=args.max_blocks,
                          launch_config=args.launch_config)
    print(f"gpu_run: {device}; {' '.join(command)}", flush=True)
    started = time.monotonic()
    lines, code = stream(command, cwd=root, log_path=root / "reports" / "gpu_run.log")
    total = time.monotonic() - started
    if code != 0:
        print(f"gpu_run: `{' '.join(command)}` failed with exit code {code} after {total:,.0f} s "
              f"(output: reports/gpu_run.log)", file=sys.stderr)
        return code
    log = read_log(lines, end=time.monotonic())
    numbers = figures(log, root=root, peak=peak)
    text = report(log, numbers, device=device, peak=peak, total_s=total, profile=args.profile,
                  evaluation=root / "reports" / "evaluation.md")
    (root / "reports" / "gpu_run.md").write_text(text, encoding="utf-8")
    (root / "reports" / "gpu_run.json").write_text(json.dumps({
        "device": device, "profile": args.profile, "max_blocks": args.max_blocks, "total_seconds": round(total, 1),
        "peak_flops": peak, **asdict(log), **numbers}, indent=2) + "\n", encoding="utf-8")
    print("\n" + text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
