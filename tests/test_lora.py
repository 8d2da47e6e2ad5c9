"""The model both training stages start from (:func:`pipeline.lora.trainable_model`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.errors import ParamsError
from pipeline.lora import trainable_model
from pipeline.params import LoraParams


def test_without_lora_every_weight_trains_in_float32(tiny_model_dir: Path):
    model = trainable_model(tiny_model_dir, None, key="finetune.lora", load_device="cpu", frozen_dtype="bfloat16")

    params = list(model.parameters())
    assert all(p.requires_grad for p in params)
    assert {p.dtype for p in params} == {torch.float32}  # frozen_dtype concerns frozen weights only


def test_with_lora_only_seeded_adapters_train_and_the_base_is_frozen_in_its_dtype(tiny_model_dir: Path):
    lora = LoraParams(r=2, alpha=4.0, target_modules=["o_proj"], dropout=0.0)
    first = trainable_model(tiny_model_dir, lora, key="reinforce.lora", load_device="cpu",
                            frozen_dtype="bfloat16", seed=3)
    second = trainable_model(tiny_model_dir, lora, key="reinforce.lora", load_device="cpu",
                             frozen_dtype="bfloat16", seed=3)

    trained = {n: p for n, p in first.named_parameters() if p.requires_grad}
    frozen = [p for p in first.parameters() if not p.requires_grad]
    assert trained and all("lora_" in n and "o_proj" in n for n in trained)
    assert {p.dtype for p in trained.values()} == {torch.float32}
    assert frozen and {p.dtype for p in frozen} == {torch.bfloat16}
    # the same seed gives the same adapters: every process and every resumed run agree
    again = dict(second.named_parameters())
    assert all(torch.equal(p, again[n]) for n, p in trained.items())


def test_a_target_matching_no_module_names_the_section_key(tiny_model_dir: Path):
    lora = LoraParams(r=2, alpha=4.0, target_modules=["no_such_proj"], dropout=0.0)
    with pytest.raises(ParamsError, match=r"finetune\.lora\.target_modules"):
        trainable_model(tiny_model_dir, lora, key="finetune.lora", load_device="cpu")
