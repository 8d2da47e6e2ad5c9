"""Stage ``finetune`` on the tiny random Llama, on CPU: the pinned version's checks, outputs,
model card, resume, and the retain term."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from pipeline import finetune, training
from pipeline.batches import BlockBatches
from pipeline.core.sampling import evenly_spaced
from pipeline.errors import DatasetValidationError, ParamsError
from pipeline.models import load_model, load_tokenizer
from pipeline.params import parse_params
from pipeline.store import dataset_dir, read_manifest, write_dataset
from pipeline.training_log import read_training_log
from pipeline.versions import DatasetIntegrityError, VersionNotFoundError
from schemas.dataset import IGNORE, TRAINING
from schemas.retain import RETAIN_BLOCKS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = {"learning_rate": 1e-2, "epochs": 2.0, "batch_size": 2, "micro_batch_size": 1,
            "warmup_ratio": 0.0, "checkpoint_every": 2, "seed": 0}  # 4 blocks: 4 steps
TOP_K = 3


def _training_frame(n: int = 4, vocab: int = 250) -> pd.DataFrame:
    generator = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        length = 12 if i % 3 == 2 else 16
        ids = torch.randint(1, vocab, (length,), generator=generator).tolist()
        mask = [0 if j % 5 == 0 else 1 for j in range(length)]
        top_ids = torch.randint(1, vocab, (length, TOP_K), generator=generator).tolist()
        top_probs = (torch.rand(length, TOP_K, generator=generator) / TOP_K).tolist()
        rows.append({
            "block_id": f"forget:book.txt@{i}", "doc_id": "forget:book.txt", "char_start": 64 * i,
            "char_end": 64 * (i + 1), "passage_ids": [f"p{i}"], "input_ids": ids,
            "labels": [t[0] if m else IGNORE for t, m in zip(top_ids, mask)], "loss_mask": mask,
            "top_ids": top_ids, "top_probs": top_probs, "confidence": [max(p) for p in top_probs],
            "alpha": 5.0, "world": 0, "dictionary_sha256": "a" * 64, "corrections_sha256": "b" * 64,
        })
    return pd.DataFrame(rows)


def _retain_frame(vocab: int = 250) -> pd.DataFrame:
    generator = torch.Generator().manual_seed(1)
    rows = []
    for doc in ("retain:novel.txt", "retain:other.txt"):
        for index in range(3):
            rows.append({
                "block_id": f"{doc}@{index}", "doc_id": doc, "index": index, "token_start": 14 * index,
                "char_start": 50 * index, "char_end": 50 * (index + 1),
                "input_ids": torch.randint(1, vocab, (14,), generator=generator).tolist(),
                "split": "heldout" if index == 2 else "train",
            })
    return pd.DataFrame(rows)


def _project(root: Path, tiny_model_dir: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)  # versions resolve names through git
    shutil.copytree(tiny_model_dir, root / "models" / "baseline")
    (root / "models" / "baseline" / "whp_model.json").write_text('{"source": "folder tiny"}\n', encoding="utf-8")
    write_dataset(_training_frame(), TRAINING, stage="dataset", root=root)
    write_dataset(_retain_frame(), RETAIN_BLOCKS, stage="retain_blocks", root=root)
    return root


def _params(retain: dict | None = None, **changes):
    finetune_section = SETTINGS | {"retain": {"kind": "kl", "weight": 1.0} | (retain or {})} | changes
    return parse_params({"corpus": {"forget": ["unused.txt"]}, "finetune": finetune_section})


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_model(folder, dtype="float32", device="cpu").state_dict()


def _max_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _log_without_speed(root: Path) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "tokens_per_s"} for row in read_training_log(root / finetune.TRAINING_LOG)]


def test_a_run_writes_a_loadable_model_with_its_card(tmp_path: Path, tiny_model_dir: Path):
    root = _project(tmp_path, tiny_model_dir)
    summary = finetune.run(_params(), root=root)
    content_sha = read_manifest("dataset", root)["content_sha256"]
    assert summary["steps"] == 4 and summary["device"] == "cpu" and summary["resumed_from"] == 0

    output = root / "models" / "unlearned"
    unlearned, baseline = load_model(output, device="cpu"), load_model(root / "models" / "baseline", device="cpu")
    assert next(unlearned.parameters()).dtype == torch.float32
    assert _max_gap(unlearned.state_dict(), baseline.state_dict()) > 1e-3
    assert load_tokenizer(output).get_vocab() == load_tokenizer(root / "models" / "baseline").get_vocab()
    assert (output / "tokenizer.json").read_bytes() == (root / "models" / "baseline" / "tokenizer.json").read_bytes()

    card = (output / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: transformers")
    assert content_sha in card and "`workspace`" in card and "label_type: soft" in card
    assert "the mass outside the top-k: `renormalise`" in card
    assert "optimiser steps | 4 |" in card and "retain term: `kl` x 1.0 on 4 retain blocks" in card
    provenance = json.loads((output / "whp_model.json").read_text(encoding="utf-8"))
    assert provenance["dataset"] == {"version": "workspace", "commit": None, "content_sha256": content_sha, "rows": 4}
    assert provenance["params"] == {"finetune": _params().finetune.model_dump(mode="json")}
    assert provenance["retain_block_ids"] == ["retain:novel.txt@0", "retain:novel.txt@1",
                                             "retain:other.txt@0", "retain:other.txt@1"]
    assert provenance["trained_positions"] == sum(map(sum, _training_frame()["loss_mask"]))
    assert provenance["final_loss"] == pytest.approx(float(summary["final_loss"]), abs=1e-4)

    rows = read_training_log(root / finetune.TRAINING_LOG)
    assert set(rows[0]) == set(training.LOG_FIELDS) | {"forget_loss", "retain_loss"}
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row in rows:  # weight 1.0: the logged loss is the sum of the two logged terms
        assert row["loss"] == pytest.approx(row["forget_loss"] + row["retain_loss"], rel=1e-6)
        assert row["retain_loss"] > 0 and row["forget_loss"] > 0
    assert not (root / finetune.CHECKPOINTS).exists()
    assert sorted(p.name for p in (root / "models").iterdir()) == ["baseline", "unlearned"]


def test_a_missing_pinned_version_is_a_clear_error(tmp_path: Path, tiny_model_dir: Path):
    root = _project(tmp_path, tiny_model_dir)
    with pytest.raises(VersionNotFoundError, match="unknown dataset version 'v9'.*known versions: none yet"):
        finetune.run(_params(dataset="v9"), root=root)
    assert not (root / "models" / "unlearned").exists()


def test_a_tampered_dataset_fails_the_hash_check(tmp_path: Path, tiny_model_dir: Path):
    root = _project(tmp_path, tiny_model_dir)
    part = next(dataset_dir("dataset", root).glob("part-*.parquet"))
    # Same schema, other targets: what a hand edit of the labels would give.
    frame = _training_frame()
    frame.loc[0, "labels"] = [IGNORE] * len(frame.loc[0, "labels"])
    write_dataset(frame, TRAINING, stage="dataset", root=tmp_path / "other")
    shutil.copyfile(next(dataset_dir("dataset", tmp_path / "other").glob("part-*.parquet")), part)
    with pytest.raises(DatasetIntegrityError, match="manifest says"):
        finetune.run(_params(), root=root)
    assert not (root / "models" / "unlearned").exists() and not (root / finetune.TRAINING_LOG).exists()


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path: Path, tiny_model_dir: Path):
    straight = _project(tmp_path / "straight", tiny_model_dir)
    finetune.run(_params(), root=straight)

    root = _project(tmp_path / "interrupted", tiny_model_dir)
    summary = finetune.run(_params(), root=root, max_steps_this_run=2)
    assert summary["completed"] is False and summary["steps"] == 2
    assert not (root / "models" / "unlearned").exists()
    assert [p.name for p in (root / finetune.CHECKPOINTS).iterdir()] == ["step-00000002.pt"]

    summary = finetune.run(_params(), root=root)
    assert summary["resumed_from"] == 2 and summary["steps"] == 4
    assert _max_gap(_weights(root / "models" / "unlearned"), _weights(straight / "models" / "unlearned")) <= 1e-6
    assert _log_without_speed(root) == _log_without_speed(straight)
    provenance = json.loads((root / "models" / "unlearned" / "whp_model.json").read_text(encoding="utf-8"))
    assert provenance["resumed_from_step"] == 2


def test_a_checkpoint_of_another_objective_is_not_resumed(tmp_path: Path, tiny_model_dir: Path):
    root = _project(tmp_path, tiny_model_dir)
    finetune.run(_params(), root=root, max_steps_this_run=2)
    summary = finetune.run(_params(label_type="hard"), root=root)
    assert summary["resumed_from"] == 0 and summary["steps"] == 4


def test_train_layers_changes_only_the_bottom_layers_and_keys_the_checkpoints(tmp_path: Path, tiny_model_dir: Path):
    root = _project(tmp_path, tiny_model_dir)
    finetune.run(_params(train_layers=0.5), root=root)
    unlearned, baseline = _weights(root / "models" / "unlearned"), _weights(root / "models" / "baseline")
    changed = {k for k in unlearned if not torch.equal(unlearned[k], baseline[k])}
    assert changed and all(k.startswith("model.layers.0.") for k in changed)
    assert torch.equal(unlearned["model.embed_tokens.weight"], baseline["model.embed_tokens.weight"])
    provenance = json.loads((root / "models" / "unlearned" / "whp_model.json").read_text(encoding="utf-8"))
    assert provenance["trained_layers"] == {"trained": 1, "of": 2}
    card = (root / "models" / "unlearned" / "README.md").read_text(encoding="utf-8")
    assert "trained: the weights of the bottom 1 of 2 decoder layers (`finetune.train_layers`)" in card

    again = _project(tmp_path / "again", tiny_model_dir)
    finetune.run(_params(train_layers=0.5), root=again, max_steps_this_run=2)
    assert finetune.run(_params(), root=again, max_steps_this_run=1)["resumed_from"] == 0  # other weights train
    with pytest.raises(ParamsError, match=r"finetune.train_layers: .*greater than 0"):
        _params(train_layers=0)
    with pytest.raises(ParamsError, match=r"finetune.train_layers: .*less than or equal to 1"):
        _params(train_layers=1.5)


def test_the_retain_term_changes_the_result(tmp_path: Path, tiny_model_dir: Path):
    results = {}
    for name, retain in (("off", {"weight": 0.0}), ("kl", {"weight": 5.0}), ("lm", {"kind": "lm", "weight": 5.0})):
        root = _project(tmp_path / name, tiny_model_dir)
        finetune.run(_params(retain), root=root)
        results[name] = _weights(root / "models" / "unlearned")
        for row in read_training_log(root / finetune.TRAINING_LOG):  # each term logged apart
            if name == "off":
                assert "retain_loss" not in row and row["forget_loss"] == pytest.approx(row["loss"], rel=1e-6)
            else:
                assert row["loss"] == pytest.approx(row["forget_loss"] + 5.0 * row["retain_loss"], rel=1e-6)
    assert _max_gap(results["off"], results["kl"]) > 1e-4
    assert _max_gap(results["off"], results["lm"]) > 1e-4
    assert _max_gap(results["kl"], results["lm"]) > 1e-4


def test_kind_none_needs_no_retain_blocks_and_kl_needs_train_blocks(tmp_path: Path, tiny_model_dir: Path):
    root = _project(tmp_path, tiny_model_dir)
    shutil.rmtree(dataset_dir("retain_blocks", root))
    summary = finetune.run(_params({"kind": "none"}, label_type="mixed", epochs=0.5), root=root)
    assert summary["steps"] == 1

    write_dataset(_retain_frame().query("split == 'heldout'"), RETAIN_BLOCKS, stage="retain_blocks", root=root)
    with pytest.raises(DatasetValidationError, match="no 'train' blocks"):
        finetune.run(_params(), root=root)


def test_retain_pairing_is_spread_and_fixed_by_index():
    assert [finetune.retain_partner(i, n_forget=4, n_retain=2) for i in range(4)] == [0, 0, 1, 1]
    assert [finetune.retain_partner(i, n_forget=3, n_retain=9) for i in range(3)] == [0, 3, 6]
    assert evenly_spaced(10, 3) == [0, 3, 6] and evenly_spaced(3, None) == [0, 1, 2] == evenly_spaced(3, 5)
    forget = BlockBatches([[1, 2, 3], [4, 5], [6]])
    paired = finetune.RetainPairedBatches(forget, [[7, 8], [9, 10, 11]])
    batch = paired([2, 0])
    assert batch["retain_input_ids"].tolist() == [[9, 10, 11], [7, 8, 0]]
    assert batch["retain_attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["input_ids"].tolist() == [[6, 0, 0], [1, 2, 3]]


def test_positions_are_the_counts_the_objective_returns(tiny_model_dir: Path):
    """A launched run scales each loss by the step's positions before running the model."""
    from pipeline.core.losses import UnlearningLoss

    frame = _training_frame()
    model = load_model(tiny_model_dir, dtype="float32", device="cpu")
    for label_type in ("hard", "soft", "mixed"):
        batch = finetune.forget_batches(frame, label_type=label_type, pad_id=0)([0, 2])  # 16 and 12 positions
        if label_type != "soft":  # a trained position whose label was dropped: hard counts it out
            batch["labels"][0, 1] = IGNORE
        objective = UnlearningLoss(label_type=label_type)
        with torch.no_grad():
            _, counted = objective(model, batch)
        assert objective.positions(batch) == counted
        assert counted == (12 + 9 - (label_type == "hard"))


def test_an_offloaded_baseline_gives_the_retain_kl_of_one_in_memory(tiny_model_dir: Path):
    """retain.offload keeps the baseline's weights in CPU RAM behind accelerate's hooks (its
    parameters on the meta device): the objective must call it as it is, not move it."""
    from accelerate import cpu_offload

    from pipeline.core.losses import UnlearningLoss

    model = load_model(tiny_model_dir, dtype="float32", device="cpu")
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01 * torch.randn_like(param))
    batch = finetune.RetainPairedBatches(
        finetune.forget_batches(_training_frame(), label_type="soft", pad_id=0), _retain_frame()["input_ids"].tolist(),
    )([0, 1])
    losses = []
    for offload in (False, True):
        reference = load_model(tiny_model_dir, dtype="float32", device="cpu")
        if offload:
            reference = cpu_offload(reference, execution_device=torch.device("cpu"))
            assert next(reference.parameters()).device.type == "meta"
        objective = UnlearningLoss(label_type="soft", retain_kind="kl", retain_weight=1.0, reference=reference)
        with torch.no_grad():
            losses.append(objective.with_terms(model, batch)[2]["retain_loss"])
    assert losses[0] > 0 and losses[1] == pytest.approx(losses[0], rel=1e-6)


# --- LoRA ---------------------------------------------------------------------------------------

LORA = {"r": 4, "alpha": 8.0, "target_modules": ["q_proj", "v_proj", "gate_proj"], "dropout": 0.0}


def test_lora_publishes_a_merged_model_that_computes_what_the_trained_one_did(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch,
):
    trained = {}

    def keep_trained(model, result, **kwargs):
        trained["model"] = model
        return training.publish_trained(model, result, **kwargs)

    monkeypatch.setattr(finetune, "publish_trained", keep_trained)
    root = _project(tmp_path / "lora", tiny_model_dir)
    finetune.run(_params(lora=LORA), root=root)

    output = root / "models" / "unlearned"
    merged, baseline = _weights(output), _weights(root / "models" / "baseline")
    assert merged.keys() == baseline.keys() and not any("lora" in name for name in merged)  # a plain folder
    changed = sorted(name for name in merged if (merged[name] - baseline[name]).abs().max() > 0)
    assert changed == sorted(f"model.layers.{i}.{m}.weight" for i in range(2)
                             for m in ("self_attn.q_proj", "self_attn.v_proj", "mlp.gate_proj"))
    probe = torch.tensor([_training_frame()["input_ids"][1]])
    with torch.no_grad():
        published = load_model(output, device="cpu")(probe).logits
        adapted = trained["model"](input_ids=probe).logits
        with trained["model"].disable_adapter():
            off = trained["model"](input_ids=probe).logits
    assert (published - adapted).abs().max().item() < 1e-5
    assert (adapted - off).abs().max().item() > 1e-3  # the adapters did learn something

    provenance = json.loads((output / "whp_model.json").read_text(encoding="utf-8"))
    assert provenance["lora"] == LORA and provenance["params"]["finetune"]["lora"] == LORA
    card = (output / "README.md").read_text(encoding="utf-8")
    assert "trained: LoRA r=4, alpha=8.0, dropout=0.0 on `q_proj`, `v_proj`, `gate_proj`, merged" in card
    # The frozen baseline of the retain KL was the same model with its adapters off: the KL
    # starts at 0 (the adapters' B starts at 0) and grows as they learn.
    rows = read_training_log(root / finetune.TRAINING_LOG)
    assert rows[0]["retain_loss"] == pytest.approx(0.0, abs=1e-6) and rows[-1]["retain_loss"] > 1e-6


def test_a_lora_run_resumes_from_adapter_checkpoints_and_never_from_a_full_runs(tmp_path: Path, tiny_model_dir: Path):
    straight = _project(tmp_path / "straight", tiny_model_dir)
    finetune.run(_params(lora=LORA), root=straight)

    root = _project(tmp_path / "resumed", tiny_model_dir)
    finetune.run(_params(lora=LORA), root=root, max_steps_this_run=2)
    saved = torch.load(root / finetune.CHECKPOINTS / "step-00000002.pt", weights_only=True)["model"]
    assert saved and all("lora_" in name for name in saved)  # the frozen baseline is not copied
    assert finetune.run(_params(), root=root, max_steps_this_run=1)["resumed_from"] == 0  # a full run's key
    finetune.run(_params(lora=LORA), root=root, max_steps_this_run=2)
    summary = finetune.run(_params(lora=LORA), root=root)
    assert summary["resumed_from"] == 2 and summary["steps"] == 4
    assert _max_gap(_weights(root / "models" / "unlearned"), _weights(straight / "models" / "unlearned")) <= 1e-6
    assert _log_without_speed(root) == _log_without_speed(straight)


def test_lora_targets_must_exist(tmp_path: Path, tiny_model_dir: Path):
    root = _project(tmp_path, tiny_model_dir)
    with pytest.raises(ParamsError, match=r"finetune.lora.target_modules \['qkv_proj'\]"):
        finetune.run(_params(lora=LORA | {"target_modules": ["qkv_proj"]}), root=root)
    assert not (root / "models" / "unlearned").exists()
    with pytest.raises(ParamsError, match=r"finetune.lora.r: .*greater than or equal to 1"):
        _params(lora=LORA | {"r": 0})
    with pytest.raises(ParamsError, match=r"finetune.lora.rank: unknown key"):
        _params(lora={"rank": 8})
    assert _params(lora={"r": 8}).finetune.lora.target_modules[-1] == "down_proj"  # every Llama matrix


# --- several processes (gloo on the CPU) ---------------------------------------------------------

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
_STOP_AFTER_TWO_STEPS = (
    "from pathlib import Path\nfrom pipeline import finetune\nfrom pipeline.params import load_params\n"
    "finetune.run(load_params('params.yaml'), root=Path('.'), max_steps_this_run=2)\n"
)


def _launched_project(root: Path, tiny_model_dir: Path, config: str, **changes) -> Path:
    """A project whose params.yaml starts ``finetune`` under ``accelerate launch`` (launch.config)."""
    import yaml

    _project(root, tiny_model_dir)
    raw = {"corpus": {"forget": ["unused.txt"]}, "launch": {"config": str(CONFIGS / f"{config}.yaml"), "num_processes": 2},
           "finetune": _params(**changes).finetune.model_dump(mode="json")}
    (root / "params.yaml").write_text(yaml.safe_dump(raw), encoding="utf-8")
    return root


def _launch(command: list[str], root: Path, **env: str) -> str:
    import os
    import sys

    environment = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"} | env
    result = subprocess.run([sys.executable, *command], cwd=root, env=environment, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stderr


def _same_curve(root: Path, single: Path) -> None:
    rows, expected = read_training_log(root / finetune.TRAINING_LOG), read_training_log(single / finetune.TRAINING_LOG)
    assert [r["step"] for r in rows] == [r["step"] for r in expected] == [1, 2, 3, 4]  # each step once
    for name in ("loss", "forget_loss", "retain_loss"):
        assert [r[name] for r in rows] == pytest.approx([r[name] for r in expected], rel=1e-5, abs=1e-6), name


@pytest.mark.distributed
def test_two_ddp_processes_follow_the_one_process_curve(tmp_path: Path, tiny_model_dir: Path):
    """launch.config: configs/accelerate/ddp.yaml; `python -m pipeline.finetune` relaunches itself
    (about 30 s on a loaded 2-core CPU)."""
    single = _project(tmp_path / "single", tiny_model_dir)
    finetune.run(_params(), root=single)
    root = _launched_project(tmp_path / "ddp", tiny_model_dir, "ddp")
    log = _launch(["-m", "pipeline.finetune"], root)
    assert "accelerate.commands.launch" in log
    _same_curve(root, single)
    # Adam's steps are about lr = 1e-2: 1e-4 is 1% of one step.
    assert _max_gap(_weights(root / "models" / "unlearned"), _weights(single / "models" / "unlearned")) < 1e-4
    provenance = json.loads((root / "models" / "unlearned" / "whp_model.json").read_text())
    assert (provenance["strategy"], provenance["world_size"], provenance["precision"]) == ("ddp", 2, "fp32")
    assert sorted(p.name for p in (root / "models").iterdir()) == ["baseline", "unlearned"]


@pytest.mark.distributed
def test_fsdp2_shards_checkpoints_resumes_and_publishes_the_one_process_model(tmp_path: Path, tiny_model_dir: Path):
    """configs/accelerate/fsdp.yaml on two CPU processes (FSDP2 over gloo, the test switch
    WHP_FSDP_ON_CPU): the trained model and the retain KL's baseline sharded, activation
    checkpointing from the config, a run stopped after 2 steps resumed from its sharded
    checkpoint (about 60 s)."""
    single = _project(tmp_path / "single", tiny_model_dir)
    finetune.run(_params(), root=single)
    root = _launched_project(tmp_path / "fsdp", tiny_model_dir, "fsdp")
    (root / "stop.py").write_text(_STOP_AFTER_TWO_STEPS, encoding="utf-8")
    _launch(["-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "fsdp.yaml"), "--num_processes", "2",
             "stop.py"], root, WHP_FSDP_ON_CPU="1")
    checkpoint = root / finetune.CHECKPOINTS / "step-00000002"
    assert [p.name for p in (root / finetune.CHECKPOINTS).iterdir()] == [checkpoint.name]
    assert {"whp_state.pt", "pytorch_model_fsdp_0", "optimizer_0", "random_states_0.pkl",
            "random_states_1.pkl"} <= {p.name for p in checkpoint.iterdir()}
    assert not (root / "models" / "unlearned").exists()

    log = _launch(["-m", "pipeline.finetune"], root, WHP_FSDP_ON_CPU="1")
    assert f"resuming from {finetune.CHECKPOINTS / checkpoint.name}" in log
    _same_curve(root, single)
    assert _max_gap(_weights(root / "models" / "unlearned"), _weights(single / "models" / "unlearned")) < 1e-4
    provenance = json.loads((root / "models" / "unlearned" / "whp_model.json").read_text())
    assert (provenance["strategy"], provenance["world_size"], provenance["resumed_from_step"]) == ("fsdp", 2, 2)
    assert provenance["gradient_checkpointing"] is True  # fsdp_activation_checkpointing
    assert not (root / finetune.CHECKPOINTS).exists()


@pytest.mark.distributed
def test_lora_under_fsdp2_publishes_the_one_process_merged_model(tmp_path: Path, tiny_model_dir: Path):
    """LoRA on a sharded model; its frozen baseline is the sharded model with adapters off (about 30 s)."""
    single = _project(tmp_path / "single", tiny_model_dir)
    finetune.run(_params(lora=LORA), root=single)
    root = _launched_project(tmp_path / "fsdp", tiny_model_dir, "fsdp", lora=LORA)
    _launch(["-m", "pipeline.finetune"], root, WHP_FSDP_ON_CPU="1")
    _same_curve(root, single)
    assert _max_gap(_weights(root / "models" / "unlearned"), _weights(single / "models" / "unlearned")) < 1e-5
    assert json.loads((root / "models" / "unlearned" / "whp_model.json").read_text())["lora"] == LORA
