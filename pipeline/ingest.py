"""Stage ``ingest``: forget and retain corpora -> ``documents`` and ``passages``.

Reads every source listed under ``corpus`` in params (a source with ``split: contents`` is cut
into its works, :mod:`pipeline.core.works`), normalises each document once
(:func:`pipeline.core.text.normalise`) and cuts it into paragraph-level passages whose offsets
point into the normalised text. Refused records go to ``documents_rejects`` and
``passages_rejects``; a file that cannot be read at all stops the stage with an error naming it.

Run: ``python -m pipeline.ingest`` (``dvc repro ingest``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from pipeline.stage import run_stage
from pipeline.errors import CorpusError
from pipeline.params import CorpusSource, IngestParams, Params, section_dict
from pipeline.store import write_dataset, write_rejects
from pipeline.core.text import NORMALISATION, Refusal, SourceRecord, normalise, passage_spans, read_corpus_file, source_files
from pipeline.core.works import slug, split_works
from schemas.corpus import DOCUMENTS, PASSAGES

STAGE = "ingest"
PARAMS = ("corpus", "ingest")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _listed_path(path: Path, root: Path) -> str:
    """``path`` as params list it (relative to the project), so outputs do not depend on where
    the project is checked out."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _doc_key(source_root: Path, path: Path) -> str:
    # File sources are named by their file name, folder sources by the path inside the folder:
    # short, readable and stable when the project moves.
    return path.name if source_root.is_file() else path.relative_to(source_root).as_posix()


def split_record(record: SourceRecord, listed: str) -> tuple[list[tuple[str, str, str]], list[Refusal]]:
    """A whole-file record cut into its works: ``(id suffix, title, raw text)`` per part, and the
    titles never found as refusals. What comes before the first work (title page, the table of
    contents) is a part of its own, ``00-contents``: it belongs to the corpus (it names every work)."""
    try:
        works, missing = split_works(record.text)
    except ValueError as exc:
        raise CorpusError(f"{record.path}: split: contents: {exc}; set split: none for this source") from None
    refused = [Refusal(listed, "table of contents", "title never found as a heading line", title) for title in missing]
    parts = [("00-contents", "Contents", record.text[:works[0].start])] if works else []
    parts += [(f"{number:02d}-{slug(w.title)}", w.title, record.text[w.start:w.end]) for number, w in enumerate(works, 1)]
    return parts, refused


def collect_documents(
    corpus: str, sources: Iterable[CorpusSource], settings: IngestParams, *, root: Path = Path(".")
) -> tuple[list[dict], list[Refusal]]:
    """Normalised document rows of one corpus (``forget`` or ``retain``) and the records refused."""
    rows: list[dict] = []
    refused: list[Refusal] = []
    first_path: dict[str, Path] = {}
    for source in sources:
        source_root = root / source.path
        for path in tqdm(source_files(source_root, source.format), desc=f"read {corpus}", unit="file", leave=False):
            records, bad = read_corpus_file(path, source.format, source.text_field)
            listed = _listed_path(path, root)
            refused.extend(Refusal(listed, r.location, r.reason, r.record) for r in bad)
            key = _doc_key(source_root, path)
            for record in records:
                doc_id = f"{corpus}:{key}" + (f":{record.record}" if record.record else "")
                parts = [("", "", record.text)]
                if source.split == "contents" and not record.record:
                    parts, cut = split_record(record, listed)
                    refused.extend(cut)
                for suffix, title, raw in parts:
                    part_id = f"{doc_id}:{suffix}" if suffix else doc_id
                    if part_id in first_path:
                        raise CorpusError(
                            f"{path}: document id {part_id!r} is also produced by {first_path[part_id]}; "
                            "rename one file or list the folders separately"
                        )
                    first_path[part_id] = path
                    text = normalise(
                        raw, strip_lines=settings.strip_lines, unwrap_lines=settings.unwrap_lines,
                        unwrap_min_width=settings.unwrap_min_width,
                    )
                    if not text:
                        refused.append(Refusal(listed, f"line {record.record}" if record.record else (title or "file"),
                                               "no text left after normalisation", raw))
                        continue
                    rows.append({
                        "doc_id": part_id, "corpus": corpus, "source": listed, "record": record.record,
                        "title": title, "text": text, "n_chars": len(text), "sha256": _sha256(text),
                    })
    return rows, refused


def _refuse_overlap(doc_rows: list[dict]) -> None:
    """A file reached from both corpora (a folder in one, a file inside it in the other)."""
    forget = {row["source"] for row in doc_rows if row["corpus"] == "forget"}
    both = sorted({row["source"] for row in doc_rows if row["corpus"] == "retain"} & forget)
    if both:
        raise CorpusError(f"{both[0]}: listed under both corpus.forget and corpus.retain ({len(both)} file(s))")


def cut_passages(documents: pd.DataFrame, settings: IngestParams) -> tuple[pd.DataFrame, list[dict]]:
    """Passage rows of every document, and the refused spans as reject rows."""
    rows, refused = [], []
    for doc in documents.itertuples(index=False):
        kept, dropped = passage_spans(doc.text, min_chars=settings.min_passage_chars, max_chars=settings.max_passage_chars)
        for index, (start, end) in enumerate(kept):
            text = doc.text[start:end]
            rows.append({
                "passage_id": f"{doc.doc_id}#{index}", "doc_id": doc.doc_id, "corpus": doc.corpus,
                "index": index, "char_start": start, "char_end": end, "text": text, "sha256": _sha256(text),
            })
        refused.extend(
            {"source": doc.doc_id, "location": f"chars {start}-{end}", "reason": reason, "record": doc.text[start:end]}
            for start, end, reason in dropped
        )
    columns = list(PASSAGES.model.to_schema().columns)
    return pd.DataFrame(rows, columns=columns), refused


def run(params: Params, *, root: Path = Path(".")) -> dict[str, int]:
    """Build and write the four ingest datasets; returns row counts for the log."""
    settings = params.ingest
    used = section_dict(params, *PARAMS) | {"normalisation": NORMALISATION}
    doc_rows, refused = [], []
    for corpus, sources in (("forget", params.corpus.forget), ("retain", params.corpus.retain)):
        rows, bad = collect_documents(corpus, sources, settings, root=root)
        doc_rows += rows
        refused += bad
    _refuse_overlap(doc_rows)
    documents = pd.DataFrame(doc_rows, columns=list(DOCUMENTS.model.to_schema().columns))
    passages, passage_refusals = cut_passages(documents, settings)

    write_dataset(documents, DOCUMENTS, stage=STAGE, params=used, root=root)
    write_rejects([vars(r) for r in refused], DOCUMENTS, stage=STAGE, params=used, root=root)
    write_dataset(passages, PASSAGES, stage=STAGE, params=used, root=root)
    write_rejects(passage_refusals, PASSAGES, stage=STAGE, params=used, root=root)
    return {
        "documents": len(documents), "documents_rejects": len(refused),
        "passages": len(passages), "passages_rejects": len(passage_refusals),
    }


if __name__ == "__main__":
    run_stage(STAGE, run)
