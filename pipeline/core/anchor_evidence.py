"""Evidence about candidate anchor keys: counts in both corpora, general English, NER, pronouns.

:func:`collect_evidence` gathers one :class:`Evidence` per candidate key proposed by any signal
(capitalised n-grams and alphanumeric names, recurring headings, named entities);
:func:`occurrences` counts the chosen anchors with the matcher the blocks stage uses and reads
around each occurrence: surface variants, the title before it ("Mrs. Vane"), and the first
gendered pronoun after it. Named-entity recognition is passed in as a function (the stage loads
spaCy), so everything here runs on ten-word examples in tests. Nothing here knows about any
particular book.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd
from wordfreq import zipf_frequency

from pipeline.core.anchor_match import AnchorMatcher
from pipeline.core.anchor_mining import (
    canonical, count_ngrams, heading_key, log_odds_z, lowercase_counts, prior_alpha, tokenize,
)
from pipeline.core.lexicon import POSSESSIVE_SUFFIXES, TITLES

# NER labels that make a word a name of a person or a place (evidence for a common word).
NAME_LABELS = frozenset({"PERSON", "GPE", "LOC"})
# Zipf 1 (one per 100 million words) stands for words general English does not list.
_FLOOR_ZIPF = 1.0
# The first gendered pronoun within this many characters after a name votes for its gender.
_PRONOUN_WINDOW = 120
_PRONOUN = re.compile(r"\b(?:(he|him|his|himself)|(she|her|hers|herself))\b", re.IGNORECASE)


class EvidenceSettings(Protocol):
    """The settings evidence collection reads (``pipeline.params.AnchorParams`` has them)."""

    max_ngram: int
    min_count: int
    min_count_in_name: int
    prior_strength: float
    ner_sample: int
    examples: int


# Named-entity recognition: texts in, ``(entity text, label)`` per text out.
Recogniser = Callable[[list[str]], list[list[tuple[str, str]]]]


@dataclass(frozen=True)
class CorpusSizes:
    """Token counts of the forget and reference corpora, and the reference's document count."""

    forget_tokens: int
    reference_tokens: int
    reference_documents: int


@dataclass
class Evidence:
    """Everything known about one candidate key while deciding."""

    key: str
    signals: set[str] = field(default_factory=set)
    ner: Counter = field(default_factory=Counter)
    forget: int = 0
    mid_sentence: int = 0
    lower: int = 0
    reference: int = 0
    reference_top: int = 0
    """Occurrences in the one reference document that uses the key most."""
    headings: int = 0
    score: float = 0.0
    zipf: float = 0.0

    @property
    def capitalised_evidence(self) -> int:
        """Occurrences whose capital is no sentence start: all of them for several words
        ("Reginald Musgrave" opening a sentence still has a capital M)."""
        return self.forget if " " in self.key else self.mid_sentence

    @property
    def capitalised_ratio(self) -> float:
        seen = self.capitalised_evidence + self.lower
        return self.capitalised_evidence / seen if seen else 0.0

    def english_ratio(self, sizes: CorpusSizes) -> float:
        """Forget-corpus rate over the general-English rate (wordfreq Zipf; per word both)."""
        english_rate = 10 ** (max(self.zipf, _FLOOR_ZIPF) - 9)
        return (self.forget / max(sizes.forget_tokens, 1)) / english_rate

    def spread_reference(self, sizes: CorpusSizes) -> int:
        """Reference occurrences without the one document that uses the key most, when the
        reference has three documents or more: a name that one reference book happens to use
        ("Lord Dartmoor" in a novel) does not make a place of the forget corpus common."""
        return self.reference - self.reference_top if sizes.reference_documents >= 3 else self.reference

    @property
    def name_label(self) -> bool:
        """Named-entity recognition mostly calls it a person or a place."""
        if not self.ner:
            return False
        label, _ = max(self.ner.items(), key=lambda item: (item[1], item[0]))
        return label in NAME_LABELS


def ner_key(text: str) -> str | None:
    """Canonical key of an entity's text: no leading article, no possessive, ALL CAPS folded.

    Keys start with a capital, or with a digit when they hold an alphanumeric name ("221B
    Baker Street"); anything else (a lower-case phrase, a bare number) is None.
    """
    words = text.replace("\n", " ").split()
    while words and words[0].lower() in {"the", "a", "an"}:
        words = words[1:]
    if not words:
        return None
    last = words[-1]
    for suffix in POSSESSIVE_SUFFIXES:
        if last.endswith(suffix) and len(last) > len(suffix):
            words[-1] = last[: -len(suffix)]
            break
    key = canonical(" ".join(words))
    alphanumeric = key[:1].isdigit() and any(ch.isalpha() for ch in words[0])
    return key if key[:1].isupper() or alphanumeric else None


def collect_evidence(
    forget: pd.DataFrame, reference: pd.DataFrame, settings: EvidenceSettings, *, recognise: Recogniser,
    plausible: Callable[[Evidence, CorpusSizes], bool],
) -> tuple[dict[str, Evidence], CorpusSizes]:
    """Evidence for every key proposed by any signal, and the sizes of both corpora.

    Args:
        forget: forget passages (``passage_id``, ``text``; ids are ``<doc_id>#<index>``).
        reference: reference passages, same columns.
        settings: thresholds (see :class:`EvidenceSettings`).
        recognise: the named-entity recogniser, run on a sample of the forget passages.
        plausible: whether a key measured so far may become an anchor; NER reads only the
            passages of plausible keys (``anchors.ner_sample`` per key).
    """
    lowercase_words = Counter(
        t.text for text in pd.concat([forget["text"], reference["text"]]) for t in tokenize(text) if t.text.islower()
    )
    ordinary = {w for w, c in lowercase_words.items() if c >= 2}
    forget_stats = count_ngrams(
        zip(forget["passage_id"], forget["text"]), max_n=settings.max_ngram, ordinary=ordinary,
        examples=max(settings.ner_sample, settings.examples),
    )
    reference_stats = count_ngrams(
        zip(reference["passage_id"], reference["text"]), max_n=settings.max_ngram, ordinary=ordinary, examples=0,
        documents=True,
    )
    sizes = CorpusSizes(forget_stats.tokens, reference_stats.tokens, reference_stats.documents)

    evidence: dict[str, Evidence] = {}

    def get(key: str) -> Evidence:
        if key not in evidence:
            evidence[key] = Evidence(key)
        return evidence[key]

    for key, count in forget_stats.count.items():
        # Multi-word names get a second chance below min_count (see select: "Mary Morstan").
        if count >= settings.min_count or (count >= settings.min_count_in_name and " " in key):
            get(key).signals.add("alphanumeric" if key in forget_stats.alphanumeric else "log_odds")
    _add_headings(forget["text"], get, evidence)

    def measure(keys: list[str]) -> None:
        lower = lowercase_counts(forget["text"], {k.lower() for k in keys}, settings.max_ngram)
        for key in keys:
            e = evidence[key]
            e.forget = max(forget_stats.count.get(key, 0), e.headings)
            e.mid_sentence = forget_stats.mid_sentence.get(key, 0)
            e.lower = lower.get(key.lower(), 0)
            e.reference = reference_stats.count.get(key, 0)
            e.reference_top = reference_stats.top_document.get(key, 0)
            e.zipf = zipf_frequency(key, "en")
            alpha = prior_alpha(e.zipf, settings.prior_strength)
            e.score = log_odds_z(
                e.forget, sizes.forget_tokens, e.spread_reference(sizes), sizes.reference_tokens, alpha,
                settings.prior_strength,
            )

    measure(list(evidence))
    # NER types the candidates and proposes entities of its own. It reads a sample of the
    # passages where each plausible candidate occurs (anchors.ner_sample): NER is the slow
    # part, and typing needs a few occurrences, not all.
    chosen = [k for k, e in evidence.items() if plausible(e, sizes)]
    sampled = {pid for key in chosen for pid in forget_stats.passages.get(key, [])[: settings.ner_sample]}
    sample = forget[forget["passage_id"].isin(sampled)]
    found: dict[str, Counter] = defaultdict(Counter)
    for entities in recognise(sample["text"].tolist()):
        for text, label in entities:
            key = ner_key(text)
            if key is not None:
                found[key][label] += 1
    # Entities that are no run of capitalised words ("Lodge 341") are counted by the matcher.
    own = sorted(k for k in found if k not in evidence)
    own_counts = occurrences(forget, AnchorMatcher(own), 0).counts if own else Counter()
    for key, labels in found.items():
        if key not in evidence and own_counts.get(key, 0) < settings.min_count:
            continue
        e = get(key)
        e.signals.update(f"ner:{label}" for label in labels)
        e.ner.update(labels)
    measure([k for k in own if k in evidence])
    for key in own:
        if key in evidence:
            evidence[key].forget = max(evidence[key].forget, own_counts[key])
            evidence[key].mid_sentence = max(evidence[key].mid_sentence, own_counts[key])
    return evidence, sizes


def _add_headings(texts: pd.Series, get: Callable[[str], Evidence], evidence: dict[str, Evidence]) -> None:
    """Recurring heading lines become ``heading`` keys; a heading seen once is no signal.

    Forms of one title are counted together whatever their case ("THE GOLDEN PINCE-NEZ" and
    the contents line "The Golden Pince-Nez"), under the form a mixed-case line writes.
    """
    forms: dict[str, Counter] = defaultdict(Counter)
    for text in texts:
        for line in text.split("\n"):
            key = heading_key(line)
            if key:
                forms[key.casefold()][(" ".join(line.split()).isupper(), key)] += 1
    for counted in forms.values():
        # The first mixed-case form seen most often; an UPPER-CASE line's folding otherwise.
        (_, key), _ = min(counted.items(), key=lambda item: (item[0][0], -item[1], item[0][1]))
        total = sum(counted.values())
        if total >= 2:
            get(key).headings += total
            get(key).signals.add("heading")
        elif key in evidence:
            evidence[key].headings += total


@dataclass
class Occurrences:
    """What the matcher finds of each anchor in a corpus (see :func:`occurrences`)."""

    counts: Counter = field(default_factory=Counter)
    variants: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    titled: Counter = field(default_factory=Counter)
    """Occurrences right after a title ("Mrs. Vane"), or with one inside the anchor."""
    pronouns: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    """Per anchor, votes ``male``/``female`` of the first gendered pronoun after each occurrence."""


def occurrences(passages: pd.DataFrame, matcher: AnchorMatcher, examples: int) -> Occurrences:
    """Per anchor: matched count, surface variants (with possessive/title), example passages,
    titled occurrences and pronoun votes, over ``passages`` (``passage_id``, ``text``)."""
    found = Occurrences()
    for passage_id, text in zip(passages["passage_id"], passages["text"]):
        spans = matcher.find(text)
        for index, span in enumerate(spans):
            anchor = span.anchor
            found.counts[anchor] += 1
            found.variants[anchor].add(span.surface)
            tail = text[span.end:span.end + 2]
            if tail.startswith(("'s", "’s")):
                found.variants[anchor].add(span.surface + tail)
            elif tail[:1] in {"'", "’"} and span.surface.endswith("s"):
                found.variants[anchor].add(span.surface + tail[:1])
            head = text[max(0, span.start - 16):span.start].split(" ")
            if span.surface.split(" ")[0] in TITLES:
                found.titled[anchor] += 1
            elif len(head) >= 2 and head[-2] in TITLES:
                found.variants[anchor].add(f"{head[-2]} {span.surface}")
                found.titled[anchor] += 1
            # The first gendered pronoun after the name, before the next name, votes.
            stop = min(span.end + _PRONOUN_WINDOW, spans[index + 1].start if index + 1 < len(spans) else len(text))
            pronoun = _PRONOUN.search(text, span.end, stop)
            if pronoun:
                found.pronouns[anchor]["male" if pronoun.group(1) else "female"] += 1
            seen = found.examples[anchor]
            if len(seen) < examples and (not seen or seen[-1] != passage_id):
                seen.append(passage_id)
    return found


def pronoun_gender(votes: Counter, female_share: float, *, min_votes: int = 3, min_z: float = 2.0) -> str:
    """``"female"``, ``"male"`` or ``""``: what the pronouns after a name say, against the corpus.

    Pronouns after a name often belong to someone else (a story told from one character's side
    puts her "she" after every name), so a name's share of female votes is compared with
    ``female_share``, the share over every person of the corpus: a gender needs ``min_votes``
    votes and a share ``min_z`` standard errors away from it.
    """
    total = votes["male"] + votes["female"]
    if total < min_votes:
        return ""
    base = min(max(female_share, 0.05), 0.95)
    z = (votes["female"] / total - base) / math.sqrt(base * (1 - base) / total)
    return "female" if z >= min_z else "male" if z <= -min_z else ""


def female_share(votes: Iterable[Counter]) -> float:
    """The share of female votes over all ``votes`` (0.5 when there are none)."""
    female = male = 0
    for counter in votes:
        female, male = female + counter["female"], male + counter["male"]
    return female / (female + male) if female + male else 0.5
