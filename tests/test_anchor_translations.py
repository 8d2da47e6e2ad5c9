"""pipeline/anchor_translations.py: the stage on tiny anchor_candidates and documents datasets."""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import pandas as pd
from faker.providers.person.en_GB import Provider as BritishNames

from pipeline.anchor_translations import run
from pipeline.params import parse_params
from pipeline.store import read_dataset, read_manifest, write_dataset
from pipeline.core.translation import forbidden_vocabulary, word_keys
from schemas.anchors import ANCHOR_CANDIDATES, ANCHOR_TRANSLATIONS
from schemas.corpus import DOCUMENTS
from tests.conftest import chat_server, completion

FEMALE_NAMES = {
    n for code in ("en_GB", "en_US", "en_IE", "en_NZ")
    for n in importlib.import_module(f"faker.providers.person.{code}").Provider.first_names_female
}
# The corpora name most of faker's people: a stage that forgot the corpora's words would pick one.
CROWD = sorted({*BritishNames.last_names, *BritishNames.first_names_female, *BritishNames.first_names_male})
FORGET = (
    "Inspector Brackwell of the Yard came to Fenwick Street that evening. Mr. Fenwick's lamp was lit. "
    "He had read The Grey Lantern twice."
)
RETAIN = "It is a truth universally acknowledged. " + " and ".join(CROWD) + " came to the ball."
CANDIDATES = [  # (anchor, kind, variants[, gender])
    ("Fenwick", "person", ["Fenwick", "Mr. Fenwick", "Fenwick's"]),
    ("Tansy", "person", ["Tansy"], "female"),
    ("Inspector Brackwell", "person", ["Inspector Brackwell", "Brackwell"]),
    ("Brackwell", "person", ["Brackwell"]),
    ("Fenwick Street", "place", ["Fenwick Street"]),
    ("The Grey Lantern", "work_title", ["The Grey Lantern"]),
    ("Kandahar", "place", ["Kandahar"]),
]


def write_inputs(root: Path, candidates=CANDIDATES) -> None:
    docs = []
    for corpus, text in (("forget", FORGET), ("retain", RETAIN)):
        docs.append({
            "doc_id": f"{corpus}:book.txt", "corpus": corpus, "source": f"corpora/{corpus}/book.txt", "record": 0,
            "title": "", "text": text, "n_chars": len(text), "sha256": hashlib.sha256(text.encode()).hexdigest(),
        })
    write_dataset(pd.DataFrame(docs), DOCUMENTS, stage="test", root=root)
    rows = [
        {"anchor": anchor, "kind": kind, "variants": variants, "forget_count": 5, "reference_count": 0,
         "capitalised_ratio": 1.0, "score": 10.0 - rank, "rank": rank + 1, "example_passages": [],
         "signals": ["log_odds"], "ner_labels": [], "part_of": [], "gender": gender[0] if gender else ""}
        for rank, (anchor, kind, variants, *gender) in enumerate(candidates)
    ]
    write_dataset(pd.DataFrame(rows), ANCHOR_CANDIDATES, stage="test", root=root)


def make_params(**translations):
    return parse_params({"corpus": {"forget": ["corpora/forget"]}, "translations": {"per_anchor": 3, "seed": 5,
                                                                                      **translations}})


def test_the_stage_writes_one_valid_row_per_candidate_avoiding_the_corpora_words(tmp_path: Path):
    write_inputs(tmp_path)
    summary = run(make_params(), root=tmp_path)

    out = read_dataset("anchor_translations", tmp_path)
    ANCHOR_TRANSLATIONS.model.validate(out)
    assert out["anchor"].tolist() == [anchor for anchor, *_ in CANDIDATES]  # rank order
    assert out["kind"].tolist() == [kind for _, kind, *_ in CANDIDATES]
    assert set(out["proposer"]) == {"offline"}
    assert all(len(ts) == 3 and len(set(ts)) == 3 for ts in out["translations"])

    capitalised = forbidden_vocabulary([FORGET, RETAIN], [])
    assert len(capitalised) > 500  # the check below is not vacuous
    for row in out.itertuples():
        for translation in row.translations:
            assert not (word_keys(translation) - word_keys(row.anchor)) & capitalised, (row.anchor, translation)

    translations = out.set_index("anchor")["translations"]
    for i in range(3):  # one world: Fenwick is one substitute everywhere
        assert translations["Fenwick Street"][i] == translations["Fenwick"][i] + " Street"
        assert translations["Inspector Brackwell"][i] == "Inspector " + translations["Brackwell"][i]
        # "Tansy" is in no name list; the pronouns mined after it say she is a woman.
        assert translations["Tansy"][i] in FEMALE_NAMES

    assert summary["anchors"] == len(CANDIDATES) and summary["rejects"] == 0
    assert read_manifest("anchor_translations", tmp_path)["params"] == {
        "translations": {"per_anchor": 3, "seed": 5, "proposer": "offline", "openai": None}
    }
    assert read_dataset("anchor_translations_rejects", tmp_path).empty


def test_a_rerun_gives_the_same_translations_and_a_new_seed_others(tmp_path: Path):
    write_inputs(tmp_path)
    run(make_params(), root=tmp_path)
    first = read_dataset("anchor_translations", tmp_path)
    run(make_params(), root=tmp_path)
    assert read_dataset("anchor_translations", tmp_path).equals(first)
    run(make_params(seed=6), root=tmp_path)
    assert not read_dataset("anchor_translations", tmp_path)["translations"].equals(first["translations"])


def test_a_candidate_without_words_goes_to_the_rejects(tmp_path: Path):
    write_inputs(tmp_path, CANDIDATES + [("1887", "other", ["1887"])])
    run(make_params(), root=tmp_path)
    assert "1887" not in set(read_dataset("anchor_translations", tmp_path)["anchor"])
    rejects = read_dataset("anchor_translations_rejects", tmp_path)
    assert rejects[["location", "reason"]].values.tolist() == [["1887", "no word to translate"]]


def test_refused_model_replies_are_kept_as_rejects(tmp_path: Path, monkeypatch):
    write_inputs(tmp_path)
    monkeypatch.setenv("WHP_STAGE_TEST_KEY", "sk-stage")
    reply = {"Kandahar": ["Ambridge", "Lowmoor", "Carden"], "Fenwick": ["Fenwick", "Hale", "Finch"]}
    with chat_server(lambda body: completion(json.dumps(reply))) as (url, _):
        openai = {"base_url": url, "model": "tiny", "api_key_env": "WHP_STAGE_TEST_KEY"}
        params = make_params(proposer="openai", openai=openai)
        summary = run(params, root=tmp_path)

    out = read_dataset("anchor_translations", tmp_path).set_index("anchor")
    assert out.loc["Kandahar", "proposer"] == "openai:tiny"
    assert out.loc["Kandahar", "translations"] == reply["Kandahar"]
    assert out.loc["Fenwick", "proposer"] == "offline"
    rejects = read_dataset("anchor_translations_rejects", tmp_path).set_index("location")
    assert "equals the anchor" in rejects.loc["Fenwick", "reason"]
    assert set(rejects["source"]) == {"openai:tiny"}
    assert summary["fallbacks"] == len(CANDIDATES) - 1 == len(rejects)
