"""Stage ``reinforce`` on the tiny random Llama, on CPU: outputs, provenance, crash and resume."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from pipeline import reinforce, training
from pipeline.errors import DatasetValidationError
from pipeline.models import load_model, load_tokenizer
from pipeline.params import parse_params
from pipeline.store import write_dataset
from pipeline.training_log import read_training_log
from schemas.blocks import BLOCKS

SETTINGS = {"learning_rate": 1e-2, "epochs": 2.0, "batch_size": 2, "micro_batch_size": 1,
            "warmup_ratio": 0.0, "checkpoint_every": 2, "seed": 0}  # 6 blocks: 6 steps


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _blocks_frame(n: int = 6) -> pd.DataFrame:
    generator = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        ids = torch.randint(1, 250, (16 if i % 3 else 12,), generator=generator).tolist()
        rows.append({
            "block_id": f"forget:book.txt@{i}", "doc_id": "forget:book.txt", "index": i, "token_start": 16 * i,
            "char_start": 64 * i, "char_end": 64 * (i + 1), "input_ids": ids, "world": 0,
            "translated_text": "unused", "translated_ids": ids, "alignment": list(range(len(ids))),
            "loss_mask": [1] * len(ids), "drop_reasons": [""] * len(ids), "anchors": [],
            "used_positions": [], "used_token_ids": [],
        })
    return pd.DataFrame(rows)


def _project(root: Path, tiny_model_dir: Path) -> Path:
    shutil.copytree(tiny_model_dir, root / "models" / "baseline")
    (root / "models" / "baseline" / "whp_model.json").write_text('{"source": "folder tiny"}\n', encoding="utf-8")
    write_dataset(_blocks_frame(), BLOCKS, stage="blocks", root=root)
    return root


def _params(**changes):
    return parse_params({"corpus": {"forget": ["unused.txt"]}, "reinforce": SETTINGS | changes})


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_model(folder, dtype="float32", device="cpu").state_dict()


def _log_without_speed(root: Path) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "tokens_per_s"} for row in read_training_log(root / reinforce.TRAINING_LOG)]


def test_stage_writes_reinforced_model(tmp_path: Path, tiny_model_dir: Path):
    root = _project(tmp_path, tiny_model_dir)
    summary = reinforce.run(_params(), root=root)
    assert summary["steps"] == 6 and summary["device"] == "cpu" and summary["resumed_from"] == 0

    output = root / "models" / "reinforced"
    reinforced = load_model(output, device="cpu")
    baseline = load_model(root / "models" / "baseline", device="cpu")
    probe = torch.tensor([_blocks_frame()["input_ids"][1]])
    with torch.no_grad():
        gap = (reinforced(probe).logits - baseline(probe).logits).abs().max().item()
    assert gap > 0.1
    assert next(reinforced.parameters()).dtype == torch.float32
    assert load_tokenizer(output).get_vocab() == load_tokenizer(root / "models" / "baseline").get_vocab()

    provenance = json.loads((output / "whp_model.json").read_text(encoding="utf-8"))
    assert provenance["params"] == {"reinforce": _params().reinforce.model_dump(mode="json")}
    assert provenance["steps"] == 6 and provenance["blocks"] == 6 and provenance["block_tokens"] == 2 * 12 + 4 * 16
    assert provenance["base_source"] == "folder tiny" and provenance["precision"] == "fp32"
    assert provenance["final_loss"] == pytest.approx(float(summary["final_loss"]), abs=1e-4)
    assert provenance["tokens_per_s"] > 0 and provenance["blocks_content_sha256"]

    rows = read_training_log(root / "plots" / "dvclive" / "reinforce")
    assert set(rows[0]) == set(training.LOG_FIELDS)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert provenance["training_log"] == "plots/dvclive/reinforce"
    assert not (root / "models" / ".reinforce-checkpoints").exists()
    assert sorted(p.name for p in (root / "models").iterdir()) == ["baseline", "reinforced"]


def test_crash_leaves_no_model_and_resumes(tmp_path: Path, tiny_model_dir: Path, monkeypatch):
    straight = _project(tmp_path / "straight", tiny_model_dir)
    reinforce.run(_params(), root=straight)

    root = _project(tmp_path / "crash", tiny_model_dir)
    output, checkpoints = root / "models" / "reinforced", root / "models" / ".reinforce-checkpoints"

    def crash(record):
        if record["step"] == 3:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(reinforce, "train", functools.partial(training.train, on_step=crash))
    with pytest.raises(RuntimeError, match="simulated crash"):
        reinforce.run(_params(), root=root)
    # what a rerun resumes from: the checkpoints and the log so far; no model
    assert sorted(p.name for p in (root / "models").iterdir()) == [".reinforce-checkpoints", ".reinforce-log", "baseline"]
    assert [p.name for p in checkpoints.iterdir()] == ["step-00000002.pt"]

    # the crashed run published nothing: no log either (it is written beside the checkpoints)
    assert not (root / reinforce.TRAINING_LOG).exists()
    monkeypatch.undo()
    summary = reinforce.run(_params(), root=root)
    assert summary["resumed_from"] == 2 and summary["steps"] == 6
    resumed, uninterrupted = _weights(output), _weights(straight / "models" / "reinforced")
    assert max((resumed[k] - uninterrupted[k]).abs().max().item() for k in resumed) <= 1e-6
    assert _log_without_speed(root) == _log_without_speed(straight)
    assert [row["step"] for row in _log_without_speed(root)] == [1, 2, 3, 4, 5, 6]

    # A crash in a later run (other params) keeps the previous complete model.
    before = _sha256(output / "model.safetensors")
    monkeypatch.setattr(reinforce, "train", functools.partial(training.train, on_step=crash))
    with pytest.raises(RuntimeError, match="simulated crash"):
        reinforce.run(_params(learning_rate=5e-3), root=root)
    assert _sha256(output / "model.safetensors") == before
    assert (output / "whp_model.json").is_file() and not list((root / "models").glob(".reinforced.tmp*"))
    assert [p.name for p in checkpoints.iterdir()] == ["step-00000002.pt"]


def test_empty_blocks_is_an_error(tmp_path: Path, tiny_model_dir: Path):
    root = tmp_path
    shutil.copytree(tiny_model_dir, root / "models" / "baseline")
    write_dataset(_blocks_frame().iloc[:0], BLOCKS, stage="blocks", root=root)
    with pytest.raises(DatasetValidationError, match="no blocks"):
        reinforce.run(_params(), root=root)


@pytest.mark.slow
def test_two_processes_log_and_publish_once(tmp_path: Path, tiny_model_dir: Path):
    """Two CPU processes (``torchrun``, gloo; train() then runs through accelerate): only the
    main one writes the DVCLive log, the checkpoints and the model, and the curve is the
    single process's (about 30 s)."""
    single = _project(tmp_path / "single", tiny_model_dir)
    reinforce.run(_params(), root=single)
    root = _project(tmp_path / "two", tiny_model_dir)
    (root / "params.yaml").write_text(yaml.safe_dump({"corpus": {"forget": ["unused.txt"]}, "reinforce": SETTINGS}))
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "pipeline.reinforce"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    provenance = json.loads((root / "models" / "reinforced" / "whp_model.json").read_text())
    assert provenance["world_size"] == 2 and provenance["steps"] == 6
    rows = read_training_log(root / reinforce.TRAINING_LOG)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # each step once, not once per process
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in read_training_log(single / reinforce.TRAINING_LOG)],
                                                      rel=1e-5)
    assert sorted(p.name for p in (root / reinforce.TRAINING_LOG).iterdir()) == ["metrics.json", "plots"]
    assert sorted(p.name for p in (root / "models").iterdir()) == ["baseline", "reinforced"]


def test_lora_with_gradient_checkpointing_publishes_a_merged_standard_model(tmp_path: Path, tiny_model_dir: Path):
    lora = {"r": 2, "alpha": 4.0, "target_modules": ["o_proj", "down_proj"], "dropout": 0.0}
    root = _project(tmp_path, tiny_model_dir)
    summary = reinforce.run(_params(lora=lora, gradient_checkpointing=True), root=root)
    assert summary["steps"] == 6
    output = root / "models" / "reinforced"
    reinforced, baseline = _weights(output), _weights(root / "models" / "baseline")
    assert reinforced.keys() == baseline.keys()
    changed = {name for name in reinforced if (reinforced[name] - baseline[name]).abs().max() > 0}
    assert changed == {f"model.layers.{i}.{m}.weight" for i in range(2) for m in ("self_attn.o_proj", "mlp.down_proj")}
    provenance = json.loads((output / "whp_model.json").read_text(encoding="utf-8"))
    assert provenance["lora"] == lora and provenance["gradient_checkpointing"] is True
    assert provenance["strategy"] == "single" and provenance["dtype"] == "float32"
    assert not (root / "models" / ".reinforce-checkpoints").exists()
