"""The launcher: who owns which work, the command it re-executes, a missing config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.launch import LAUNCHED, Ranks, launch_command
from pipeline.sharding import fill_deepspeed_auto
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


# --- the shipped accelerate configs, read by accelerate's own launcher code ----------------------

CONFIGS = REPO / "configs" / "accelerate"


def _launch_env(name: str, monkeypatch) -> dict[str, str]:
    """The environment ``accelerate launch --config_file configs/accelerate/<name>.yaml`` gives the
    processes it starts (its parser, its validation, its env preparation), applied here."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    monkeypatch.chdir(REPO)  # the configs name files relative to the project root, as the stages run
    args = launch_command_parser().parse_args(
        ["--config_file", str(CONFIGS / f"{name}.yaml"), "--num_processes", "2", "-m", "pipeline.reinforce"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    for key, value in env.items():
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(key, value)
    return env


def test_every_shipped_config_is_a_valid_accelerate_config():
    from accelerate.commands.config.config_args import load_config_from_file

    names = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    assert names == ["ddp", "deepspeed_zero3", "deepspeed_zero3_offload", "fsdp"]
    for name in names:
        config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
        assert config.num_machines == 1 and not config.use_cpu, name


def test_ddp_config_starts_data_parallel_processes(monkeypatch):
    env = _launch_env("ddp", monkeypatch)
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16" and "ACCELERATE_USE_FSDP" not in env


def test_fsdp_config_gives_full_shard_bf16_and_activation_checkpointing(monkeypatch):
    from accelerate import FullyShardedDataParallelPlugin

    env = _launch_env("fsdp", monkeypatch)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    plugin = FullyShardedDataParallelPlugin()  # built from the environment, as the Accelerator does
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True  # FULL_SHARD
    assert plugin.activation_checkpointing is True
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"  # one unit per decoder layer
    assert plugin.cpu_ram_efficient_loading is True
    assert type(plugin.cpu_offload).__name__ == "OffloadPolicy"  # the no-offload policy (CPUOffloadPolicy offloads)
    assert str(plugin.state_dict_type).endswith("SHARDED_STATE_DICT")  # checkpoints: each process its shards


@pytest.mark.parametrize("name, offload", [("deepspeed_zero3", "none"), ("deepspeed_zero3_offload", "cpu")])
def test_zero3_configs_pass_deepspeeds_own_validation(name: str, offload: str, monkeypatch):
    from accelerate import DeepSpeedPlugin
    from deepspeed.runtime.config import DeepSpeedConfig

    env = _launch_env(name, monkeypatch)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["ACCELERATE_DEEPSPEED_ZERO3_INIT"] == "true"
    plugin = DeepSpeedPlugin()  # reads the JSON named by the config, as the Accelerator does
    assert plugin.zero_stage == 3 and plugin.hf_ds_config.is_zero3()
    # What train() fills in from its settings before prepare() (micro-batch 2, 3 accumulation
    # steps, one process here: DeepSpeed's check below counts the processes of this test), then
    # accelerate from the hidden size (64).
    filled = fill_deepspeed_auto(plugin, micro_batch_size=2, accumulation=3, world_size=1, max_grad_norm=0.5)
    assert filled == {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 3, "train_batch_size": 6,
                      "gradient_clipping": 0.5}
    assert {key: plugin.deepspeed_config[key] for key in filled} == filled
    hidden = 64
    plugin.deepspeed_config_process(must_match=False, **{
        "zero_optimization.reduce_bucket_size": hidden * hidden,
        "zero_optimization.stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
        "zero_optimization.stage3_param_persistence_threshold": 10 * hidden,
    })
    config = DeepSpeedConfig(plugin.deepspeed_config)
    assert config.zero_optimization_stage == 3 and config.bfloat16_config.enabled
    assert config.zero_config.gather_16bit_weights_on_model_save  # the saved model is a full HF folder
    assert config.zero_config.offload_optimizer.device == offload
    assert (config.train_batch_size, config.gradient_accumulation_steps, config.gradient_clipping) == (6, 3, 0.5)


def test_a_deepspeed_value_that_contradicts_the_settings_names_the_file(tmp_path: Path, monkeypatch):
    import json

    from accelerate import DeepSpeedPlugin

    config = json.loads((REPO / "configs" / "deepspeed" / "zero3.json").read_text())
    config["train_micro_batch_size_per_gpu"] = 8
    (tmp_path / "fixed.json").write_text(json.dumps(config))
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(tmp_path / "fixed.json"))
    plugin = DeepSpeedPlugin(hf_ds_config=str(tmp_path / "fixed.json"))
    with pytest.raises(PipelineError, match=r"fixed.json.*train_micro_batch_size_per_gpu is 8 there, 2 from"):
        fill_deepspeed_auto(plugin, micro_batch_size=2, accumulation=1, world_size=1, max_grad_norm=1.0)
    # Two processes of 4 accumulation steps of 8: the file's micro-batch agrees.
    filled = fill_deepspeed_auto(plugin, micro_batch_size=8, accumulation=4, world_size=2, max_grad_norm=1.0)
    assert plugin.deepspeed_config["train_batch_size"] == filled["train_batch_size"] == 64


def test_deepspeed_validation_rejects_a_misspelt_key():
    """The check above can fail: DeepSpeed's config class refuses unknown ZeRO settings."""
    import json

    from deepspeed.runtime.config import DeepSpeedConfig

    config = json.loads((REPO / "configs" / "deepspeed" / "zero3.json").read_text())
    config.update({"train_micro_batch_size_per_gpu": 1, "train_batch_size": 1, "gradient_accumulation_steps": 1,
                   "gradient_clipping": 1.0})
    config["zero_optimization"] = {k: v for k, v in config["zero_optimization"].items() if v != "auto"}
    DeepSpeedConfig(config)
    config["zero_optimization"]["stage3_max_live_parameter"] = 5
    with pytest.raises(Exception, match="stage3_max_live_parameter"):
        DeepSpeedConfig(config)
