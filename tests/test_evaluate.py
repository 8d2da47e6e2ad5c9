"""Stage `evaluate` on the tiny random Llama and a two-story corpus: outputs, consistency with the
core functions, stories and windows trained on, bad inputs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import evaluate, ingest, retain_blocks
from pipeline.core import generation, headlines
from pipeline.core.grading import grade_completion
from pipeline.core.probes import ProbeError
from pipeline.core.provenance import StoryError
from pipeline.errors import PipelineError
from pipeline.models import load_model, load_tokenizer
from pipeline.params import parse_params
from pipeline.store import read_dataset, write_dataset
from schemas.anchors import DICTIONARY
from schemas.dataset import TRAINING
from tests.conftest import TINY_TEXT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STORY_ONE = "The Grey Lantern"
STORY_TWO = "The Silent Weir"
FORGET = f"""Contents

   {STORY_ONE}
   {STORY_TWO}



THE GREY LANTERN

Inspector Brackwell of the Yard came to Fenwick Street that evening. He spoke of the grey lantern.

Fenwick walked to Quillby Hall, where Mr. Quillby waited by the fire with the lantern on his knee.

Later that night Fenwick wrote to Brackwell about Quillby and the lantern and the river.

THE SILENT WEIR

The water did not move below the weir. Miss Ashdown watched it from the mill all morning.

Ashdown told Fenwick that the weir had been silent since the winter of the great frost.

Fenwick rowed up the river to the weir and found the sluice gate shut and chained.
"""
FAMILIARITY = [
    {"id": "f1", "prompt": "Inspector Brackwell of the", "answer": " Yard", "story": STORY_ONE, "tier": "known"},
    {"id": "f2", "prompt": "Fenwick walked to Quillby", "answer": " Hall", "story": STORY_ONE, "tier": "detail"},
    {"id": "f3", "prompt": "Miss Ashdown watched it from the", "answer": " mill", "story": STORY_TWO},
    {"id": "f4", "prompt": "the sluice gate shut and", "answer": " chained", "story": STORY_TWO, "tier": "detail"},
]
COMPLETION = [{"id": "c1", "prompt": "Fenwick said to", "keywords": ["Brackwell"]},
              {"id": "c2", "prompt": "The river was", "keywords": ["lantern", "Quillby"]},
              {"id": "c3", "prompt": "She opened the", "keywords": ["letter"]}]
GENERAL = [{"id": "g1", "prompt": "It was a bright cold day in", "answer": " April", "kind": "general"},
           {"id": "n1", "prompt": "The river was cold and", "answer": " grey", "kind": "near"},
           {"id": "n2", "prompt": "She read it", "answer": " twice", "kind": "near"},
           {"id": "n3", "prompt": "The letter was signed by Mr.", "answer": " Quillby", "kind": "near"}]
# Held out: hn1 asks what n1 asks (the same scores under another measure), hn2 is answered by a dictionary key.
HELDOUT = [{"id": "hg1", "prompt": "Snow falls in", "answer": " winter", "kind": "general"},
           {"id": "hn1", "prompt": "The river was cold and", "answer": " grey", "kind": "near"},
           {"id": "hn2", "prompt": "Inspector Brackwell visited Mr.", "answer": " Fenwick", "kind": "near"}]


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _probe_files(root: Path, **changes) -> dict[str, str | None]:
    """``evaluate.probes`` of the project at ``root`` (the fixture's files), with ``changes``."""
    probes = root / "probes"
    return {"familiarity": str(probes / "familiarity.jsonl"), "completion": str(probes / "completion.jsonl"),
            "general": str(probes / "general.jsonl"), "genre_terms": str(probes / "genre_terms.txt"),
            "heldout": str(probes / "heldout.jsonl")} | changes


def _params(root: Path, **evaluate_settings):
    return parse_params({
        "corpus": {"forget": [{"path": "corpora/forget", "split": "contents"}], "retain": ["corpora/retain"]},
        "ingest": {"max_passage_chars": 200},
        "blocks": {"block_size": 32, "min_block_tokens": 8},
        "retain_blocks": {"heldout_fraction": 0.5},
        "evaluate": {"probes": _probe_files(root),
                     "max_new_tokens": 4, "batch_size": 4, "max_retain_blocks": 3, "retain_tokens": 16,
                     "verbatim": {"windows": 3, "prefix_tokens": 4, "continuation_tokens": 4},
                     "bootstrap": {"resamples": 200}} | evaluate_settings,
    })


def _training_rows(text: str, doc_id: str, tokenizer) -> list[dict]:
    """Two training blocks covering the first story's document (what the fine-tune trained on)."""
    start, middle, end = 0, text.index("Fenwick walked"), len(text)
    rows = []
    for i, (a, b) in enumerate([(start, middle), (middle, end)]):
        ids = tokenizer(text[a:b], add_special_tokens=False)["input_ids"]
        n = len(ids)
        rows.append({"block_id": f"{doc_id}@{i}", "doc_id": doc_id, "char_start": a, "char_end": b,
                     "passage_ids": [], "input_ids": ids, "labels": ids, "loss_mask": [1] * n,
                     "top_ids": [[t] for t in ids], "top_probs": [[1.0]] * n, "confidence": [1.0] * n,
                     "alpha": 5.0, "world": 0, "dictionary_sha256": "0" * 64, "corrections_sha256": "0" * 64})
    return rows


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir: Path) -> Path:
    """Ingested two-story forget corpus, dictionary, training dataset, retain blocks, probes, two models."""
    root = tmp_path_factory.mktemp("evaluate")
    for name in ("baseline", "reinforced"):
        shutil.copytree(tiny_model_dir, root / "models" / name)
    (root / "corpora" / "forget").mkdir(parents=True)
    (root / "corpora" / "retain").mkdir(parents=True)
    (root / "corpora" / "forget" / "stories.txt").write_text(FORGET, encoding="utf-8")
    (root / "corpora" / "retain" / "tiny.txt").write_text("\n\n".join(TINY_TEXT * 8), encoding="utf-8")
    params = _params(root)
    ingest.run(params, root=root)
    write_dataset(pd.DataFrame([
        {"anchor": a, "kind": "person", "translations": ["Jones"], "variants": [a, f"Mr. {a}"], "rank": i + 1,
         "score": 1.0, "forget_count": 20, "status": "proposed", "proposed_by": ["log_odds"],
         "proposer": "offline", "review": []} for i, a in enumerate(["Fenwick", "Brackwell", "Quillby"])
    ]), DICTIONARY, stage="dictionary", root=root)
    documents = read_dataset("documents", root)
    doc = documents[documents["title"] == STORY_ONE].iloc[0]
    write_dataset(pd.DataFrame(_training_rows(doc.text, doc.doc_id, load_tokenizer(tiny_model_dir))), TRAINING,
                  stage="dataset", root=root)
    probes = root / "probes"
    probes.mkdir()
    _jsonl(probes / "familiarity.jsonl", FAMILIARITY)
    _jsonl(probes / "completion.jsonl", COMPLETION)
    _jsonl(probes / "general.jsonl", GENERAL)
    _jsonl(probes / "heldout.jsonl", HELDOUT)
    (probes / "genre_terms.txt").write_text("# genre\ninspector\nriver\n\nletter\n", encoding="utf-8")
    retain_blocks.run(params, root=root)
    return root


@pytest.fixture(scope="module")
def evaluated(project: Path) -> Path:
    for name in ("baseline", "reinforced"):
        evaluate.evaluate_model(_params(project), name, root=project)
    return project


def _metrics(root: Path, model: str = "baseline") -> dict:
    return json.loads((root / "metrics" / "evaluation" / f"{model}.json").read_text())


def test_the_metrics_file_holds_every_headline_with_its_interval_and_no_timings(evaluated: Path):
    metrics = _metrics(evaluated)
    for headline in headlines.HEADLINES:
        value, interval = metrics[headline.key], metrics["intervals"].get(headline.key)
        assert value is not None and interval is not None, headline.key
        assert interval["low"] - 1e-9 <= value <= interval["high"] + 1e-9, headline.key
    assert metrics["n"] | {"retain_tokens": 0} == {
        "familiarity": 4, "familiarity_trained": 2, "familiarity_untrained": 2, "familiarity_tier_known": 1,
        "familiarity_tier_detail": 2, "stories": 2, "stories_trained": 1,
        "completion": 3, "general": 1, "near": 3, "general_in_dictionary": 0, "near_in_dictionary": 1,
        "general_heldout": 1, "near_heldout": 2, "general_heldout_in_dictionary": 0, "near_heldout_in_dictionary": 1,
        "verbatim_trained": metrics["n"]["verbatim_trained"],
        "verbatim_untrained": metrics["n"]["verbatim_untrained"], "retain_windows": 3, "retain_tokens": 0,
        "training_blocks": 2}
    assert metrics["n"]["verbatim_trained"] >= 1 and metrics["n"]["verbatim_untrained"] >= 1
    assert sum(metrics["completion_grades"].values()) == 3
    assert not {"seconds", "device"} & set(metrics)
    assert 0 <= metrics["min_k_auc"] <= 1


def test_scores_agree_with_the_core_functions_on_the_same_inputs(evaluated: Path, tiny_model_dir: Path):
    scores = read_dataset("evaluation_scores_baseline", evaluated).set_index("unit_id")
    model, tokenizer = load_model(tiny_model_dir, device="cpu"), load_tokenizer(tiny_model_dir)
    pairs = [(tokenizer(p["prompt"])["input_ids"], tokenizer(p["answer"], add_special_tokens=False)["input_ids"])
             for p in FAMILIARITY]
    for probe, score in zip(FAMILIARITY, generation.answer_probes(model, pairs, pad_id=0)):
        row = scores.loc[probe["id"]]
        assert row["measure"] == "familiarity" and row["story"] == probe["story"]
        assert row["trained"] == (probe["story"] == STORY_ONE) and row["tier"] == probe.get("tier", "")
        assert row["first_prob"] == pytest.approx(score.first_prob, rel=1e-4)
        assert row["top1"] == float(score.top1) and row["output"] == tokenizer.decode(score.greedy)
    assert set(scores.loc[["g1", "n1", "n2", "n3"], "measure"]) == {"general", "near"}
    assert list(scores.loc[["hg1", "hn1", "hn2"], "measure"]) == ["general_heldout", "near_heldout", "near_heldout"]
    same = ["first_prob", "top1", "rank", "output"]
    assert scores.loc["hn1", same].tolist() == scores.loc["n1", same].tolist()  # the same question, scored alike
    assert scores.loc["hn2", "answer_terms"] == "Mr. Fenwick; Fenwick"
    assert _metrics(evaluated)["near_heldout_top1_rate"] == pytest.approx(scores.loc[["hn1", "hn2"], "top1"].mean())
    # the dictionary's key and its variant "Mr. Quillby" both reach into the answer " Quillby"
    assert scores.loc["n3", "answer_terms"] == "Mr. Quillby; Quillby"
    assert (scores.loc[["g1", "n1", "n2"], "answer_terms"] == "").all()
    assert scores.loc["f2", "answer_terms"] == ""  # " Hall" completes no dictionary term
    assert (scores.loc[scores["measure"].isin(["retain", "completion"]), "answer_terms"] == "").all()
    assert metrics_near_outside(evaluated) == pytest.approx(scores.loc[["n1", "n2"], "top1"].mean())
    retain = scores[scores["measure"] == "retain"]
    assert len(retain) == 3 and (retain["tokens"] == 15).all()  # 16 tokens scored from the second on
    metrics = _metrics(evaluated)
    assert metrics["retain_perplexity"] == pytest.approx(np.exp(retain["nll"].sum() / retain["tokens"].sum()), rel=1e-5)
    assert metrics["familiarity_top1_rate"] == pytest.approx(scores.loc[[p["id"] for p in FAMILIARITY], "top1"].mean())


def metrics_near_outside(root: Path) -> float:
    return _metrics(root)["near_outside_dictionary_top1_rate"]


def test_verbatim_windows_split_by_the_training_blocks(evaluated: Path):
    scores = read_dataset("evaluation_scores_baseline", evaluated)
    training = read_dataset("dataset", evaluated)
    spans = list(zip(training["doc_id"], training["char_start"], training["char_end"]))
    for row in scores[scores["measure"].str.startswith("verbatim")].itertuples():
        doc_id, offset = row.unit_id.rsplit(":", 1)
        inside = any(d == doc_id and a <= int(offset) < b for d, a, b in spans)
        assert inside == (row.measure == "verbatim_trained") == row.trained
        assert 0 <= row.rouge_l <= 1 and row.tokens == 7 and row.min_k <= 0


def test_completions_keep_the_columns_the_review_reads(evaluated: Path):
    frame = read_dataset("evaluation_completions_baseline", evaluated)
    assert list(frame.columns) == ["model", "probe_id", "prompt", "completion", "grade", "matched_terms"]
    anchors = ["Fenwick", "Mr. Fenwick", "Brackwell", "Mr. Brackwell", "Quillby", "Mr. Quillby"]
    for row, probe in zip(frame.itertuples(), COMPLETION):
        expected = grade_completion(row.completion, anchors, probe["keywords"], ["inspector", "river", "letter"],
                                    prompt=probe["prompt"])
        assert (row.grade, list(row.matched_terms)) == expected
    scores = read_dataset("evaluation_scores_baseline", evaluated).set_index("unit_id")
    assert [scores.loc[c["id"], "score"] for c in COMPLETION] == [{3: 5.0, 2: 1.0}.get(g, 0.0) for g in frame["grade"]]


def test_a_second_run_writes_the_same_metrics(evaluated: Path, tmp_path: Path):
    root = tmp_path / "again"
    shutil.copytree(evaluated, root)
    evaluate.evaluate_model(_params(root), "baseline", root=root)
    assert _metrics(root) == _metrics(evaluated)


def test_bfloat16_evaluates_the_same_units_with_close_numbers(evaluated: Path, tmp_path: Path):
    root = tmp_path / "bf16"
    shutil.copytree(evaluated, root)
    evaluate.evaluate_model(_params(root, dtype="bfloat16"), "baseline", root=root)
    full, half = _metrics(evaluated), _metrics(root)
    assert half["n"] == full["n"]
    assert half["retain_perplexity"] == pytest.approx(full["retain_perplexity"], rel=0.05)
    assert half["familiarity_mean_logprob"] == pytest.approx(full["familiarity_mean_logprob"], abs=0.2)


@pytest.mark.parametrize("key", ["familiarity", "heldout"])
def test_a_missing_probe_file_stops_the_stage_before_the_model_loads(project: Path, tmp_path: Path, key: str):
    params = _params(project, probes=_probe_files(project, **{key: str(tmp_path / "nowhere.jsonl")}))
    with pytest.raises(ProbeError, match=rf"nowhere\.jsonl: probe file not found \(evaluate\.probes\.{key} in"):
        evaluate.evaluate_model(params, "no_such_model", root=project)


def test_without_held_out_probes_their_headlines_are_empty_and_the_rest_unchanged(evaluated: Path, tmp_path: Path):
    root = tmp_path / "no-heldout"
    shutil.copytree(evaluated, root)
    evaluate.evaluate_model(_params(root, probes=_probe_files(root, heldout=None)), "baseline", root=root)
    scores = read_dataset("evaluation_scores_baseline", root)
    assert not scores["measure"].str.endswith("_heldout").any()
    without, full = _metrics(root), _metrics(evaluated)
    heldout_keys = {h.key for h in headlines.HEADLINES if h.measure.endswith("_heldout")}
    assert len(heldout_keys) == 4 and all(without[key] is None for key in heldout_keys)
    assert without["n"]["near_heldout"] == without["n"]["general_heldout"] == 0
    assert {k: v for k, v in without.items() if k not in heldout_keys | {"n", "intervals"}} == \
        {k: v for k, v in full.items() if k not in heldout_keys | {"n", "intervals"}}


def test_a_story_tag_the_corpus_does_not_hold_is_an_error_naming_it(project: Path, tmp_path: Path):
    path = tmp_path / "familiarity.jsonl"
    _jsonl(path, FAMILIARITY + [{"id": "f9", "prompt": "x", "answer": " y", "story": "The Red Weir"}])
    params = _params(project, probes=_probe_files(project, familiarity=str(path)))
    with pytest.raises(StoryError, match="'The Red Weir'"):
        evaluate.evaluate_model(params, "baseline", root=project)


def test_a_bad_model_name_is_refused(project: Path):
    with pytest.raises(PipelineError, match="model name"):
        evaluate.evaluate_model(_params(project), "../elsewhere", root=project)


def test_the_shipped_probe_sets_are_valid_large_enough_and_tagged_with_stories():
    from tests.conftest import REPO

    probes = REPO / "corpora" / "probes"
    familiarity = evaluate.read_probe_file(probes / "familiarity.jsonl", "familiarity")
    assert len(familiarity) >= 200 and all(p.answer.startswith(" ") for p in familiarity)
    assert len({p.story for p in familiarity}) >= 50
    assert len(evaluate.read_probe_file(probes / "completion.jsonl", "completion")) >= 100
    general = evaluate.read_probe_file(probes / "general.jsonl", "general")
    assert len(general) >= 40 and {p.kind for p in general} == {"general", "near"}
    assert "Scotland Yard" in evaluate.read_term_file(probes / "genre_terms.txt")


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


@pytest.mark.parametrize(("name", "earlier"), [
    ("heldout.jsonl", ("general.jsonl",)),
    ("heldout_next.jsonl", ("general.jsonl", "heldout.jsonl")),  # sealed for the next choice of default
])
def test_the_shipped_held_out_probes_ask_nothing_the_earlier_probes_ask(name, earlier):
    """A held-out set checks that a default chosen on general.jsonl did not fit those probes only:
    no prompt of it may repeat, or nearly repeat with the same answer, a prompt of an earlier set."""
    from tests.conftest import REPO

    probes = REPO / "corpora" / "probes"
    heldout = evaluate.read_probe_file(probes / name, "general", key="heldout")
    tuning = [p for file in earlier for p in evaluate.read_probe_file(probes / file, "general")]
    assert sum(p.kind == "near" for p in heldout) >= 60 and sum(p.kind == "general" for p in heldout) >= 30
    assert all(p.answer.startswith(" ") for p in heldout)
    assert not {p.prompt for p in heldout} & {p.prompt for p in tuning}
    assert not {p.id for p in heldout} & {p.id for p in tuning}  # the report lists flagged probes by id
    for probe in heldout:
        for seen in (t for t in tuning if t.answer == probe.answer):
            shared = _words(probe.prompt) & _words(seen.prompt)
            assert len(shared) / len(_words(probe.prompt) | _words(seen.prompt)) < 0.7, (probe.id, seen.id)


def test_every_shipped_story_tag_names_a_work_of_the_default_forget_corpus_that_states_its_answer():
    from pipeline.core.provenance import story_documents
    from pipeline.core.works import split_works
    from tests.conftest import REPO

    familiarity = evaluate.read_probe_file(REPO / "corpora" / "probes" / "familiarity.jsonl", "familiarity")
    text = (REPO / "corpora" / "forget" / "sherlock_holmes_complete.txt").read_text(encoding="utf-8")
    works, _ = split_works(text)  # what ingest's `split: contents` makes of it (params.yaml)
    bodies = {f"work-{i}": text[w.start:w.end] for i, w in enumerate(works)}
    stories = story_documents([p.story for p in familiarity], [(f"work-{i}", w.title, "") for i, w in enumerate(works)])
    assert len(set(stories.values())) == len(stories) >= 50 and min(len(bodies[d]) for d in stories.values()) > 10_000
    for probe in familiarity:  # the answer is stated in its story (titles are typeset in capitals)
        body = bodies[stories[probe.story]]
        assert probe.answer.strip() in body or probe.answer.strip().upper() in body, probe.id
    tiers = {tier: [p for p in familiarity if p.tier == tier] for tier in ("known", "detail")}
    assert len(tiers["known"]) >= 60 and len(tiers["detail"]) >= 200
    assert sum(map(len, tiers.values())) == len(familiarity)
