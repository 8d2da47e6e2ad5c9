"""Where the pipeline's models live, spelled once (datasets: :mod:`pipeline.store`).

Every path is relative to the project root; stages join it to their ``root`` argument.
"""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path("models")
BASELINE = MODELS_DIR / "baseline"
"""The baseline as an ordinary Hugging Face folder; every stage takes its tokenizer from here."""
REINFORCED = MODELS_DIR / "reinforced"
UNLEARNED = MODELS_DIR / "unlearned"
PROVENANCE = "whp_model.json"
"""A file in each model folder: where the weights came from and what they were trained on."""


def model_dir(name: str) -> Path:
    """``models/<name>`` (``baseline``, ``reinforced``, ``unlearned``)."""
    return MODELS_DIR / name
