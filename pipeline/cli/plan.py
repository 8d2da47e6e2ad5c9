"""``whp plan``: the GPU memory each training stage needs, per strategy, and what to run.

Reads the model's ``config.json`` only (a local folder, or a hub id found in the local Hugging
Face cache, or fetched when the hub can be reached); the arithmetic is
:mod:`pipeline.tools.plan`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pipeline.cli.common import ProjectOption, check_format, console, fail
from pipeline.errors import PipelineError
from pipeline.paths import BASELINE
from pipeline.tools.plan import GIB, STAGES, Footprint, Lora, ModelShape, Plan, Setup, plan as plan_stage, shape_from_config

CONFIG_FILES = {
    "ddp": "configs/accelerate/ddp.yaml",
    "fsdp": "configs/accelerate/fsdp.yaml",
    "zero3": "configs/accelerate/deepspeed_zero3.yaml",
    "zero3-offload": "configs/accelerate/deepspeed_zero3_offload.yaml",
}


class ModelConfigError(PipelineError):
    """A model's config.json cannot be found or read."""


def _offline() -> bool:
    # Read at call time: huggingface_hub reads the variable once, at import.
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def find_config(model: str, *, root: Path = Path(".")) -> Path:
    """The ``config.json`` of ``model``: a folder (as given, or under ``root``), a config file, or
    a hub id (the local Hugging Face cache first; the hub only when not offline)."""
    for path in (Path(model).expanduser(), root / model):
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ModelConfigError(f"{path}: a folder without config.json (not a Hugging Face model folder)")
            return path / "config.json"
        if path.is_file() and path.suffix == ".json":
            return path
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelConfigError(f"{model}: no such model folder")
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cache = os.environ.get("HF_HUB_CACHE") or None
    cached = try_to_load_from_cache(model, "config.json", cache_dir=cache)
    if isinstance(cached, str):
        return Path(cached)
    where = cache or "the default Hugging Face cache"
    if _offline():
        raise ModelConfigError(
            f"{model}: not a local folder, and its config.json is not in {where}; HF_HUB_OFFLINE is set, so the "
            "hub was not asked (pass a local model folder, or unset HF_HUB_OFFLINE on a machine with network)")
    try:
        return Path(hf_hub_download(model, "config.json", cache_dir=cache, etag_timeout=10))
    except Exception as exc:  # noqa: BLE001 - any network or hub error means the same to the user
        raise ModelConfigError(
            f"{model}: not a local folder and not in {where}, and the Hugging Face hub cannot be reached "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); pass a local model folder"
        ) from None


def load_shape(model: str, *, root: Path = Path(".")) -> ModelShape:
    path = find_config(model, root=root)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        return shape_from_config(config, name=model)
    except (json.JSONDecodeError, ValueError, TypeError) as exc:
        raise ModelConfigError(f"{path}: {exc}") from None


def stage_batches(root: Path, profile: str | None) -> dict[str, tuple[int, int]]:
    """``(micro_batch, seq_len)`` of each stage from the project's params (with ``profile``
    applied), or the params defaults when the project has no params.yaml."""
    from pipeline.params import PARAMS_FILE, BlockParams, FinetuneParams, ReinforceParams, load_params

    if profile:
        from pipeline.tools.profiles import apply_profile

        params, _ = apply_profile(profile, root=root)
        blocks, reinforce, finetune = params.blocks, params.reinforce, params.finetune
    elif (root / PARAMS_FILE).is_file():
        params = load_params(root / PARAMS_FILE)
        blocks, reinforce, finetune = params.blocks, params.reinforce, params.finetune
    else:
        blocks, reinforce, finetune = BlockParams(), ReinforceParams(), FinetuneParams()
    seq = blocks.block_size
    return {"reinforce": (reinforce.micro_batch_size, seq), "finetune": (finetune.micro_batch_size, seq)}


def _gib(value: int) -> str:
    return f"{value / GIB:.2f}"


def _advice(footprint: Footprint | None, gpus: int) -> str:
    if footprint is None:
        return "nothing fits: more GPUs, larger GPUs or a smaller micro-batch (--micro-batch)"
    setup = footprint.setup
    keys = params_to_set(setup, gpus)
    text = f"{setup.describe()}: {_gib(footprint.total)} GiB per GPU; params: {', '.join(keys) or 'the defaults (one process)'}"
    if footprint.cpu_optimizer:
        text += f"; needs {_gib(footprint.cpu_optimizer)} GiB of CPU RAM per GPU for the optimiser"
    return text


def params_to_set(setup: Setup, gpus: int) -> list[str]:
    """The params.yaml keys that run ``setup`` (docs/training.md, Scale)."""
    keys = [] if setup.strategy == "ddp" and gpus == 1 else [f"launch.config={CONFIG_FILES[setup.strategy]}"]
    if setup.checkpointing and setup.strategy != "fsdp":  # fsdp.yaml checkpoints activations itself
        keys.append(f"{setup.stage}.gradient_checkpointing=true")
    if setup.lora:
        keys.append(f"{setup.stage}.lora.r={setup.lora.r}")
    return keys


def _as_json(result: Plan, gpu_memory: float) -> dict[str, Any]:
    def entry(f: Footprint) -> dict[str, Any]:
        return {
            "configuration": f.setup.describe(), "strategy": f.setup.strategy, "gpus": f.setup.gpus,
            "lora_r": f.setup.lora.r if f.setup.lora else None, "gradient_checkpointing": f.setup.checkpointing,
            "micro_batch": f.setup.micro_batch, "seq_len": f.setup.seq_len,
            "params": params_to_set(f.setup, f.setup.gpus),
            "bytes": {"parameters": f.parameters, "gradients": f.gradients, "optimizer": f.optimizer,
                      "baseline": f.baseline, "activations": f.activations, "transient": f.transient,
                      "total": f.total, "cpu_optimizer": f.cpu_optimizer},
            "fits": f.fits(gpu_memory),
        }

    return {
        "configurations": [entry(f) for f in result.footprints],
        "recommended": entry(result.recommended) if result.recommended else None,
        "lora_option": entry(result.lora_option) if result.lora_option else None,
    }


def plan(
    model: Annotated[str | None, typer.Option(help="Model folder or hub id (default: the project's models/baseline).")] = None,
    gpus: Annotated[int, typer.Option(min=1, help="GPUs the training runs on.")] = 1,
    gpu_memory: Annotated[float, typer.Option(help="Memory of one GPU, GiB.")] = 80.0,
    micro_batch: Annotated[int | None, typer.Option(min=1, help="Blocks per forward pass (default: params.yaml).")] = None,
    seq_len: Annotated[int | None, typer.Option(min=1, help="Tokens per block (default: blocks.block_size).")] = None,
    profile: Annotated[str | None, typer.Option(help="Read the batch sizes from profiles/<name>.yaml.")] = None,
    lora_r: Annotated[int, typer.Option(min=1, help="LoRA rank of the LoRA options.")] = 16,
    precision: Annotated[str, typer.Option(help="bf16 (GPU mixed precision) or fp32.")] = "bf16",
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
    project: ProjectOption = Path("."),
) -> None:
    """Bytes per GPU of reinforce and finetune under DDP, FSDP and ZeRO-3, and what to run."""
    check_format(fmt, ("table", "json"))
    if precision not in ("bf16", "fp32"):
        fail(ValueError(f"--precision must be bf16 or fp32, not {precision!r}"))
    try:
        shape = load_shape(model or str(project / BASELINE), root=project)
        batches = stage_batches(project, profile)
    except PipelineError as exc:
        fail(exc)
    results = {}
    for stage in STAGES:
        stage_micro, stage_seq = batches[stage]
        results[stage] = plan_stage(
            shape, stage, gpus=gpus, gpu_memory_gib=gpu_memory, micro_batch=micro_batch or stage_micro,
            seq_len=seq_len or stage_seq, lora=Lora(r=lora_r), precision=precision,  # type: ignore[arg-type]
        )
    if fmt == "json":
        console.print_json(json.dumps({
            "model": shape.name, "parameters": shape.parameters, "gpus": gpus, "gpu_memory_gib": gpu_memory,
            "stages": {stage: _as_json(result, gpu_memory) for stage, result in results.items()},
        }))
        return
    console.print(f"[bold]{shape.name}[/]: {shape.parameters / 1e9:.3g}B parameters ({shape.layers} layers, "
                  f"hidden {shape.hidden}, vocabulary {shape.vocab}); {gpus} GPU(s) of {gpu_memory:g} GiB "
                  f"({precision}); GiB per GPU:", highlight=False)
    for stage, result in results.items():
        first = result.footprints[0].setup
        table = Table(title=f"{stage}: micro-batch {first.micro_batch} x {first.seq_len} tokens", title_justify="left")
        for column in ("setup", "params", "grads", "optim", "base", "activ", "gather", "total", "fits"):
            table.add_column(column, justify="left" if column == "setup" else "right")
        for f in result.footprints:
            table.add_row(f.setup.label(), *(_gib(v) for v in (
                f.parameters, f.gradients, f.optimizer, f.baseline, f.activations, f.transient, f.total)),
                "yes" if f.fits(gpu_memory) else "no")
        console.print(table)
        console.print(f"  recommended: {_advice(result.recommended, gpus)}", highlight=False)
        if result.lora_option is not None and result.lora_option is not result.recommended:
            console.print(f"  LoRA option: {_advice(result.lora_option, gpus)}", highlight=False)
    console.print("GiB per GPU. params: weights (DDP: fp32 + bf16 autocast copies); optim: AdamW states (and "
                  "ZeRO-3's fp32 master); base: the frozen baseline of finetune's retain KL; activ: saved "
                  "activations and logits of one micro-batch; gather: parameters a sharded strategy gathers at "
                  "once; ckpt: gradient checkpointing; off: optimiser offloaded to CPU RAM. Usable: 90% of the "
                  "GPU less 1 GiB. Formulas: docs/training.md, Scale.", style="dim", highlight=False)
