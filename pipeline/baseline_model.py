"""Stage ``baseline_model``: the configured baseline -> ``models/baseline`` (an ordinary HF folder).

Whatever ``baseline.source`` is (GGUF in a package, local folder, hub id), every later stage
loads ``models/baseline`` with :func:`pipeline.models.load_model`. The folder also holds
``whp_model.json``: where it came from, the source file's hash, and the logit check between the
saved folder and the loaded source. Written to a temporary folder and renamed when complete
(:func:`pipeline.models.publish_model`).

Run: ``python -m pipeline.baseline_model`` (``dvc repro baseline_model``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.stage import run_stage
from pipeline.errors import ModelSourceError
from pipeline.models import load_model, load_source, publish_model, resolve_source
from pipeline.paths import BASELINE
from pipeline.params import Params, section_dict
from pipeline.store import sha256_file

STAGE = "baseline_model"
PARAMS = ("baseline",)
_PROBE_TEXT = "It was a bright cold day in April, and the clocks were striking thirteen."


def max_logit_gap(model_a, model_b, input_ids: torch.Tensor) -> float:
    """Largest absolute difference of the two models' logits on ``input_ids`` ``[1, seq]``."""
    with torch.no_grad():
        a = model_a(input_ids.to(model_a.device)).logits.float().cpu()
        b = model_b(input_ids.to(model_b.device)).logits.float().cpu()
    return (a - b).abs().max().item()


def run(params: Params, *, root: Path = Path(".")) -> dict:
    settings = params.baseline
    source = resolve_source(settings.source, gguf_file=settings.gguf_file, revision=settings.revision)
    model, tokenizer = load_source(source, dtype=settings.dtype)
    output = root / BASELINE

    def same_logits(folder: Path) -> dict:
        """The saved folder must compute what the loaded source computes."""
        probe = tokenizer(_PROBE_TEXT, return_tensors="pt", add_special_tokens=False).input_ids
        saved = load_model(folder, dtype=settings.dtype, device="cpu")
        gap = max_logit_gap(model.to("cpu"), saved, probe)
        tolerance = 1e-4 if settings.dtype == "float32" else 5e-2
        if gap > tolerance:
            raise ModelSourceError(f"{output}: saved model differs from the source (max logit gap {gap:.2e})")
        return {"probe_max_logit_gap": gap}

    source_hash = sha256_file(Path(source.location) / str(source.gguf_file)) if source.kind == "gguf" else None
    provenance = publish_model(output, model=model, tokenizer=tokenizer, verify=same_logits, provenance={
        "source": source.describe(),
        "source_kind": source.kind,
        "source_sha256": source_hash,
        "params": section_dict(params, *PARAMS),
        "architecture": model.config.architectures or [type(model).__name__],
        "model_type": model.config.model_type,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": model.config.vocab_size,
        "tokenizer_size": len(tokenizer),
        "dtype": settings.dtype,
    })
    return {"source": source.describe(), "parameters": provenance["parameters"],
            "probe_max_logit_gap": f"{provenance['probe_max_logit_gap']:.1e}"}


if __name__ == "__main__":
    run_stage(STAGE, run)
