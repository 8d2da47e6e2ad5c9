"""The memory plan: parameter counts against transformers, hand-computed bytes, a 7B sanity check, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.tools.plan import (
    GIB, Lora, ModelShape, Setup, activation_bytes, footprint, plan, shape_from_config, training_flops_per_token,
    usable_bytes,
)

# Published dimensions (the models' config.json on the Hugging Face hub).
LLAMA_2_7B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "hidden_act": "silu",
}
SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
    "max_position_embeddings": 8192, "tie_word_embeddings": True, "hidden_act": "silu",
}


@pytest.fixture()
def llama_7b(tmp_path: Path) -> Path:
    folder = tmp_path / "Llama-2-7b-hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA_2_7B), encoding="utf-8")
    return folder


def _transformers_count(config: dict) -> int:
    """Parameters of the real transformers model, built on the meta device (no memory)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("config", [LLAMA_2_7B, SMOLLM2_135M], ids=["llama-2-7b", "smollm2-135m"])
def test_parameter_count_is_the_transformers_models(config: dict):
    shape = shape_from_config(config)
    assert shape.parameters == _transformers_count(config)
    assert shape.layers * shape.layer_parameters + shape.root_parameters == shape.parameters


def test_parameter_count_of_the_tiny_test_model(tiny_model_dir: Path):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert shape_from_config(config).parameters == _transformers_count(config)


def test_gpt2_style_configs_read_their_own_key_names():
    shape = shape_from_config({"model_type": "gpt2", "n_embd": 8, "n_layer": 2, "n_head": 2, "vocab_size": 10})
    assert (shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.intermediate) == (8, 2, 2, 2, 32)
    assert not shape.gated_mlp and "gate_proj" not in shape.matrices()
    with pytest.raises(ValueError, match="none of num_hidden_layers, n_layer"):
        shape_from_config({"hidden_size": 8, "num_attention_heads": 2, "vocab_size": 10})


# A shape small enough to compute by hand: h=4, 1 layer, 2 heads of 2, kv 2 heads, i=8, V=10, tied.
TINY = ModelShape(name="tiny", hidden=4, layers=1, heads=2, kv_heads=2, head_dim=2, intermediate=8, vocab=10,
                  tied_embeddings=True)


def test_tiny_shape_counts_by_hand():
    # q, k, v, o: 4 x 16; gate, up, down: 3 x 32; two norms: 8 -> layer 168; embedding 40 + final norm 4.
    assert TINY.layer_parameters == 168 and TINY.root_parameters == 44 and TINY.parameters == 212


def test_activation_bytes_by_hand():
    # per token per layer: 7h + 2 h_kv + 4i = 28 + 8 + 32 = 68 values; logits per token: V = 10.
    setup = Setup("reinforce", "ddp", 1, micro_batch=2, seq_len=3, precision="bf16")
    # body 2 x 3 tokens x 68 x 2 bytes; head 2 x 3 x 10 x (2 + 4 + 8)
    assert activation_bytes(TINY, setup) == 6 * 68 * 2 + 6 * 10 * 14
    checkpointed = Setup("reinforce", "ddp", 1, micro_batch=2, seq_len=3, checkpointing=True, precision="fp32")
    # layer inputs h = 4 plus one recomputed layer (68), 4 bytes; head 6 x 10 x (4 + 0 + 8)
    assert activation_bytes(TINY, checkpointed) == 6 * (4 + 68) * 4 + 6 * 10 * 12
    finetune = Setup("finetune", "ddp", 1, micro_batch=2, seq_len=3, precision="bf16")
    # forget + retain rows (4) through the body, plus the baseline's 2 retain rows of logits
    assert activation_bytes(TINY, finetune) == 12 * 68 * 2 + (4 + 2) * 3 * 10 * 14


def test_footprints_by_hand_for_each_strategy():
    p = TINY.parameters
    ddp = footprint(TINY, Setup("finetune", "ddp", 2, 1, 1))
    assert (ddp.parameters, ddp.gradients, ddp.optimizer, ddp.baseline, ddp.transient) == (6 * p, 4 * p, 8 * p, 2 * p, 0)
    fsdp = footprint(TINY, Setup("finetune", "fsdp", 2, 1, 1))
    assert (fsdp.parameters, fsdp.gradients, fsdp.optimizer, fsdp.baseline) == (2 * p, 2 * p, 4 * p, p)
    assert fsdp.transient == 2 * (44 + 2 * 168) + 2 * 168  # bf16 root + 2 layers, one layer's gradients
    zero3 = footprint(TINY, Setup("reinforce", "zero3", 4, 1, 1))
    assert (zero3.parameters, zero3.gradients, zero3.optimizer, zero3.baseline) == (p // 2, p // 2, 3 * p, 0)
    offload = footprint(TINY, Setup("reinforce", "zero3-offload", 4, 1, 1))
    assert offload.optimizer == 0 and offload.cpu_optimizer == 3 * p
    lora = footprint(TINY, Setup("finetune", "ddp", 1, 1, 1, lora=Lora(r=1)))
    adapters = 4 * (4 + 4) + 3 * (4 + 8)  # r * (d_in + d_out): q, k, v, o are 4 x 4; gate, up, down 4 x 8
    assert (lora.parameters, lora.gradients, lora.optimizer, lora.baseline) == (
        2 * p + 4 * adapters, 4 * adapters, 8 * adapters, 0)
    fp32 = footprint(TINY, Setup("reinforce", "ddp", 1, 1, 1, precision="fp32"))
    assert fp32.parameters + fp32.gradients + fp32.optimizer == 16 * p  # CPU: no bf16 copy


def test_llama_2_7b_full_finetune_needs_sharding_on_4_by_80gb_and_lora_fits_one_gpu():
    shape = shape_from_config(LLAMA_2_7B)
    four = plan(shape, "finetune", gpus=4, gpu_memory_gib=80, micro_batch=1, seq_len=512)
    ddp = [f for f in four.footprints if f.setup.strategy == "ddp" and not f.setup.lora]
    assert ddp and not any(f.fits(80) for f in ddp)  # 16 bytes x 6.7B + a bf16 baseline > 80 GiB
    assert min(f.total for f in ddp) > 16 * shape.parameters
    assert four.recommended is not None and four.recommended.setup.strategy == "fsdp"
    assert four.recommended.setup.lora is None and four.recommended.setup.checkpointing  # as fsdp.yaml runs it
    assert all(f.setup.checkpointing for f in four.footprints if f.setup.strategy == "fsdp")
    zero3 = next(f for f in four.footprints if f.setup.strategy == "zero3" and not f.setup.checkpointing)
    assert zero3.fits(80)
    one = plan(shape, "finetune", gpus=1, gpu_memory_gib=80, micro_batch=1, seq_len=512)
    assert one.lora_option is not None and one.lora_option.setup.strategy == "ddp"
    assert one.lora_option.total < 40 * GIB  # bf16 weights (13 GB), adapters, activations
    assert one.recommended is not None and one.recommended.setup.strategy == "zero3-offload"
    assert one.recommended.cpu_optimizer > 12 * shape.parameters * 0.99  # its price: CPU RAM
    tiny_gpus = plan(shape, "finetune", gpus=1, gpu_memory_gib=8, micro_batch=1, seq_len=512)
    assert tiny_gpus.recommended is None and tiny_gpus.lora_option is None


def test_smollm2_135m_fits_one_gpu_with_ddp_at_the_full_profile_batch():
    shape = shape_from_config(SMOLLM2_135M)
    result = plan(shape, "reinforce", gpus=1, gpu_memory_gib=80, micro_batch=16, seq_len=512)
    assert result.recommended is not None and result.recommended.setup == Setup("reinforce", "ddp", 1, 16, 512)
    assert result.recommended.activations > result.recommended.parameters  # small model: the logits dominate


def test_checkpointing_and_sharding_only_ever_lower_the_bytes():
    shape = shape_from_config(LLAMA_2_7B)
    for stage in ("reinforce", "finetune"):
        base = Setup(stage, "ddp", 8, 2, 1024)
        plain = footprint(shape, base).total
        assert footprint(shape, Setup(stage, "ddp", 8, 2, 1024, checkpointing=True)).total < plain
        assert footprint(shape, Setup(stage, "fsdp", 8, 2, 1024)).total < plain
        assert footprint(shape, Setup(stage, "fsdp", 16, 2, 1024)).total < footprint(shape, Setup(stage, "fsdp", 8, 2, 1024)).total
    assert usable_bytes(80) == int(0.9 * 80 * GIB) - GIB


def test_training_flops_per_token_is_six_n_plus_attention():
    shape = shape_from_config(SMOLLM2_135M)
    assert training_flops_per_token(shape, seq_len=512) == 6 * shape.parameters + 12 * 30 * 576 * 512


def test_cli_plans_a_local_folder_and_recommends_fsdp_for_7b(llama_7b: Path, tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(app, ["plan", "--model", str(llama_7b), "--gpus", "4", "--gpu-memory", "80",
                                 "--micro-batch", "1", "--seq-len", "512", "--format", "json", "-C", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["parameters"] == shape_from_config(LLAMA_2_7B).parameters
    finetune = report["stages"]["finetune"]
    assert finetune["recommended"]["strategy"] == "fsdp" and finetune["recommended"]["fits"]
    assert finetune["lora_option"]["lora_r"] == 16
    table = runner.invoke(app, ["plan", "--model", str(llama_7b), "--gpus", "4", "-C", str(tmp_path)],
                          env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "recommended: fsdp + gradient checkpointing" in table.output
    assert "GiB per GPU; params: launch.config=configs/accelerate/fsdp.yaml\n" in table.output  # it checkpoints itself
    assert "params: launch.config=configs/accelerate/ddp.yaml, finetune.lora.r=16" in table.output


def test_cli_reads_batch_sizes_from_a_profile(llama_7b: Path):
    root = Path(__file__).resolve().parents[2]
    result = CliRunner().invoke(app, ["plan", "--model", str(llama_7b), "--profile", "full", "--format", "json",
                                      "-C", str(root)])
    assert result.exit_code == 0, result.output
    reinforce = json.loads(result.output)["stages"]["reinforce"]["configurations"][0]
    assert (reinforce["micro_batch"], reinforce["seq_len"]) == (16, 512)  # profiles/full.yaml, params.yaml


def test_cli_finds_a_hub_id_in_the_local_cache_and_says_when_it_cannot(tmp_path: Path, monkeypatch):
    cache = tmp_path / "hub"
    snapshot = cache / "models--meta-llama--Llama-2-7b-hf" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(LLAMA_2_7B), encoding="utf-8")
    (cache / "models--meta-llama--Llama-2-7b-hf" / "refs").mkdir()
    (cache / "models--meta-llama--Llama-2-7b-hf" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runner = CliRunner()
    found = runner.invoke(app, ["plan", "--model", "meta-llama/Llama-2-7b-hf", "--format", "json", "-C", str(tmp_path)])
    assert found.exit_code == 0, found.output
    assert json.loads(found.output)["parameters"] == shape_from_config(LLAMA_2_7B).parameters
    missing = runner.invoke(app, ["plan", "--model", "meta-llama/Llama-2-13b-hf", "-C", str(tmp_path)],
                            env={"COLUMNS": "300"})
    assert missing.exit_code == 1
    assert "meta-llama/Llama-2-13b-hf" in missing.output and "HF_HUB_OFFLINE is set" in missing.output
    folder = runner.invoke(app, ["plan", "--model", str(tmp_path), "-C", str(tmp_path)], env={"COLUMNS": "300"})
    assert folder.exit_code == 1 and "without config.json" in folder.output
