"""The model both training stages start from (:func:`pipeline.lora.trainable_model`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.errors import ParamsError
from pipeline.lora import run_key, trainable_model
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


def _trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_train_layers_leaves_only_the_bottom_decoder_layers_trainable(tiny_model_dir: Path):
    from pipeline.models import trained_layers

    model = trainable_model(tiny_model_dir, None, key="finetune.lora", load_device="cpu", train_layers=0.5)
    names = _trainable_names(model)
    assert names and all(n.startswith("model.layers.0.") for n in names)
    # every weight of layer 0 trains; the layer above, the final norm and the tied embeddings do not
    assert names == {n for n, _ in model.named_parameters() if n.startswith("model.layers.0.")}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert {"model.embed_tokens.weight", "model.norm.weight"} <= frozen
    assert any(n.startswith("model.layers.1.") for n in frozen)
    assert trained_layers(model) == {"trained": 1, "of": 2}


@pytest.mark.parametrize(("share", "kept"), [(0.01, 1), (0.5, 1), (0.76, 2), (1.0, 2)])
def test_train_layers_rounds_the_share_and_keeps_at_least_one_layer(tiny_model_dir: Path, share: float, kept: int):
    from pipeline.models import load_model, train_bottom_layers

    model = load_model(tiny_model_dir, dtype="float32", device="cpu")
    assert train_bottom_layers(model, share) == kept
    layers = {int(n.split(".")[2]) for n in _trainable_names(model)}
    assert layers == set(range(kept))
    assert not model.model.embed_tokens.weight.requires_grad  # even at 1.0: only decoder layers train


def test_train_layers_with_lora_trains_only_the_bottom_layers_adapters(tiny_model_dir: Path):
    from pipeline.models import trained_layers

    lora = LoraParams(r=2, alpha=4.0, target_modules=["o_proj", "down_proj"], dropout=0.0)
    model = trainable_model(tiny_model_dir, lora, key="finetune.lora", load_device="cpu", train_layers=0.5)
    names = _trainable_names(model)
    assert names and all("lora_" in n and ".layers.0." in n for n in names)
    assert len(names) == 4  # A and B of two matrices in one layer
    assert trained_layers(model) == {"trained": 1, "of": 2}


def test_a_model_whose_layers_cannot_be_found_is_a_clear_error(tiny_model_dir: Path):
    from pipeline.models import load_model, train_bottom_layers, trained_layers

    model = load_model(tiny_model_dir, dtype="float32", device="cpu")
    assert trained_layers(model) is None  # a full fine-tune: the embeddings train too
    model.config.num_hidden_layers = 5  # no list of 5 layers in a 2-layer model
    with pytest.raises(ValueError, match="no list of 5 decoder layers found in LlamaForCausalLM"):
        train_bottom_layers(model, 0.5)


def test_the_resume_key_changes_with_what_trains_and_only_then():
    lora = LoraParams(r=4, alpha=8, target_modules=["q_proj"])
    keys = {run_key("base", None), run_key("base", lora), run_key("base", None, 0.5), run_key("base", None, 0.75),
            run_key("base", lora, 0.5)}
    assert run_key("base", None) == "base"  # a full fine-tune's checkpoints keep their key
    assert len(keys) == 5
    assert run_key("base", None, 0.5) == run_key("base", None, 0.5)
