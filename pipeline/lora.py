"""LoRA for the training stages (``reinforce.lora``, ``finetune.lora``), through ``peft``.

With ``lora`` set, the stage trains low-rank adapters on the baseline's target matrices
(:func:`add_adapters`): the baseline's weights are frozen (bf16 on a GPU: nothing is learnt in
them, so no float32 master copy is needed; float32 on a CPU), the adapters are float32. The
fine-tune's frozen baseline for the retain KL is then the trained model itself with its
adapters switched off (:class:`AdaptersOff`), not a second copy. At the end the adapters are
merged into a float32 copy of the baseline (:func:`merged_model`), so the published folder is
an ordinary Hugging Face model that loads without ``peft``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import ParamsError
from pipeline.models import DTYPES, load_model, train_bottom_layers


def describe(lora: Any) -> dict[str, Any] | None:
    """The settings as plain data (provenance, model card, resume key); None without LoRA."""
    return None if lora is None else lora.model_dump(mode="json")


def run_key(base_key: str, lora: Any, train_layers: float | None = None) -> str:
    """A training run's resume key with what decides which weights train in it (its LoRA
    settings, its ``train_layers`` share): ``base_key`` itself when every weight trains (so that
    a full fine-tune's checkpoints keep their key), a hash of them all otherwise."""
    if lora is None and train_layers is None:
        return base_key
    run = {"run": base_key, "lora": describe(lora)} | ({} if train_layers is None else {"train_layers": train_layers})
    return hashlib.sha256(json.dumps(run, sort_keys=True).encode()).hexdigest()


def _config(lora: Any):
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=list(lora.target_modules),
                      lora_dropout=lora.dropout, bias="none", task_type="CAUSAL_LM")


def trainable_model(baseline: Path, lora: Any, *, key: str, load_device: Any = None,
                    frozen_dtype: str = "float32", seed: int = 0, train_layers: float | None = None):
    """The baseline ready to train: every weight in float32, or (``lora`` set) seeded adapters on
    weights frozen in ``frozen_dtype`` (:func:`add_adapters`; ``key`` names the params section's
    LoRA key in errors). ``load_device``: where the weights are loaded (``None``: :func:`~pipeline.models.pick_device`).
    ``train_layers``: only the bottom share of the decoder layers trains
    (:func:`~pipeline.models.train_bottom_layers`; the frozen weights stay float32)."""
    model = load_model(baseline, dtype="float32", device=load_device)
    if lora is not None:
        model = add_adapters(model, lora, key=key, frozen_dtype=frozen_dtype, seed=seed)
    if train_layers is not None:
        section = key.rsplit(".", 1)[0]
        try:
            train_bottom_layers(model, train_layers)
        except ValueError as exc:
            raise ParamsError(f"{section}.train_layers: {exc}") from None
    return model


def add_adapters(model: torch.nn.Module, lora: Any, *, key: str, frozen_dtype: str = "float32", seed: int = 0):
    """The model with LoRA adapters (a ``peft`` model; the base is changed in place): only the
    adapters train; the base's weights are cast to ``frozen_dtype``, the adapters kept float32.

    The adapters' random initialisation is seeded (``seed``), so every process and every
    resumed run starts from the same adapters. A target that matches no module is a
    :class:`~pipeline.errors.ParamsError` naming ``<key>.target_modules`` (``key``: the params
    section's LoRA key, e.g. ``finetune.lora``).
    """
    from peft import get_peft_model

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        adapted = get_peft_model(model, _config(lora))
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        raise ParamsError(f"{key}.target_modules {list(lora.target_modules)}: {exc}") from None
    finally:
        torch.random.set_rng_state(state)
    for param in adapted.parameters():
        if hasattr(param, "ds_id"):  # partitioned by DeepSpeed's ZeRO-3 init: its engine sets dtypes
            continue
        if param.requires_grad:
            param.data = param.data.float()
        else:
            param.data = param.data.to(DTYPES[frozen_dtype])
    return adapted


class AdaptersOff:
    """The frozen baseline of a LoRA run: the trained model with its adapters switched off.

    Called like a model (``reference(input_ids=..., attention_mask=...)``), without gradient.
    It holds the ``peft`` model itself, which DDP and DeepSpeed wrap and FSDP2 shards in place,
    so it computes with whatever the launch made of it (the shards are gathered as for training).
    Not a module: freezing or moving it would freeze or move the trained model.
    """

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, **inputs: Any) -> Any:
        with torch.no_grad(), self.model.disable_adapter():
            return self.model(**inputs)


def merged_model(weights: Mapping[str, torch.Tensor], *, baseline: Path, lora: Any):
    """The published model of a LoRA run: a float32 copy of the baseline with the trained
    adapters (taken from ``weights``, the trained peft model's state dict) merged into its
    weights (``W + (alpha / r) B A``); a plain transformers model.
    """
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    adapted = get_peft_model(load_model(baseline, dtype="float32", device="cpu"), _config(lora))
    adapters = get_peft_model_state_dict(adapted, state_dict=dict(weights))
    expected = get_peft_model_state_dict(adapted)
    if not adapters or adapters.keys() != expected.keys():
        raise ValueError(f"the trained weights hold {len(adapters)} of the {len(expected)} adapter tensors")
    unexpected = set_peft_model_state_dict(adapted, adapters).unexpected_keys
    if unexpected:
        raise ValueError(f"adapter tensors that fit no module: {unexpected[:5]}")
    return adapted.merge_and_unload().eval()
