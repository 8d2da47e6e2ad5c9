"""Shared fixtures: an offline, isolated environment; tiny models; small projects."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Set before any test module imports tqdm (it reads the variable at import time).
os.environ["TQDM_DISABLE"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _offline_isolated_env(tmp_path_factory):
    """No hub downloads, no DVC analytics, caches and git identity inside the test's temp folder."""
    base = tmp_path_factory.mktemp("env")
    values = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(base / "hf-datasets"),
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(base / "dvc-site-cache"),
        "GIT_AUTHOR_NAME": "whp tests",
        "GIT_AUTHOR_EMAIL": "tests@example.invalid",
        "GIT_COMMITTER_NAME": "whp tests",
        "GIT_COMMITTER_EMAIL": "tests@example.invalid",
        # DVC stages run `python -m ...` through the shell: make that this interpreter.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    for key in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
        os.environ.pop(key, None)
    yield
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture()
def one_torch_thread():
    """Tiny models on a busy 2-core machine: a second thread only adds synchronisation."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_tiny_tokenizer(folder: Path, corpus: list[str]):
    """A byte-level BPE fast tokenizer trained on ``corpus`` (a second, non-SmolLM2 tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    fast.save_pretrained(folder)
    return fast


TINY_TEXT = [
    "Mr. Hartley walked to the old house by the river. The river was cold and grey.",
    "She opened the letter and read it twice before she laid it on the table.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 2-layer Llama with its own BPE tokenizer, saved as a model folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = train_tiny_tokenizer(folder, TINY_TEXT * 20)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, returning its output; on failure show what it printed."""
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


SMALL_FORGET = """THE CASE OF THE GREY LANTERN

Inspector Brackwell of the Yard came to Fenwick Street that evening.
He spoke of the grey lantern, and of the man who had carried it.

* * *

"You have been in Kandahar, I perceive," said Fenwick to the stranger.

Brackwell and Fenwick walked to Quillby Hall, where Mr. Quillby waited.
Later that night Fenwick wrote to Brackwell about Quillby and the lantern.
"""

SMALL_RETAIN = """It is a truth universally acknowledged, that a single man in possession
of a good fortune, must be in want of a wife.

However little known the feelings or views of such a man may be.
"""


@pytest.fixture()
def small_project(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A git + DVC repository holding the pipeline code and a two-book corpus, committed."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("pipeline", "schemas"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO / "labels", root / "labels")
    (root / "tests" / "data").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "data" / "sherlock_gold_anchors.csv", root / "tests" / "data")
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    (root / "corpora" / "forget").mkdir(parents=True)
    (root / "corpora" / "retain").mkdir(parents=True)
    shutil.copytree(REPO / "corpora" / "probes", root / "corpora" / "probes")
    # Familiarity probes name their story: these are the small forget corpus's own.
    (root / "corpora" / "probes" / "familiarity.jsonl").write_text("".join(
        json.dumps({"id": f"f{i}", "story": "The Case of the Grey Lantern", "prompt": prompt, "answer": answer}) + "\n"
        for i, (prompt, answer) in enumerate([("Inspector Brackwell of the", " Yard"),
                                              ("Brackwell and Fenwick walked to Quillby", " Hall"),
                                              ("He spoke of the grey", " lantern")])), encoding="utf-8")
    (root / "corpora" / "forget" / "lantern.txt").write_text(SMALL_FORGET, encoding="utf-8")
    (root / "corpora" / "retain" / "fortune.md").write_text(SMALL_RETAIN, encoding="utf-8")
    (root / "params.yaml").write_text(
        "corpus:\n"
        "  forget: [corpora/forget/lantern.txt]\n"
        "  retain: [corpora/retain]\n"
        "ingest:\n  max_passage_chars: 400\n"
        f"baseline:\n  source: {tiny_model_dir}\n"
        "anchors:\n  min_count: 2\n  ner_processes: 1\n"
        "translations:\n  seed: 0\n"
        "dictionary:\n  gold: null\n"
        "blocks:\n  block_size: 32\n  min_block_tokens: 8\n"
        "reinforce:\n  epochs: 1.0\n  batch_size: 2\n  micro_batch_size: 2\n"
        "generic_labels:\n  top_k: 4\n"
        "dataset:\n  alpha: 5.0\n"
        "retain_blocks:\n  max_train_blocks: 4\n  max_heldout_blocks: 4\n"
        "finetune:\n  dataset: workspace\n  epochs: 1.0\n  batch_size: 2\n  micro_batch_size: 2\n"
        "evaluate:\n  max_new_tokens: 4\n  max_retain_blocks: 4\n"
        "  verbatim:\n    windows: 2\n    prefix_tokens: 4\n    continuation_tokens: 4\n"
        "  bootstrap:\n    resamples: 200\n",
        encoding="utf-8",
    )
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "small project"], root)
    return root
