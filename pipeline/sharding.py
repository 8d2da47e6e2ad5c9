"""How the training loop runs: alone, or in the processes of a launch (DDP, FSDP2, DeepSpeed ZeRO-3).

:class:`Processes` is what :func:`pipeline.training.train` and the training stages ask, and the
one place that talks to :class:`accelerate.Accelerator`:

* **alone** (``python -m pipeline.<stage>``, no launcher): no Accelerator; the loop keeps its
  own exact path (float32 weights, bf16 autocast on a GPU, single-file checkpoints).
* **launched** (``accelerate launch --config_file configs/accelerate/<x>.yaml`` or ``torchrun``;
  ``launch.config`` in params.yaml does it for ``dvc repro``): an Accelerator built from the
  launch config, so its mixed precision and its FSDP or DeepSpeed plugin apply. The model and
  the optimiser are prepared together; each micro-batch's loss is scaled before its backward
  (:meth:`Processes.backward`), gradients are synchronised on the last micro-batch only (DDP's
  and FSDP's ``no_sync``; DeepSpeed accumulates itself), clipped by accelerate (DeepSpeed:
  by its own ``gradient_clipping``, filled from our settings with the other ``auto`` values,
  :func:`fill_deepspeed_auto`). DDP keeps its gradients in its buckets
  (``gradient_as_bucket_view``).
* **sharded** (FSDP or DeepSpeed): checkpoints are accelerate's ``save_state`` folders (each
  process writes its shards) and the published model's weights are gathered on the main
  process (:meth:`Processes.full_state_dict`).

The frozen baseline of the fine-tune's retain KL (:meth:`Processes.frozen`) is bf16 on a GPU
(float32 on a CPU), sharded with the same plugin as the trained model, or kept in CPU RAM
(``finetune.retain.offload``); with LoRA it is the trained model with its adapters off
(:class:`pipeline.lora.AdaptersOff`), no copy at all.

On a CPU accelerate turns FSDP off (processes on a CPU get plain DDP over gloo), although
torch's FSDP2 (``fully_shard``) runs there. :data:`FSDP_ON_CPU` set in the environment puts
the launch config's FSDP plugin back: the tests use it to run the sharded path on a CPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from pipeline.errors import ParamsError, PipelineError
from pipeline.models import pick_device

Strategy = Literal["single", "ddp", "fsdp", "deepspeed"]
FSDP_ON_CPU = "WHP_FSDP_ON_CPU"
"""Environment switch (tests): FSDP2 on CPU processes, where accelerate would use DDP."""


def launched() -> bool:
    """Whether this process is one of a launch that needs the Accelerator: several processes,
    or one process that accelerate launched with FSDP or DeepSpeed (ZeRO-3 offload on one GPU)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or any(
        os.environ.get(name, "").lower() == "true" for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"))


def fill_deepspeed_auto(
    plugin: Any, *, micro_batch_size: int, accumulation: int, world_size: int, max_grad_norm: float,
) -> dict[str, Any]:
    """Fill the ``auto`` batch and clipping values of a DeepSpeed config from our settings.

    ``train_micro_batch_size_per_gpu`` = blocks per forward, ``gradient_accumulation_steps`` =
    micro-batches per process per optimiser step, ``train_batch_size`` = their product times the
    processes (= the optimiser batch), ``gradient_clipping`` = ``max_grad_norm``. A value the
    config file fixes otherwise is a :class:`~pipeline.errors.PipelineError` naming the file and
    the key; the bucket sizes stay ``auto`` for accelerate to derive from the model's hidden size.

    Args:
        plugin: accelerate's :class:`~accelerate.DeepSpeedPlugin` (its ``deepspeed_config`` is changed).

    Returns:
        The values filled in.
    """
    values = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro_batch_size * accumulation * world_size,
        "gradient_clipping": max_grad_norm,
    }
    config = plugin.deepspeed_config
    fixed = [f"{key} is {config[key]!r} there, {value!r} from the settings" for key, value in values.items()
             if config.get(key, "auto") not in ("auto", value)]
    if fixed:
        source = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "of the launch config")
        raise PipelineError(f"DeepSpeed config {source}: set these to \"auto\" (or to the settings' values): "
                            + "; ".join(fixed))
    config.update(values)  # "auto" or absent: ours (DeepSpeed would not clip without gradient_clipping)
    return values


@dataclass
class Processes:
    """This process and, when launched, the :class:`accelerate.Accelerator` of its launch."""

    accelerator: Any
    """None when alone."""
    device: torch.device
    world_size: int = 1
    rank: int = 0
    trained: Any = None
    """The model as :meth:`prepare` wrapped it (DDP module, FSDP2 module, DeepSpeed engine)."""

    @classmethod
    def start(cls, device: torch.device | str | None = None) -> "Processes":
        """Alone: on ``device`` (default :func:`pick_device`). Launched: join the launch (call
        before loading models: DeepSpeed's ``zero3_init_flag`` and FSDP's RAM-efficient loading
        change how ``from_pretrained`` loads them). ``device`` is then the rank's own."""
        if not launched():
            return cls(None, torch.device(device) if device is not None else pick_device())
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        cpu = not torch.cuda.is_available()
        accelerator = Accelerator(
            # None: the launch config's precision (ACCELERATE_MIXED_PRECISION, or DeepSpeed's
            # JSON); a CPU computes in float32 (its bf16 is slow and would change the curve).
            mixed_precision="no" if cpu else None,
            cpu=cpu,  # what makes accelerate use gloo between CPU processes
            # The scheduler counts optimiser steps, not batches seen by every process.
            step_scheduler_with_optimizer=False,
            kwargs_handlers=[DistributedDataParallelKwargs(gradient_as_bucket_view=True)],
        )
        if cpu and os.environ.get(FSDP_ON_CPU) and os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
            _fsdp_on_cpu(accelerator)
        return cls(accelerator, accelerator.device, accelerator.num_processes, accelerator.process_index)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def strategy(self) -> Strategy:
        if self.accelerator is None:
            return "single"
        kind = str(self.accelerator.distributed_type).rsplit(".", 1)[-1]
        return {"FSDP": "fsdp", "DEEPSPEED": "deepspeed"}.get(kind, "ddp")

    @property
    def sharded(self) -> bool:
        """Parameters, gradients and optimiser states split over the processes (FSDP, ZeRO-3)."""
        return self.strategy in ("fsdp", "deepspeed")

    @property
    def bf16(self) -> bool:
        return self.device.type == "cuda" and torch.cuda.is_bf16_supported()

    @property
    def own_autocast(self) -> bool:
        """Whether the loop runs its forward passes under its own bf16 autocast: on a GPU,
        unless the launch config sets a precision (accelerate's autocast, FSDP's mixed-precision
        policy, DeepSpeed's bf16 engine)."""
        return self.bf16 and (self.accelerator is None or (self.strategy == "ddp" and self.accelerator.mixed_precision == "no"))

    @property
    def precision(self) -> str:
        """``fp32``, ``bf16-autocast`` (the loop's own) or ``bf16-mixed`` (the launch config's)."""
        if self.own_autocast:
            return "bf16-autocast"
        if self.accelerator is not None and self.accelerator.mixed_precision == "bf16":
            return "bf16-mixed"
        return "fp32"

    @property
    def frozen_dtype(self) -> str:
        """The dtype of frozen weights (the retain KL's baseline, LoRA's base): what the
        forward passes compute in (bf16 on a GPU, float32 on a CPU or when a launch config
        asks for float32, where a LoRA layer's bf16 base would meet float32 inputs)."""
        return "float32" if self.precision == "fp32" else "bfloat16"

    @property
    def load_device(self) -> torch.device:
        """Where a stage loads its models: the CPU (train() and :meth:`frozen` place them),
        except under DeepSpeed, whose ZeRO-3 init partitions them onto the GPUs as they load."""
        return self.device if self.strategy == "deepspeed" else torch.device("cpu")

    @property
    def plugin_checkpoints_activations(self) -> bool:
        """Whether the FSDP config applies activation checkpointing itself."""
        return self.strategy == "fsdp" and bool(self.accelerator.state.fsdp_plugin.activation_checkpointing)

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.own_autocast else contextlib.nullcontext()

    def prepare(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, micro_batch_size: int, accumulation: int,
        max_grad_norm: float,
    ) -> tuple[Any, torch.optim.Optimizer]:
        """``(trained, optimizer)``: the model and optimiser wrapped for the launch (unchanged
        alone). ``accumulation``: micro-batches per process per optimiser step."""
        if self.accelerator is None:
            return model, optimizer
        accelerator = self.accelerator
        accelerator.gradient_accumulation_steps = accumulation
        if self.strategy == "deepspeed":
            fill_deepspeed_auto(accelerator.state.deepspeed_plugin, micro_batch_size=micro_batch_size,
                                accumulation=accumulation, world_size=self.world_size, max_grad_norm=max_grad_norm)
        self.trained, optimizer = accelerator.prepare(model, optimizer)
        return self.trained, optimizer

    @contextlib.contextmanager
    def accumulating(self, trained: Any, *, last: bool) -> Iterator[None]:
        """Around a micro-batch's forward *and* backward: gradients are reduced across the
        processes on the ``last`` micro-batch of a step only."""
        if self.accelerator is None:
            yield
            return
        self.accelerator.sync_gradients = last  # DeepSpeed steps (and reduces) when it is True
        if last:
            yield
        else:
            with self.accelerator.no_sync(trained):
                yield

    def loss_scale(self, step_positions: float) -> float:
        """What a micro-batch's loss *sum* is multiplied by before its backward, so that the
        step's gradient is that of the mean over all ``step_positions`` of all processes: the
        processes' gradients are averaged (x ``world_size``) and accelerate (or DeepSpeed)
        divides each micro-batch's loss by the accumulation steps (x that)."""
        return self.world_size * self.accelerator.gradient_accumulation_steps / max(step_positions, 1.0)

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def clip(self, trained: Any, max_norm: float) -> None:
        """Clip the gradients' global norm (DeepSpeed clipped in its step already)."""
        self.accelerator.clip_grad_norm_(trained.parameters(), max_norm)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(values, reduction="sum") if self.accelerator else values

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def register(self, *objects: Any) -> None:
        """Objects with ``state_dict``/``load_state_dict`` saved with the sharded checkpoints."""
        self.accelerator.register_for_checkpointing(*objects)

    def save_state(self, folder: Path) -> None:
        """Every process writes its shards (model, optimiser, registered objects, RNG states)."""
        self.accelerator.save_state(str(folder))

    def load_state(self, folder: Path) -> None:
        self.accelerator.load_state(str(folder))

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The prepared model's weights gathered whole on the main process, on the CPU, as
        float32 (None on the others). Every process must call it. DeepSpeed ZeRO-3 gives its
        16-bit weights (``stage3_gather_16bit_weights_on_model_save``), cast up."""
        weights = self.accelerator.get_state_dict(self.trained)
        if not self.is_main:
            return None
        weights = {name: value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype)
                   for name, value in weights.items()}
        # Tied weights (embeddings and output head) come back as separate copies: make them one
        # tensor again, so that save_pretrained writes it once, as it does for the model itself.
        names_of: dict[int, list[str]] = {}
        for name, param in self.accelerator.unwrap_model(self.trained).named_parameters(remove_duplicate=False):
            names_of.setdefault(id(param), []).append(name)
        for first, *others in names_of.values():
            for other in others:
                if first in weights and other in weights:
                    weights[other] = weights[first]
        return weights

    def frozen(self, reference: torch.nn.Module, *, offload: bool = False) -> torch.nn.Module:
        """Place a frozen model (the retain KL's baseline, loaded in :attr:`frozen_dtype`):
        on this process's device; sharded like the trained model under FSDP (the launch
        config's plugin, without activation checkpointing) or DeepSpeed ZeRO-3 (an engine with
        no optimiser); or with ``offload`` on a GPU, in CPU RAM with each layer moved to the GPU
        for its forward pass (not with DeepSpeed, whose ``zero3_init_flag`` loads it sharded)."""
        reference.eval().requires_grad_(False)
        if offload and self.device.type == "cuda":
            if self.strategy == "deepspeed":
                raise ParamsError("finetune.retain.offload does not combine with DeepSpeed: ZeRO-3 shards the frozen "
                                  "baseline (configs/accelerate/deepspeed_zero3_offload.yaml offloads the optimiser)")
            from accelerate import cpu_offload

            return cpu_offload(reference, execution_device=self.device)
        if self.strategy == "fsdp":
            from accelerate.utils.fsdp_utils import fsdp2_prepare_model

            return fsdp2_prepare_model(self.accelerator, reference)
        if self.strategy == "deepspeed":
            return _deepspeed_frozen(self.accelerator, reference)
        return reference.to(self.device)

    def close(self) -> None:
        """Leave the process group (a launched process that exits without it may abort)."""
        if self.accelerator is not None and torch.distributed.is_initialized():
            self.accelerator.wait_for_everyone()
            torch.distributed.destroy_process_group()


def _fsdp_on_cpu(accelerator: Any) -> None:
    """Put the launch config's FSDP plugin back on CPU processes (:data:`FSDP_ON_CPU`)."""
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # from the launcher's FSDP_* variables
    accelerator.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def _deepspeed_frozen(accelerator: Any, model: torch.nn.Module) -> torch.nn.Module:
    """A ZeRO-3 engine for a frozen model: the training config without optimiser, its
    ``auto`` bucket sizes from the model's hidden size (as accelerate fills them for the trained
    model); the engine's module, whose forward gathers the shards it needs."""
    import copy

    import deepspeed

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    hidden = getattr(model.config, "hidden_size", None)
    zero = config.setdefault("zero_optimization", {})
    if zero.get("stage") != 3:  # ZeRO 1-2 shard only what a frozen model lacks: keep it whole
        zero["stage"] = 0
    for key, value in (("reduce_bucket_size", hidden * hidden if hidden else 5e8),
                       ("stage3_prefetch_bucket_size", int(0.9 * hidden * hidden) if hidden else 5e8),
                       ("stage3_param_persistence_threshold", 10 * hidden if hidden else 1e5)):
        if zero.get(key) == "auto":
            zero[key] = value
    # A frozen model takes no optimiser step: batch sizes still "auto" only need to be consistent.
    batch = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
             "train_batch_size": accelerator.num_processes, "gradient_clipping": 1.0}
    config.update({key: value for key, value in batch.items() if config.get(key, "auto") == "auto"})
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine.module

