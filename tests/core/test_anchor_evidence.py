"""pipeline/core/anchor_evidence.py and the counting it builds on, on ten-word passages."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from pipeline.core.anchor_evidence import (
    CorpusSizes, Evidence, collect_evidence, female_share, ner_key, occurrences, pronoun_gender,
)
from pipeline.core.anchor_match import AnchorMatcher
from pipeline.core.anchor_mining import alphanumeric_names, count_ngrams
from pipeline.params import AnchorParams


def passages(*texts: str, doc: str = "forget:a.txt") -> pd.DataFrame:
    return pd.DataFrame({"passage_id": [f"{doc}#{i}" for i in range(len(texts))], "text": list(texts)})


def test_the_first_gendered_pronoun_after_a_name_votes_for_its_gender():
    found = occurrences(passages(
        "Huck ran to the river and he hid. Polly called, but she was late.",
        "Huck said nothing to Polly; he went home.",  # "he" follows Polly, whose span ends first
        "Then Huck laughed at himself.",
    ), AnchorMatcher(["Huck", "Polly"]), 0)
    assert found.pronouns["Huck"] == Counter({"male": 2})
    assert found.pronouns["Polly"] == Counter({"female": 1, "male": 1})


def test_pronoun_gender_is_judged_against_the_corpus_share_of_female_pronouns():
    # A story told from a woman's side: 60% of the pronouns after any name are hers.
    assert pronoun_gender(Counter({"female": 113, "male": 131}), 0.6) == "male"    # "Mr. Darcy"
    assert pronoun_gender(Counter({"female": 120, "male": 45}), 0.6) == "female"   # "Jane"
    assert pronoun_gender(Counter({"female": 19, "male": 21}), 0.6) == ""          # no clear sign
    assert pronoun_gender(Counter({"male": 6}), 0.5) == "male"
    assert pronoun_gender(Counter({"male": 2}), 0.5) == ""                         # too few votes
    assert female_share([Counter({"female": 3, "male": 1}), Counter({"male": 4})]) == 3 / 8
    assert female_share([]) == 0.5


def test_occurrences_count_titled_uses_and_record_title_variants():
    found = occurrences(passages("Aunt Polly came. Then Aunt Polly sat down, and Polly slept."),
                        AnchorMatcher(["Polly"]), 1)
    assert found.counts["Polly"] == 3
    assert found.titled["Polly"] == 2
    assert "Aunt Polly" in found.variants["Polly"]
    assert found.examples["Polly"] == ["forget:a.txt#0"]


def test_count_ngrams_finds_the_reference_document_that_uses_a_key_most():
    texts = [("retain:a.txt#0", "Lord Dartmoor came."), ("retain:a.txt#1", "Lord Dartmoor left."),
             ("retain:b.txt#0", "They saw Dartmoor.")]
    stats = count_ngrams(texts, max_n=2, ordinary=set(), documents=True)
    assert stats.count["Dartmoor"] == 3
    assert stats.top_document["Dartmoor"] == 2
    assert stats.documents == 2


def test_alphanumeric_names_are_counted_but_not_ordinals_money_or_measures():
    assert alphanumeric_names("at 221b, on the 4th, 23d, 10s. 6d. 3l. 1890s, 5ft, B24 and x2") == ["221b", "B24"]
    stats = count_ngrams([("forget:a.txt#0", "He lived at 221b with Holmes.")], max_n=2, ordinary=set())
    assert stats.count["221b"] == 1 and "221b" in stats.alphanumeric
    assert ner_key("221B Baker Street") == "221B Baker Street"
    assert ner_key("341") is None


def test_a_title_in_upper_case_and_in_the_contents_is_one_heading():
    forget = passages(
        "Contents\nThe Golden Pince-Nez\nThe Stock-Broker's Clerk",
        "THE GOLDEN PINCE-NEZ\n\nHe came in.", "THE STOCK-BROKER'S CLERK\n\nShe left.",
    )
    reference = passages("Nothing here.", doc="retain:r.txt")
    found, sizes = collect_evidence(
        forget, reference, AnchorParams(min_count=3), recognise=lambda texts: [[] for _ in texts],
        plausible=lambda e, sizes: False,
    )
    for title in ("The Golden Pince-Nez", "The Stock-Broker's Clerk"):
        assert found[title].headings == 2 and "heading" in found[title].signals
    assert "The Golden Pince-nez" not in found
    assert sizes.reference_documents == 1


def test_english_ratio_and_spread_reference():
    e = Evidence("Harry", forget=60, zipf=4.72, reference=9, reference_top=8)
    assert round(e.english_ratio(CorpusSizes(10_000, 1, 3)), 1) == round(60 / 10_000 / 10 ** (4.72 - 9), 1)
    assert e.spread_reference(CorpusSizes(1, 1, 3)) == 1
    assert e.spread_reference(CorpusSizes(1, 1, 2)) == 9
