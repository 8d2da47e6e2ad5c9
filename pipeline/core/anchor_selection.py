"""Choosing anchors among candidate keys: hygiene, nesting, kind (pure functions).

The evidence comes from :mod:`pipeline.core.anchor_evidence`; this module refuses keys by the
hygiene rules (each refusal with its reason), resolves nesting (a key seen only inside longer
anchors) and composition (a key made only of other anchors), decides each anchor's kind and the
gender its pronouns tell, and builds the candidate rows (:func:`mine_anchors`). Nothing here
knows about any particular book.

Specificity is relative: a key must be far more frequent in the forget corpus than in the
reference corpora (``anchors.min_specificity``), and a one-word key also than in general English
(``anchors.min_english_ratio``; a word as common as ``anchors.common_zipf`` needs
``anchors.min_common_ratio`` and person or place evidence from NER). So a protagonist with a
common first name ("Harry", "Elizabeth") is an anchor, and "London" or "Monday" is not.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Protocol

import pandas as pd

from pipeline.core.anchor_evidence import (
    CorpusSizes, Evidence, EvidenceSettings, Recogniser, collect_evidence, female_share, occurrences, pronoun_gender,
)
from pipeline.core.anchor_match import AnchorMatcher
from pipeline.core.anchor_mining import name_words
from pipeline.core.lexicon import (
    FEASTS, FEMALE_HONORIFICS, HEADING_SMALL_WORDS, HONORIFICS, MALE_HONORIFICS, MONTHS, RELIGIOUS_WORDS, TITLES,
    WEEKDAYS, is_place_word, is_roman_like,
)

NER_KINDS = {
    "PERSON": "person", "GPE": "place", "LOC": "place", "FAC": "place", "ORG": "organisation",
    "NORP": "organisation", "WORK_OF_ART": "work_title", "PRODUCT": "object", "EVENT": "other", "LAW": "other",
}
# Words that are capitalised in any text but name nothing of the forget corpus, and why.
_LEXICAL = (
    (WEEKDAYS | MONTHS | FEASTS, "a weekday, month or feast"),
    (RELIGIOUS_WORDS, "a religious word"),
)


class MiningSettings(EvidenceSettings, Protocol):
    """The thresholds mining reads (``pipeline.params.AnchorParams`` has them all)."""

    min_capitalised: float
    min_specificity: float
    min_english_ratio: float
    common_zipf: float
    min_common_ratio: float
    min_score: float
    max_anchors: int


def extends_anchor(key: str, anchors: set[str]) -> bool:
    """A name built on an anchor: given names or a title before an anchor surname ("Mary
    Morstan", "Enoch J. Drebber", "Inspector Gregory"), or an anchor before a place word
    ("Baskerville Hall")."""
    words = name_words(key)
    if len(words) < 2:
        return len(words) == 1 and len(key.split(" ")) > 1 and is_titled_name(key) and words[0] in anchors
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


def lexical_reason(key: str) -> str | None:
    """Keys whose every name word is a weekday, month or feast, a religious word or a roman
    numeral, keys holding a weekday, and quoted sentences."""
    words = name_words(key)
    for lexicon, what in _LEXICAL:
        if words and all(w.casefold() in lexicon for w in words):
            return what
    # A weekday is never part of a name ("On Monday Harry"); a month may be ("April", "June").
    if any(w.casefold() in WEEKDAYS for w in words):
        return "a weekday, month or feast"
    if words and all(is_roman_like(w) for w in words):
        return "a roman numeral"
    # A quoted sentence is no name or title: it has sentence punctuation, or lower-case words
    # that no title writes in lower case ("Come here, my boy"); "d'Artagnan" is a name.
    if any(mark in key for mark in ",;!?") or any(
        w[:1].islower() and w not in HEADING_SMALL_WORDS and not {"'", "’"} & set(w) for w in key.split(" ")[1:]
    ):
        return "a quoted sentence, not a name or title"
    return None


def hygiene(
    e: Evidence, settings: MiningSettings, sizes: CorpusSizes, *,
    min_count: int | None = None, min_score: float | None = None, ner_known: bool = True,
    english: bool = True,
) -> str | None:
    """Why ``e`` may not be an anchor, or None. Rules in order; the first that fails is the reason.

    ``min_count`` and ``min_score`` override the settings' (the relaxed rules for full names);
    ``ner_known=False`` skips the rule that needs NER (before NER has run); ``english=False``
    skips the general-English rules (a surname common in English may still carry a full name).
    """
    min_count = settings.min_count if min_count is None else min_count
    min_score = settings.min_score if min_score is None else min_score
    words = name_words(e.key)
    if not words:
        return "a title or connector only, not a name"
    lexical = lexical_reason(e.key)
    if lexical:
        return lexical
    # "Abbey Grange" is a name when NER says so; "Hall" or "Church Street" never is.
    if all(is_place_word(w) for w in words) and (len(words) == 1 or (ner_known and not e.ner)):
        return "a generic place word"
    heading_only = e.headings > 0 and "heading" in e.signals and e.forget < min_count
    if e.forget < min_count and not heading_only:
        return f"fewer than anchors.min_count ({min_count}) occurrences"
    forget_rate = e.forget / max(sizes.forget_tokens, 1)
    reference = e.spread_reference(sizes)
    reference_rate = reference / max(sizes.reference_tokens, 1)
    if reference and forget_rate < settings.min_specificity * reference_rate:
        return (
            f"common in the reference corpora ({e.reference} there, rate ratio "
            f"{forget_rate / reference_rate:.1f} < anchors.min_specificity)"
        )
    # A one-word key is judged against general English too; a phrase is not (wordfreq's
    # estimate for a phrase is its rarest word's, far above its real frequency), nor a title
    # with a name ("Sir Robert": the title makes it rare).
    if english and len(e.key.split(" ")) == 1 and "alphanumeric" not in e.signals:
        ratio = e.english_ratio(sizes)
        if ratio < settings.min_english_ratio:
            return (
                f"no more frequent than in general English ({ratio:.1f} times its rate, zipf {e.zipf:.2f}; "
                "< anchors.min_english_ratio)"
            )
        if e.zipf >= settings.common_zipf and ratio < settings.min_common_ratio:
            return (
                f"a common English word (zipf {e.zipf:.2f}) only {ratio:.1f} times its general rate "
                "(< anchors.min_common_ratio)"
            )
        if e.zipf >= settings.common_zipf and ner_known and not e.name_label:
            return f"a common English word (zipf {e.zipf:.2f}) that NER does not call a person or place"
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


def is_titled_name(key: str) -> bool:
    """A title with a name ("Mrs. Vane", "Aunt Polly", "Colonel Moran"): always a person."""
    first = key.split(" ")[0]
    return first in TITLES and first.rstrip(".").casefold() in HONORIFICS and bool(name_words(key))


def decide_kind(e: Evidence, variants: list[str], *, titled: int = 0) -> str:
    """The kind of an anchor, first rule that applies.

    A title with a name, or a name mostly written after a title (``titled`` of its ``e.forget``
    occurrences), is a person, never a work title or a place; then a recurring heading is a work
    title; then the majority NER label (but a name ending with a place word is no person:
    "Grimpen Mire"); then any title seen before it (person) or a place word ending it (place).
    """
    words = e.key.split(" ")
    if is_titled_name(e.key) or (titled >= 2 and titled * 4 >= e.forget):
        return "person"
    if "heading" in e.signals and e.headings * 2 >= e.forget:
        return "work_title"
    if e.ner:
        label, _ = max(e.ner.items(), key=lambda item: (item[1], item[0]))
        kind = NER_KINDS.get(label, "other")
        return "place" if kind == "person" and is_place_word(words[-1]) else kind
    if titled or any(v.split(" ")[0] in TITLES for v in variants if v != e.key):
        return "person"
    if is_place_word(words[-1]):
        return "place"
    return "other"


def person_gender(key: str, pronouns: Counter, baseline: float) -> str:
    """A gendered title in the key says it ("Miss Hunter"); else the pronouns after it,
    against the corpus's ``baseline`` share of female pronouns (see :func:`pronoun_gender`)."""
    title = key.split(" ")[0].rstrip(".").casefold()
    if title in FEMALE_HONORIFICS or title in MALE_HONORIFICS:
        return "female" if title in FEMALE_HONORIFICS else "male"
    return pronoun_gender(pronouns, baseline)


def select(
    evidence: dict[str, Evidence], settings: MiningSettings, sizes: CorpusSizes
) -> tuple[list[Evidence], list[tuple[Evidence, str]]]:
    """Apply hygiene, nesting and composition rules; rank by score; cap at max_anchors."""
    refused: list[tuple[Evidence, str]] = []
    passed = []
    rare: list[Evidence] = []
    for e in evidence.values():
        reason = hygiene(e, settings, sizes)
        if reason and reason.startswith("fewer than") and len(e.key.split(" ")) > 1:
            rare.append(e)
        elif reason:
            refused.append((e, reason))
        else:
            passed.append(e)
    # A full name whose other words are ordinary ("Mary Morstan": "Mary" is no anchor) needs
    # only anchors.min_count_in_name occurrences when its surname is a name of the corpus: an
    # anchor, a surname written after a title ("Mr. Holder"), or a word that fails only for
    # being common in general English ("Sutherland"). Otherwise its first name would survive
    # translation wherever the full name is written.
    surnames = {name_words(e.key)[0] for e in passed if len(name_words(e.key)) == 1} | {
        name_words(e.key)[0] for e, reason in refused
        if len(e.key.split(" ")) == 1 and hygiene(e, settings, sizes, english=False) is None
    }
    # A rare n-gram always followed by the same word is a piece of a longer name ("Hilda
    # Trelawney" of "Hilda Trelawney Hope"), not a name.
    continued: dict[str, int] = defaultdict(int)
    for e in evidence.values():
        head = e.key.rsplit(" ", 1)[0]
        continued[head] = max(continued[head], e.forget)
    for e in rare:
        reason = hygiene(e, settings, sizes, min_count=settings.min_count_in_name, min_score=float("-inf"))
        if reason is None and continued.get(e.key, 0) >= e.forget:
            reason = "a piece of a longer name: always followed by the same word"
        if reason is None and extends_anchor(e.key, surnames):
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
    evidence, sizes = collect_evidence(
        forget, reference, settings, recognise=recognise,
        plausible=lambda e, sizes: hygiene(e, settings, sizes, ner_known=False) is None,
    )
    chosen, refused = select(evidence, settings, sizes)

    matcher = AnchorMatcher(e.key for e in chosen)
    found = occurrences(forget, matcher, settings.examples)
    forget_counts = found.counts
    reference_counts = occurrences(reference, matcher, 0).counts
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
    kinds = {e.key: decide_kind(e, sorted(found.variants.get(e.key, set()) | {e.key}), titled=found.titled[e.key])
             for e in chosen}
    baseline = female_share(found.pronouns[key] for key, kind in kinds.items() if kind == "person")
    rows = []
    for rank, e in enumerate(chosen, start=1):
        seen = sorted(found.variants.get(e.key, set()) | {e.key})
        kind = kinds[e.key]
        rows.append({
            "anchor": e.key, "kind": kind, "variants": seen,
            "forget_count": forget_counts[e.key], "reference_count": reference_counts.get(e.key, 0),
            "capitalised_ratio": round(e.capitalised_ratio, 6), "score": round(e.score, 6), "rank": rank,
            "example_passages": found.examples.get(e.key, []), "signals": sorted(e.signals),
            "ner_labels": [f"{label}:{count}" for label, count in sorted(e.ner.items())],
            "part_of": containers.get(e.key, []),
            "gender": person_gender(e.key, found.pronouns[e.key], baseline) if kind == "person" else "",
        })
    refused.sort(key=lambda item: (-item[0].forget, item[0].key))
    return MinedAnchors(rows, refused)
