"""Shared fixtures: an offline, isolated environment; tiny models; small projects."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
        "anchor_check:\n  domains: []\n"
        "blocks:\n  block_size: 32\n  min_block_tokens: 8\n"
        "reinforce:\n  epochs: 1.0\n  batch_size: 2\n  micro_batch_size: 2\n"
        "generic_labels:\n  top_k: 4\n"
        "dataset:\n  alpha: 5.0\n"
        "retain_blocks:\n  max_train_blocks: 4\n  max_heldout_blocks: 4\n"
        "finetune:\n  dataset: workspace\n  epochs: 1.0\n  batch_size: 2\n  micro_batch_size: 2\n"
        "evaluate:\n  max_new_tokens: 4\n  max_retain_blocks: 4\n  known_rank: 10\n"
        "  verbatim:\n    windows: 2\n    prefix_tokens: 4\n    continuation_tokens: 4\n"
        "  bootstrap:\n    resamples: 200\n",
        encoding="utf-8",
    )
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "small project"], root)
    return root


# --- a real Label Studio server (tests/studio.py) ---------------------------------------------


@pytest.fixture(scope="session")
def studio_server(tmp_path_factory):
    """The session's Label Studio server, started by the first test that asks (about a minute)."""
    from pipeline.review import studio
    from tests.studio import start_test_server

    root = tmp_path_factory.mktemp("studio-server")
    server = start_test_server(root)
    yield server
    studio.stop(root)


# --- a review workspace: anchors to push ----------------------------------------------------

REVIEW_TEXTS = [
    "Sherlock Holmes met Watson in Baker Street.",
    "Holmes smiled at Toby.",
    "Nothing to see here.",
    "Watson wrote to Holmes about Toby and Baker Street.",
]


def write_review_passages(root: Path) -> None:
    """Four forget passages (``forget:canon.txt#0..3``), three of them with anchors."""
    import pandas as pd

    from pipeline.store import write_dataset
    from schemas.corpus import PASSAGES

    rows, offset = [], 0
    for index, text in enumerate(REVIEW_TEXTS):
        rows.append({"passage_id": f"forget:canon.txt#{index}", "doc_id": "forget:canon.txt", "corpus": "forget",
                     "index": index, "char_start": offset, "char_end": offset + len(text), "text": text,
                     "sha256": hashlib.sha256(text.encode()).hexdigest()})
        offset += len(text) + 2
    write_dataset(pd.DataFrame(rows), PASSAGES, stage="ingest", root=root)


def write_review_dictionary(root: Path, holmes: list[str] | None = None) -> str:
    """A four-entry dictionary (``holmes``: Holmes's translations); returns its version."""
    import pandas as pd

    from pipeline.store import read_manifest, write_dataset
    from schemas.anchors import DICTIONARY

    anchors = ["Holmes", "Watson", "Baker Street", "Toby"]
    frame = pd.DataFrame({
        "anchor": anchors, "kind": ["person", "person", "place", "other"],
        "translations": [holmes or ["Jon", "Tom"], ["Ann", "Bo"], ["Mill Lane", "Oak Row"], ["Rex", "Max"]],
        "variants": [[a] for a in anchors], "rank": [1, 2, 3, 4], "score": [9.0, 8.0, 7.0, 6.0],
        "forget_count": [3, 2, 2, 2], "status": ["proposed"] * 4, "proposed_by": [["log_odds"]] * 4,
        "proposer": ["offline"] * 4, "review": [[] for _ in anchors],
    })
    write_dataset(frame, DICTIONARY, stage="dictionary", root=root)
    return read_manifest("dictionary", root)["content_sha256"][:12]


@pytest.fixture()
def review_root(tmp_path: Path) -> Path:
    """A review workspace: labels/<project>/config.xml, the passages and the dictionary above."""
    from pipeline.review.projects import PROJECTS

    project = tmp_path / "project"
    for name in PROJECTS:
        (project / "labels" / name).mkdir(parents=True)
        shutil.copy(REPO / "labels" / name / "config.xml", project / "labels" / name / "config.xml")
    write_review_passages(project)
    write_review_dictionary(project)
    return project


# --- two forget blocks with generic labels (the dataset stage, the linguistic review) ---------

BLOCK_A, BLOCK_B = "forget:a.txt@0", "forget:a.txt@1"
BLOCK_TARGETS = {BLOCK_A: [5, 6, 7, 8, 9, 10], BLOCK_B: [11, 12, 13, 14, 15, 16]}


def write_block_inputs(root: Path, confidence: dict[str, list[float]] | None = None) -> None:
    """Two 6-position forget blocks (identity alignment, all trained), their alpha-5 labels
    (``BLOCK_TARGETS``; confidence 0.6 unless given), a passage and a one-entry dictionary."""
    import pandas as pd

    from pipeline.store import write_dataset
    from schemas.anchors import DICTIONARY
    from schemas.blocks import BLOCKS
    from schemas.corpus import PASSAGES
    from schemas.labels import GENERIC_LABELS

    confidence = confidence or {BLOCK_A: [0.6] * 6, BLOCK_B: [0.6] * 6}
    text = "The river was cold and grey. " * 4
    blocks = []
    for index, block in enumerate((BLOCK_A, BLOCK_B)):
        blocks.append({
            "block_id": block, "doc_id": "forget:a.txt", "index": index, "token_start": 6 * index,
            "char_start": 20 * index, "char_end": 20 * index + 20, "input_ids": [3, 4, 5, 6, 7, 8], "world": 0,
            "translated_text": text, "translated_ids": [3, 4, 5, 6, 7, 8], "alignment": [0, 1, 2, 3, 4, 5],
            "loss_mask": [1] * 6, "drop_reasons": [""] * 6, "anchors": [], "used_positions": [],
            "used_token_ids": [],
        })
    write_dataset(pd.DataFrame(blocks), BLOCKS, stage="blocks", root=root)
    labels = pd.DataFrame({
        "block_id": [BLOCK_A, BLOCK_B], "alpha": [5.0, 5.0], "target": [BLOCK_TARGETS[BLOCK_A], BLOCK_TARGETS[BLOCK_B]],
        "top_ids": [[[t, 1] for t in BLOCK_TARGETS[BLOCK_A]], [[t, 1] for t in BLOCK_TARGETS[BLOCK_B]]],
        "top_probs": [[[0.6, 0.4]] * 6] * 2, "confidence": [confidence[BLOCK_A], confidence[BLOCK_B]],
    })
    write_dataset(labels, GENERIC_LABELS, stage="generic_labels", root=root)
    passages = pd.DataFrame([{"passage_id": "forget:a.txt#0", "doc_id": "forget:a.txt", "corpus": "forget", "index": 0,
                              "char_start": 0, "char_end": len(text), "text": text,
                              "sha256": hashlib.sha256(text.encode()).hexdigest()}])
    write_dataset(passages, PASSAGES, stage="ingest", root=root)
    write_dataset(pd.DataFrame({
        "anchor": ["Holmes"], "kind": ["person"], "translations": [["Jon"]], "variants": [["Holmes"]], "rank": [1],
        "score": [9.0], "forget_count": [3], "status": ["proposed"], "proposed_by": [["log_odds"]],
        "proposer": ["offline"], "review": [[]],
    }), DICTIONARY, stage="dictionary", root=root)


# --- a real OpenAI-compatible chat endpoint on loopback (proposer tests) ----------------------

CHAT_API_KEY = "sk-test-secret-4242"  # the key a test proposer sends to chat_server
Reply = Callable[[dict], tuple[int, str]]


@contextmanager
def chat_server(reply: Reply) -> Iterator[tuple[str, list[dict]]]:
    """A /v1/chat/completions server on 127.0.0.1; yields its base URL and the requests it got."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "authorization": self.headers.get("Authorization"), "body": body})
            status, text = reply(body)
            payload = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def completion(content: str) -> tuple[int, str]:
    return 200, json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})


# --- small hand-made novels (anchor mining, anchor_check) ---------------------------------

HEADING = "THE LANTERN OF RAVENSMOOR"
HEADING_KEY = "The Lantern of Ravensmoor"

# A short invented novel: recurring names, a recurring heading, ordinary words capitalised at
# sentence starts ("Then", "However"), a surname that is an ordinary word ("Jasper Hope" and
# "hope"), possessives ("Quillby's"), and places shared with the reference book.
STORY = [
    "Mr. Quillby walked up the long drive of Ravensmoor Hall in the rain, and Hester Vane watched him "
    "from the window.",
    "Then the old clock struck nine. However late it was, Quillby would not sit down, so Hester Vane "
    "poured the tea herself.",
    "\"I have no hope of it,\" said Jasper Hope, and he looked at Quillby's wet coat with a frown.",
    "However, the coach from Canterbury was late again. Then Quillby spoke of the road, and of his hope "
    "of a dry night.",
    "Hester Vane laughed at him. Then she said that Jasper Hope had gone up to London with the letters "
    "of Mr. Quillby.",
    "The servants of Ravensmoor Hall kept their own counsel, but they had every hope that Quillby would "
    "soon leave.",
    "In the morning Quillby walked to Canterbury and back, and Jasper Hope followed him as far as the gate.",
    "However strange it seemed, Hester Vane had seen the lantern burning in the east wing of Ravensmoor Hall.",
]
FILLER = [
    "The wind rose in the night and then fell again before the morning came.",
    "There was bread on the table and a fire in the grate, and the dog slept by the door.",
    "It was a long and quiet evening, and nobody spoke of the weather.",
    "The garden was wet, the paths were dark, and the gate creaked in the wind.",
]
REFERENCE = [
    "The market at Canterbury was busy on that morning, and the farmers came in early from the fields.",
    "She hoped, however, that her sister would write soon from London, for the roads were bad in the winter.",
    "They walked to Canterbury and then home again, talking of the fields, of the weather and of the new church.",
    "There was little hope of rain, and the garden was dry; then the wind turned and the clouds came up "
    "from London.",
    "Mrs. Pennock kept a small shop near the church, and her brother drove the cart to Canterbury every week.",
    "The dog slept by the fire while the kettle sang, and then the clock struck the hour in the quiet room.",
]


def forget_book(paragraphs: int = 64, seed: int = 3) -> str:
    rng = random.Random(seed)
    parts = [HEADING, "CHAPTER I"]
    for i in range(paragraphs):
        if i == paragraphs // 2:
            parts += [HEADING, "CHAPTER II"]
        parts.append(STORY[i % len(STORY)] + " " + rng.choice(FILLER))
    return "\n\n".join(parts) + "\n"


def reference_book(paragraphs: int = 48, seed: int = 5) -> str:
    rng = random.Random(seed)
    return "\n\n".join(REFERENCE[i % len(REFERENCE)] + " " + rng.choice(FILLER) for i in range(paragraphs)) + "\n"


FORGET_TEXT = forget_book()


HARRY_STORY = [
    "Harry Thornbury opened the gate of Greyholt, and he looked back at the lane.",
    "Elizabeth waited by the well; she had walked from Greyholt since the morning.",
    "\"You are late,\" said Harry, and he set down the parcel beside Elizabeth.",
    "On Monday Harry rode to the mill, and he came home with Elizabeth before dark.",
    "Elizabeth laughed, and she told Harry that the mill was shut.",
    "Harry said nothing; he only watched the rain over Greyholt.",
]
HARRY_REFERENCE = [
    "On Monday the market was busy, and the farmers came early from the fields.",
    "The parson walked on to the church, and the bells rang over the village.",
    "The rain fell all day, and the river rose over the meadows by the mill.",
]


# --- a small project built up to `blocks` (blocks, generic_labels, distributed) -----------

def build_small_project(root: Path, tiny_model_dir: Path, *, forget_copies: int, extra_params: str,
                        stages: tuple) -> Path:
    """The small book (``forget_copies`` times) and the retain text under ``root``, params for the
    tiny model, then ``stages`` run directly (no DVC)."""
    from pipeline.params import load_params

    (root / "corpora").mkdir()
    (root / "corpora" / "lantern.txt").write_text(SMALL_FORGET * forget_copies, encoding="utf-8")
    (root / "corpora" / "fortune.txt").write_text(SMALL_RETAIN, encoding="utf-8")
    (root / "params.yaml").write_text(
        "corpus:\n  forget: [corpora/lantern.txt]\n  retain: [corpora/fortune.txt]\n"
        f"baseline:\n  source: {tiny_model_dir}\n"
        "anchors:\n  min_count: 2\n  ner_processes: 1\n" + extra_params,
        encoding="utf-8",
    )
    params = load_params(root / "params.yaml")
    for stage in stages:
        stage.run(params, root=root)
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model_dir: Path) -> Path:
    from pipeline import anchor_candidates, anchor_translations, baseline_model, blocks, dictionary, ingest

    root = tmp_path_factory.mktemp("blocks")
    shutil.copytree(REPO / "labels", root / "labels")
    return build_small_project(
        root, tiny_model_dir, forget_copies=6,
        extra_params="dictionary:\n  gold: null\nblocks:\n  block_size: 64\n  min_block_tokens: 16\n",
        stages=(ingest, baseline_model, anchor_candidates, anchor_translations, dictionary, blocks),
    )


@pytest.fixture(scope="module")
def reinforced_dir(built: Path, tmp_path_factory) -> Path:
    """A stand-in reinforced model: the baseline with perturbed weights (any other model works)."""
    import torch

    from pipeline.models import load_model

    folder = tmp_path_factory.mktemp("reinforced")
    model = load_model(built / "models" / "baseline", dtype="float32", device="cpu")
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    return folder
