"""Choosing anchors among candidate keys: evidence, hygiene, nesting, kind (pure functions).

The statistics come from :mod:`pipeline.core.anchor_mining`; this module gathers them into one
:class:`Evidence` per candidate key, refuses keys by the hygiene rules (each refusal with its
reason), resolves nesting (a key seen only inside longer anchors) and composition (a key made
only of other anchors), decides each anchor's kind, and builds the candidate rows with counts
and variants from the same matcher the blocks stage uses. Named-entity recognition is passed in
as a function (the stage loads spaCy), so the algorithm runs on ten-word examples in tests.
Nothing here knows about any particular book.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import pandas as pd
from wordfreq import zipf_frequency

from pipeline.core.anchor_match import AnchorMatcher
from pipeline.core.anchor_mining import (
    canonical, count_ngrams, heading_key, log_odds_z, lowercase_counts, name_words, prior_alpha, tokenize,
)
from pipeline.core.lexicon import POSSESSIVE_SUFFIXES, TITLES, is_place_word

NER_KINDS = {
    "PERSON": "person", "GPE": "place", "LOC": "place", "FAC": "place", "ORG": "organisation",
    "NORP": "organisation", "WORK_OF_ART": "work_title", "PRODUCT": "object", "EVENT": "other", "LAW": "other",
}


class MiningSettings(Protocol):
    """The thresholds the selection reads (``pipeline.params.AnchorParams`` has them all)."""

    max_ngram: int
    min_count: int
    min_count_in_name: int
    min_capitalised: float
    max_zipf: float
    min_specificity: float
    min_score: float
    prior_strength: float
    max_anchors: int
    ner_sample: int
    examples: int


# Named-entity recognition: texts in, ``(entity text, label)`` per text out.
Recogniser = Callable[[list[str]], list[list[tuple[str, str]]]]


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



def ner_key(text: str) -> str | None:
    """Canonical key of an entity's text: no leading article, no possessive, ALL CAPS folded."""
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
    return key if key[:1].isupper() else None


def extends_anchor(key: str, anchors: set[str]) -> bool:
    """A name built on an anchor: given names before an anchor surname ("Mary Morstan",
    "Enoch J. Drebber"), or an anchor before a place word ("Baskerville Hall")."""
    words = name_words(key)
    if len(words) < 2:
        return False
    surname_last = words[-1] in anchors and key.split(" ")[-1] == words[-1]
    place_last = is_place_word(words[-1]) and any(w in anchors for w in words[:-1])
    return surname_last or place_last


def part_of(keys: list[str], names: list[str], limit: int = 10) -> dict[str, list[str]]:
    """For each key, the longer names that contain it as a phrase (first ``limit``, sorted)."""
    found: dict[str, list[str]] = defaultdict(list)
    for name in sorted(names):
        for key in keys:
            if len(name) > len(key) and _contains(name, key) and len(found[key]) < limit:
                found[key].append(name)
    return found


def hygiene(
    e: Evidence, settings: MiningSettings, n_forget: int, n_reference: int, *,
    min_count: int | None = None, min_score: float | None = None,
) -> str | None:
    """Why ``e`` may not be an anchor, or None. Rules in order; the first that fails is the reason.

    ``min_count`` and ``min_score`` override the settings' (the relaxed rules for full names).
    """
    min_count = settings.min_count if min_count is None else min_count
    min_score = settings.min_score if min_score is None else min_score
    words = name_words(e.key)
    if not words:
        return "a title or connector only, not a name"
    if all(is_place_word(w) for w in words):
        return "a generic place word"
    heading_only = e.headings > 0 and "heading" in e.signals and e.forget < min_count
    if e.forget < min_count and not heading_only:
        return f"fewer than anchors.min_count ({min_count}) occurrences"
    # Zipf of a phrase is dominated by its rarest word, so only single words are held to it;
    # a title made of ordinary words ("A Case of Identity") is judged by the other rules.
    if len(words) == 1 and e.zipf >= settings.max_zipf:
        return f"common in general English (zipf {e.zipf:.2f} >= anchors.max_zipf)"
    forget_rate, reference_rate = e.forget / n_forget, e.reference / max(n_reference, 1)
    if e.reference and forget_rate < settings.min_specificity * reference_rate:
        return (
            f"common in the reference corpora ({e.reference} there, rate ratio "
            f"{forget_rate / reference_rate:.1f} < anchors.min_specificity)"
        )
    if heading_only:
        return None
    if e.capitalised_evidence == 0:
        return "capitalised only at sentence starts: an ordinary word"
    if e.capitalised_ratio < settings.min_capitalised:
        return (
            f"an ordinary word: written in lower case {e.lower} times "
            f"(capitalised share {e.capitalised_ratio:.2f} < anchors.min_capitalised)"
        )
    if e.score < min_score:
        return f"not specific to the forget corpus (score {e.score:.2f} < anchors.min_score)"
    return None


def _contains(longer: str, shorter: str) -> bool:
    return f" {shorter} " in f" {longer} "


def nested_reason(key: str, count: int, accepted: dict[str, int], min_count: int) -> str | None:
    """A key seen (almost) only inside longer accepted keys is one of their parts, not an anchor.

    A container that only adds a title ("Mr. Jabez Wilson" for "Jabez Wilson") does not count:
    the bare name is the better key, and the titled one then goes as made of other anchors.
    """
    words = name_words(key)
    containers = [
        k for k in accepted if len(k) > len(key) and _contains(k, key) and name_words(k) != words
    ]
    # Counts of n-grams include their longer n-grams ("Sherlock Holmes" counts the occurrences
    # of "Mr. Sherlock Holmes"): subtract only the innermost containers.
    innermost = [k for k in containers if not any(o != k and _contains(k, o) for o in containers)]
    independent = count - sum(accepted[k] for k in innermost)
    if containers and independent < min_count:
        return f"only occurs inside longer anchors ({', '.join(sorted(containers)[:3])})"
    return None


def cover_by_keys(words: list[str], keys: set[str]) -> list[str] | None:
    """Split ``words`` into consecutive phrases that are all keys (fewest phrases), or None."""
    best: list[list[str] | None] = [[]] + [None] * len(words)
    for end in range(1, len(words) + 1):
        for start in range(end):
            phrase = " ".join(words[start:end])
            if best[start] is not None and phrase in keys:
                candidate = best[start] + [phrase]
                if best[end] is None or len(candidate) < len(best[end]):
                    best[end] = candidate
    return best[len(words)]


def composed_reason(key: str, keys: set[str]) -> str | None:
    """Hygiene: a key whose name words are covered by other keys adds nothing (``Mr. Holmes``,
    ``Mr. Sherlock Holmes``), since each part is translated consistently anyway."""
    words = name_words(key)
    if not words or len(key.split(" ")) == 1:
        return None
    parts = cover_by_keys(words, keys - {key})
    if parts:
        return f"made only of other anchors ({' + '.join(parts)}) and titles/connectors"
    return None


def decide_kind(e: Evidence, variants: list[str]) -> str:
    if "heading" in e.signals and e.headings * 2 >= e.forget:
        return "work_title"
    if e.ner:
        label, _ = max(e.ner.items(), key=lambda item: (item[1], item[0]))
        return NER_KINDS.get(label, "other")
    words = e.key.split(" ")
    if words[0] in TITLES or any(v.split(" ")[0] in TITLES for v in variants if v != e.key):
        return "person"
    if is_place_word(words[-1]):
        return "place"
    return "other"


def collect_evidence(
    forget: pd.DataFrame, reference: pd.DataFrame, settings: MiningSettings, *, recognise: Recogniser
) -> tuple[dict[str, Evidence], int, int]:
    """Evidence for every key proposed by any signal; token counts of both corpora.

    ``forget`` and ``reference`` hold ``passage_id`` and ``text`` columns; ``recognise`` is
    the named-entity recogniser, run on a sample of the forget passages.
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
        zip(reference["passage_id"], reference["text"]), max_n=settings.max_ngram, ordinary=ordinary, examples=0
    )

    evidence: dict[str, Evidence] = {}

    def get(key: str) -> Evidence:
        if key not in evidence:
            evidence[key] = Evidence(key)
        return evidence[key]

    for key, count in forget_stats.count.items():
        # Multi-word names get a second chance below min_count (see select: "Mary Morstan").
        if count >= settings.min_count or (count >= settings.min_count_in_name and " " in key):
            get(key).signals.add("log_odds")
    for text in forget["text"]:
        for line in text.split("\n"):
            key = heading_key(line)
            if key:
                get(key).headings += 1
    for key in [k for k, e in evidence.items() if e.headings]:
        if evidence[key].headings >= 2:
            evidence[key].signals.add("heading")
        elif not evidence[key].signals:
            del evidence[key]
    n_forget, n_reference = forget_stats.tokens, reference_stats.tokens

    def measure(keys: list[str]) -> None:
        lower = lowercase_counts(forget["text"], {k.lower() for k in keys}, settings.max_ngram)
        for key in keys:
            e = evidence[key]
            e.forget = max(forget_stats.count.get(key, 0), e.headings)
            e.mid_sentence = forget_stats.mid_sentence.get(key, 0)
            e.lower = lower.get(key.lower(), 0)
            e.reference = reference_stats.count.get(key, 0)
            e.zipf = zipf_frequency(key, "en")
            alpha = prior_alpha(e.zipf, settings.prior_strength)
            e.score = log_odds_z(e.forget, n_forget, e.reference, n_reference, alpha, settings.prior_strength)

    measure(list(evidence))
    # NER types the candidates and proposes entities of its own. It reads a sample of the
    # passages where each statistically plausible candidate occurs (anchors.ner_sample): NER is
    # the slow part, and typing needs a few occurrences, not all.
    plausible = [k for k, e in evidence.items() if hygiene(e, settings, n_forget, n_reference) is None]
    sampled = {pid for key in plausible for pid in forget_stats.passages.get(key, [])[: settings.ner_sample]}
    sample = forget[forget["passage_id"].isin(sampled)]
    found: dict[str, Counter] = defaultdict(Counter)
    for entities in recognise(sample["text"].tolist()):
        for text, label in entities:
            key = ner_key(text)
            if key is not None:
                found[key][label] += 1
    # Entities that are no run of capitalised words ("Lodge 341") are counted by the matcher.
    own = sorted(k for k in found if k not in evidence)
    own_counts, _, _ = occurrences(forget, AnchorMatcher(own), 0) if own else (Counter(), None, None)
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
    return evidence, n_forget, n_reference


def select(
    evidence: dict[str, Evidence], settings: MiningSettings, n_forget: int, n_reference: int
) -> tuple[list[Evidence], list[tuple[Evidence, str]]]:
    """Apply hygiene, nesting and composition rules; rank by score; cap at max_anchors."""
    refused: list[tuple[Evidence, str]] = []
    passed = []
    rare: list[Evidence] = []
    for e in evidence.values():
        reason = hygiene(e, settings, n_forget, n_reference)
        if reason and reason.startswith("fewer than") and len(name_words(e.key)) > 1:
            rare.append(e)
        elif reason:
            refused.append((e, reason))
        else:
            passed.append(e)
    # A full name whose other words are ordinary ("Mary Morstan": "Mary" is no anchor) needs
    # only anchors.min_count_in_name occurrences when one of its words is an anchor: otherwise
    # its first name would survive translation wherever the full name is written.
    single = {e.key for e in passed if len(name_words(e.key)) == 1}
    for e in rare:
        reason = hygiene(e, settings, n_forget, n_reference, min_count=settings.min_count_in_name, min_score=float("-inf"))
        if reason is None and extends_anchor(e.key, single):
            e.signals.add("name_extension")
            passed.append(e)
        else:
            refused.append((e, reason or f"fewer than anchors.min_count ({settings.min_count}) occurrences"))
    accepted: dict[str, int] = {}
    kept = []
    for e in sorted(passed, key=lambda e: (-len(e.key.split(" ")), -e.forget, e.key)):
        reason = nested_reason(e.key, e.forget, accepted, settings.min_count) if "heading" not in e.signals else None
        if reason:
            refused.append((e, reason))
            continue
        kept.append(e)
        # Headings are counted apart (a title is not where a name mostly occurs), so a name is
        # never absorbed by the title of the story named after it.
        if "heading" not in e.signals:
            accepted[e.key] = e.forget
    keys = {e.key for e in kept}
    final = []
    for e in kept:
        reason = composed_reason(e.key, keys)
        if reason:
            refused.append((e, reason))
        else:
            final.append(e)
    final.sort(key=lambda e: (-e.score, e.key))
    for e in final[settings.max_anchors:]:
        refused.append((e, f"beyond anchors.max_anchors ({settings.max_anchors})"))
    return final[: settings.max_anchors], refused


def occurrences(passages: pd.DataFrame, matcher: AnchorMatcher, examples: int) -> tuple[Counter, dict, dict]:
    """Per anchor: matched count, surface variants seen (with possessive/title), example passages."""
    counts: Counter = Counter()
    variants: dict[str, set[str]] = defaultdict(set)
    found_in: dict[str, list[str]] = defaultdict(list)
    for passage_id, text in zip(passages["passage_id"], passages["text"]):
        for span in matcher.find(text):
            counts[span.anchor] += 1
            variants[span.anchor].add(span.surface)
            tail = text[span.end:span.end + 2]
            if tail.startswith(("'s", "’s")):
                variants[span.anchor].add(span.surface + tail)
            elif tail[:1] in {"'", "’"} and span.surface.endswith("s"):
                variants[span.anchor].add(span.surface + tail[:1])
            head = text[max(0, span.start - 16):span.start].split(" ")
            if len(head) >= 2 and head[-2] in TITLES and not span.surface.split(" ")[0] in TITLES:
                variants[span.anchor].add(f"{head[-2]} {span.surface}")
            seen = found_in[span.anchor]
            if len(seen) < examples and (not seen or seen[-1] != passage_id):
                seen.append(passage_id)
    return counts, variants, found_in




def reject_row(e: Evidence, reason: str) -> dict:
    """A row of ``anchor_candidates_rejects`` for a refused key."""
    record = f"{e.key} (forget {e.forget}, reference {e.reference}, score {e.score:.2f}, signals {','.join(sorted(e.signals))})"
    return {"source": "passages", "location": e.key, "reason": reason, "record": record}


@dataclass
class MinedAnchors:
    """The outcome of :func:`mine_anchors`: candidate rows in rank order and refused keys."""

    rows: list[dict]
    refused: list[tuple[Evidence, str]]


def mine_anchors(
    forget: pd.DataFrame, reference: pd.DataFrame, settings: MiningSettings, *, recognise: Recogniser
) -> MinedAnchors:
    """Mine the anchors of ``forget`` against ``reference`` (both: ``passage_id``, ``text``).

    Returns rows in the columns of the ``anchor_candidates`` contract (rank 1 = highest score)
    and every refused key with its reason, most frequent first.
    """
    evidence, n_forget, n_reference = collect_evidence(forget, reference, settings, recognise=recognise)
    chosen, refused = select(evidence, settings, n_forget, n_reference)

    matcher = AnchorMatcher(e.key for e in chosen)
    forget_counts, variants, examples = occurrences(forget, matcher, settings.examples)
    reference_counts, _, _ = occurrences(reference, matcher, 0)
    # Counts are the matcher's, as in the blocks stage: a key always inside a longer one
    # ("Lantern of Ravensmoor" in "The Lantern of Ravensmoor") is never translated on its own.
    shadowed = [e for e in chosen if not forget_counts.get(e.key)]
    refused += [(e, "never matched on its own: always inside a longer anchor") for e in shadowed]
    chosen = [e for e in chosen if forget_counts.get(e.key)]
    # Names a key belongs to tell the translation its role ("Sherlock" is a first name in
    # "Sherlock Holmes", even though that key was dropped as made of two anchors).
    names = [e.key for e in chosen if " " in e.key and "heading" not in e.signals] + [
        e.key for e, reason in refused if reason.startswith("made only of other anchors") and "heading" not in e.signals
    ]
    containers = part_of([e.key for e in chosen], names)
    rows = []
    for rank, e in enumerate(chosen, start=1):
        seen = sorted(variants.get(e.key, set()) | {e.key})
        rows.append({
            "anchor": e.key, "kind": decide_kind(e, seen), "variants": seen,
            "forget_count": forget_counts[e.key], "reference_count": reference_counts.get(e.key, 0),
            "capitalised_ratio": round(e.capitalised_ratio, 6), "score": round(e.score, 6), "rank": rank,
            "example_passages": examples.get(e.key, []), "signals": sorted(e.signals),
            "ner_labels": [f"{label}:{count}" for label, count in sorted(e.ner.items())],
            "part_of": containers.get(e.key, []),
        })
    refused.sort(key=lambda item: (-item[0].forget, item[0].key))
    return MinedAnchors(rows, refused)
