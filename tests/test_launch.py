"""The launcher: who owns which work, the command it re-executes, a missing config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.launch import LAUNCHED, Ranks, launch_command
from tests.conftest import REPO


def test_ranks_split_work_by_number_and_every_item_has_one_owner(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    ranks = Ranks.from_env()
    assert (ranks.rank, ranks.world_size, ranks.local_rank, ranks.is_main) == (1, 3, 1, False)
    assert [n for n in range(8) if ranks.owns(n)] == [1, 4, 7]
    owners = [[r for r in range(3) if Ranks(r, 3).owns(n)] for n in range(8)]
    assert owners == [[n % 3] for n in range(8)]
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(PipelineError, match="RANK=3 is not below WORLD_SIZE=3"):
        Ranks.from_env()


def test_alone_the_ranks_are_one_and_collectives_are_identities(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ranks = Ranks.from_env()
    assert ranks == Ranks(0, 1, 0) and ranks.is_main and not ranks.distributed
    assert ranks.total([3.0, 4.0]) == [3.0, 4.0]
    ranks.barrier()  # no process group: must not need one


def test_launch_command_runs_this_interpreter_under_accelerate(tmp_path: Path):
    config = tmp_path / "ddp.yaml"
    command = launch_command("pipeline.generic_labels", config=config, num_processes=4, args=["--x"])
    assert command == [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                       "--num_processes", "4", "-m", "pipeline.generic_labels", "--x"]


def test_a_missing_launch_config_stops_the_stage_naming_the_key(tmp_path: Path):
    (tmp_path / "params.yaml").write_text(
        "corpus:\n  forget: [corpora/f.txt]\nlaunch:\n  config: configs/accelerate/nope.yaml\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", LAUNCHED)}
    result = subprocess.run([sys.executable, "-m", "pipeline.generic_labels"], cwd=tmp_path, capture_output=True,
                            text=True, env={**env, "PYTHONPATH": str(REPO), "COLUMNS": "200"}, timeout=300)
    assert result.returncode == 1
    assert "launch.config: no such accelerate config file" in result.stderr and "nope.yaml" in result.stderr
    assert "Traceback" not in result.stderr
