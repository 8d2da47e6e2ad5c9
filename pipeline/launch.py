"""How a stage runs on several processes: the launcher and the ranks.

Two ways to start ``N`` processes of a stage, for every stage that supports it (``reinforce``,
``generic_labels``, ``finetune``):

* by hand: ``accelerate launch --config_file configs/accelerate/ddp.yaml -m pipeline.<stage>``
  or ``torchrun --nproc_per_node N -m pipeline.<stage>``;
* from ``params.yaml``: with ``launch.config`` set, ``python -m pipeline.<stage>`` (the command
  in ``dvc.yaml``) re-executes itself under ``accelerate launch --config_file <config>``
  (:func:`relaunch_if_configured`, called by each of their ``__main__``), so ``dvc repro`` and
  ``dvc exp run -S launch.config=...`` need no other command line.

Every launcher (accelerate, torchrun, deepspeed) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``
and ``MASTER_ADDR``/``MASTER_PORT``; :class:`Ranks` reads them, and :func:`process_group` joins
the processes in a gloo group (CPU collectives: barriers and a few counters, which need no
GPU library and work on a machine without GPU): what ``generic_labels`` needs. The training
stages join through accelerate instead (:mod:`pipeline.sharding`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch

from pipeline.errors import PipelineError
from pipeline.models import pick_device

LAUNCHED = "WHP_LAUNCHED"
"""Set in the re-executed processes: a launched stage never launches itself again (accelerate's
single-process launcher sets no ``WORLD_SIZE`` to tell)."""

# A rank may wait at a barrier for the slowest rank's share of the work (hours on a CPU).
BARRIER_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of one launch (``world_size`` 1: alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Ranks":
        """From the launcher's environment; no launcher: rank 0 of 1."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
        if not 0 <= rank < world_size:
            raise PipelineError(f"RANK={rank} is not below WORLD_SIZE={world_size}: a broken launcher environment")
        return cls(rank, world_size, local_rank)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def owns(self, number: int) -> bool:
        """Whether work item ``number`` is this rank's: ``number % world_size == rank``.

        A pure function of the number, so every rank agrees without talking, whatever the others
        have already finished (a resumed run keeps the same split)."""
        return number % self.world_size == self.rank

    def device(self) -> torch.device:
        """This rank's GPU (``cuda:<local_rank>``) when there is one, else the CPU."""
        return pick_device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()

    def total(self, values: Sequence[float], *, op: str = "sum") -> list[float]:
        """``values`` summed (``op="sum"``) or maximised (``"max"``) over the ranks, on every rank."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.float64)
        reduce = torch.distributed.ReduceOp.SUM if op == "sum" else torch.distributed.ReduceOp.MAX
        torch.distributed.all_reduce(tensor, op=reduce)
        return tensor.tolist()


@contextlib.contextmanager
def process_group() -> Iterator[Ranks]:
    """The ranks of this launch, joined in a gloo process group while the block runs.

    Alone (no launcher): no group, rank 0 of 1. A group someone else started (accelerate's
    :class:`Accelerator`) is used as it is and left open.
    """
    ranks = Ranks.from_env()
    started = False
    if ranks.distributed and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
        started = True
    try:
        yield ranks
    finally:
        if started:
            torch.distributed.destroy_process_group()


def launch_command(
    module: str, *, config: Path, num_processes: int | None = None, args: Sequence[str] = (),
) -> list[str]:
    """The command that runs ``python -m <module> <args>`` under ``accelerate launch``.

    ``num_processes`` None: one per visible GPU, or, without GPU, the config file's own
    ``num_processes``. Through this interpreter (``-m accelerate.commands.launch``), so the
    launched processes use the same environment as the stage.
    """
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    processes = num_processes or torch.cuda.device_count() or None
    if processes:
        command += ["--num_processes", str(processes)]
    return command + ["-m", module, *args]


def relaunch_if_configured(module: str, *, root: Path = Path(".")) -> None:
    """Re-execute this stage under ``accelerate launch`` when ``params.yaml`` sets ``launch.config``.

    Returns (and the stage runs in this process) when no config is set, when this process was
    already launched (by us, by ``accelerate launch`` or by ``torchrun``), or when params.yaml
    cannot be read (the stage then reports that). Does not return otherwise: the launched
    processes replace this one, and its exit status is theirs.
    """
    if os.environ.get(LAUNCHED) or "WORLD_SIZE" in os.environ:
        return
    from pipeline.params import load_params
    from pipeline.stage import console

    try:
        launch = load_params(root / "params.yaml").launch
    except PipelineError:
        return
    if launch.config is None:
        return
    config = root / launch.config
    if not config.is_file():
        console.print(f"[bold red]{module}: error[/]\nlaunch.config: no such accelerate config file: {config}",
                      highlight=False)
        sys.exit(1)
    command = launch_command(module, config=config, num_processes=launch.num_processes, args=sys.argv[1:])
    print(f"{module}: launching {' '.join(command[1:])}", file=sys.stderr, flush=True)
    os.environ[LAUNCHED] = "1"
    os.execv(command[0], command)
