"""Named-entity recognition for the anchor stages: spaCy, loaded from ``anchors.spacy_model``.

The mining algorithm (:mod:`pipeline.core.anchor_selection`) takes the recogniser as a function,
so that it stays pure; this module is the one that loads the model.
"""

from __future__ import annotations

import os

from tqdm import tqdm

from pipeline.params import AnchorParams

_SMALL_PARALLEL_CHARS = 200_000  # below this, worker start-up costs more than it saves


def run_ner(texts: list[str], settings: AnchorParams) -> list[list[tuple[str, str]]]:
    """``(entity text, label)`` per text; parser and lemmatizer off, NER only."""
    import spacy

    nlp = spacy.load(settings.spacy_model, exclude=["parser", "lemmatizer", "tagger", "attribute_ruler"])
    if not texts:
        return []
    processes = settings.ner_processes or os.cpu_count() or 1
    if sum(map(len, texts)) < _SMALL_PARALLEL_CHARS:
        processes = 1
    docs = nlp.pipe(texts, batch_size=settings.ner_batch_size, n_process=processes)
    progress = tqdm(docs, total=len(texts), desc="ner", unit="passage", mininterval=5)
    return [[(ent.text, ent.label_) for ent in doc.ents] for doc in progress]
