"""Several processes on the CPU (gloo): what N ranks write is what one process writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import generic_labels
from pipeline.store import dataset_dir, manifest_path, read_dataset
from tests.conftest import REPO

pytestmark = pytest.mark.distributed


def _project(built: Path, reinforced: Path, folder: Path, launch: str = "") -> Path:
    """A copy of ``built`` with a reinforced model and small shards (several per rank)."""
    shutil.copytree(built, folder)
    shutil.rmtree(dataset_dir("generic_labels", folder), ignore_errors=True)
    shutil.copytree(reinforced, folder / "models" / "reinforced")
    with (folder / "params.yaml").open("a", encoding="utf-8") as handle:
        handle.write("generic_labels:\n  top_k: 4\n  batch_size: 2\n  shard_blocks: 2\n" + launch)
    return folder


def _stage(cmd: list[str], cwd: Path) -> str:
    """Run a stage command as DVC would (a fresh process in the project folder); its stderr."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout}\n{result.stderr}"
    return result.stderr


def _written(root: Path) -> list[bytes]:
    parts = sorted(dataset_dir("generic_labels", root).glob("*.parquet"))
    assert parts, f"no generic_labels written in {root}"
    return [p.read_bytes() for p in parts]


@pytest.fixture(scope="module")
def one_process(built: Path, reinforced_dir: Path, tmp_path_factory) -> tuple[Path, str]:
    """The labels one process writes (``python -m``, the dvc.yaml command), and its log."""
    one = _project(built, reinforced_dir, tmp_path_factory.mktemp("one") / "project")
    return one, _stage([sys.executable, "-m", "pipeline.generic_labels"], one)


def test_two_ranks_write_the_bytes_one_process_writes(
    built: Path, reinforced_dir: Path, one_process: tuple[Path, str], tmp_path: Path,
):
    one, log_one = one_process
    # launch.config: `python -m` (the dvc.yaml command) re-executes itself under accelerate launch.
    two = _project(built, reinforced_dir, tmp_path / "two", launch=(
        f"launch:\n  config: {REPO / 'configs' / 'accelerate' / 'ddp.yaml'}\n  num_processes: 2\n"))
    log_two = _stage([sys.executable, "-m", "pipeline.generic_labels"], two)

    assert "processes=1" in log_one and "launching" not in log_one
    assert "accelerate.commands.launch" in log_two and "processes=2" in log_two
    assert "rank=1" in log_two  # the second rank ran, and reported as a non-main rank
    assert _written(two) == _written(one)
    manifests = [json.loads(manifest_path("generic_labels", root).read_text()) for root in (one, two)]
    assert [{k: v for k, v in m.items() if k != "created_at"} for m in manifests] == [
        {k: v for k, v in manifests[0].items() if k != "created_at"}] * 2
    assert not (two / generic_labels.WORK).exists()


def test_torchrun_ranks_resume_a_run_stopped_midway(
    built: Path, reinforced_dir: Path, one_process: tuple[Path, str], tmp_path: Path,
):
    """torchrun (no accelerate) on a project whose first shard a killed run already wrote."""
    one, _ = one_process
    resumed = _project(built, reinforced_dir, tmp_path / "resumed")
    stopped = generic_labels.compute(
        resumed, alphas=[2.5, 5.0, 10.0], top_k=4, batch_size=2, shard_blocks=2,
        baseline_dir=resumed / "models" / "baseline", reinforced_dir=resumed / "models" / "reinforced",
        max_shards_this_run=1,
    )
    assert not stopped.complete
    log = _stage([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                  "-m", "pipeline.generic_labels"], resumed)
    n_shards = -(-len(read_dataset("blocks", one)) // 2)
    assert n_shards >= 4  # so that each rank has shards of its own
    assert f"shards={n_shards - 1}, " in log and "processes=2" in log  # the stopped run's shard is kept
    assert _written(resumed) == _written(one)
