"""Statistics that separate a corpus's own expressions from ordinary English (pure functions).

The forget corpus is compared with the reference (retain) corpora and with general English
(wordfreq). Candidates are runs of capitalised words and their n-grams; each is scored with the
weighted log-odds ratio with an informative Dirichlet prior (Monroe, Colaresi & Quinn 2008,
"Fightin' Words"); :mod:`pipeline.core.anchor_selection` decides which become anchors.
Nothing here knows about any particular book.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.core.lexicon import (
    ABBREVIATIONS, HEADING_SMALL_WORDS, NAME_CONNECTORS, NUMBER_SUFFIXES, POSSESSIVE_SUFFIXES, TITLES,
    is_roman_numeral,
)

GENERIC_HEADINGS = re.compile(
    r"^(?:chapter|part|book|volume|vol\.?|preface|contents|table of contents|introduction|prologue|"
    r"epilogue|appendix|conclusion|index|the end|finis|letter|note|notes)\b[\s\w.]*$",
    re.IGNORECASE,
)
_ALPHANUMERIC = re.compile(r"(?<![\w'’\-])(?:\d+[^\W\d_]+|[^\W\d_]+\d+)[^\W_]*(?![\w'’\-])")
_WORD = re.compile(r"[^\W\d_]+(?:['’\-][^\W\d_]+)*(?:['’]s?)?")
_SENTENCE_END = re.compile(r"(?:[.!?:;]|--|—)[\"'”’)\]]*\s*$")
# An opening quote or bracket: straight quotes only when not right after punctuation ('," said').
_OPENING = re.compile(r"(?:^|\s)[\"“‘'(\[]\s*$|[“‘(\[]\s*$")


@dataclass(frozen=True)
class Token:
    """A word of a passage: ``text`` without a possessive suffix, its offsets, its context."""

    text: str
    start: int
    end: int
    possessive: bool
    sentence_initial: bool
    joined: bool
    """Separated from the previous token by a single space only (so it may continue a name)."""


def is_capitalised(word: str) -> bool:
    """Starts with a capital; the pronoun "I" (and "O") is capitalised by rule, not as a name."""
    return word[:1].isupper() and word not in {"I", "O"}


def tokenize(text: str) -> list[Token]:
    """Words with possessives split off, and whether each starts a sentence."""
    tokens: list[Token] = []
    previous_end = 0
    previous: str | None = None
    for match in _WORD.finditer(text):
        word, start = match.group(0), match.start()
        possessive = False
        for suffix in POSSESSIVE_SUFFIXES:
            # A bare apostrophe is possessive only after an s ("Holmes'"); else a closing quote.
            if word.endswith(suffix) and len(word) > len(suffix) and (len(suffix) == 2 or word[-2] in "sS"):
                word, possessive = word[: -len(suffix)], True
                break
        gap = text[previous_end:start]
        # "Mr. Holmes", "John H. Watson": an abbreviation's or an initial's dot ends no sentence.
        after_title = previous is not None and gap == ". " and (
            previous in ABBREVIATIONS or (len(previous) == 1 and previous.isupper() and previous not in {"I", "O"})
        )
        if previous is None:
            initial = True
        elif after_title:
            initial = False
        else:
            initial = bool(_SENTENCE_END.search(gap) or _OPENING.search(gap) or "\n" in gap)
        joined = previous is not None and (gap == " " or after_title)
        tokens.append(Token(word, start, start + len(word), possessive, initial, joined))
        previous_end, previous = match.end(), word
    return tokens


def _capital_after_connectors(tokens: list[Token], index: int) -> bool:
    """``of the Baskervilles``: connectors, then a capitalised word, all joined by single spaces."""
    for token in tokens[index + 1:]:
        if not token.joined:
            return False
        if token.text not in NAME_CONNECTORS:
            return is_capitalised(token.text)
    return False


def capitalised_runs(tokens: list[Token], *, ordinary: set[str]) -> list[list[Token]]:
    """Maximal runs of capitalised words joined by single spaces (connectors allowed inside).

    A run's first word is dropped when it starts a sentence and is an ordinary lower-case word
    elsewhere (``Then Holmes`` -> ``Holmes``). A possessive ends a run.
    """
    runs: list[list[Token]] = []
    current: list[Token] = []

    def close() -> None:
        while current and current[-1].text in NAME_CONNECTORS:
            current.pop()
        if current and current[0].sentence_initial and current[0].text.lower() in ordinary:
            current.pop(0)
        if current:
            runs.append(list(current))
        current.clear()

    for index, token in enumerate(tokens):
        capital = is_capitalised(token.text)
        continues = bool(current) and token.joined and not current[-1].possessive
        if capital and continues:
            current.append(token)
        elif token.text in NAME_CONNECTORS and continues and _capital_after_connectors(tokens, index):
            current.append(token)
        else:
            close()
            if capital:
                current.append(token)
    close()
    return runs


def surface(tokens: list[Token]) -> str:
    """The n-gram as it reads: titles keep their dot (``Mr. Holmes``)."""
    words = []
    for i, token in enumerate(tokens):
        abbreviation = token.text in ABBREVIATIONS or (len(token.text) == 1 and token.text.isupper())
        dotted = abbreviation and i + 1 < len(tokens) and tokens[i + 1].joined
        words.append(token.text + ("." if dotted else ""))
    return " ".join(words)


def canonical(text: str) -> str:
    """ALL-CAPS forms fold into the mixed-case key (``SHERLOCK HOLMES`` -> ``Sherlock Holmes``)."""
    if text.isupper() and sum(ch.isalpha() for ch in text) > 1:
        return " ".join(
            w.lower() if w.lower() in NAME_CONNECTORS and i else w[:1] + w[1:].lower()
            for i, w in enumerate(text.split(" "))
        )
    return text


@dataclass
class NgramStats:
    """Occurrences of capitalised n-grams (and alphanumeric names) in one corpus."""

    count: Counter = field(default_factory=Counter)
    mid_sentence: Counter = field(default_factory=Counter)
    possessive: Counter = field(default_factory=Counter)
    passages: dict = field(default_factory=lambda: defaultdict(list))
    tokens: int = 0
    top_document: Counter = field(default_factory=Counter)
    """Per key, its occurrences in the one document that uses it most (with ``documents=True``)."""
    documents: int = 0
    alphanumeric: set = field(default_factory=set)
    """Keys that are alphanumeric names ("221b"), not capitalised words."""


def is_abbreviation(word: str) -> bool:
    """"Mr", "St", or an initial ("J" of "Enoch J. Drebber")."""
    return word in ABBREVIATIONS or (len(word) == 1 and word.isupper())


def ngrams_of(run: list[Token], max_n: int) -> Iterable[tuple[int, int]]:
    """``(i, j)`` of the n-grams of a run that neither start nor end with a connector, nor end
    with an abbreviation or initial ("Enoch J" is no name)."""
    for i in range(len(run)):
        if run[i].text in NAME_CONNECTORS:
            continue
        for j in range(i + 1, min(len(run), i + max_n) + 1):
            last = run[j - 1].text
            if last not in NAME_CONNECTORS and not (is_abbreviation(last) and j - i > 1):
                yield i, j


def alphanumeric_names(text: str) -> list[str]:
    """Tokens that join digits and letters into a name ("221b", "B24"), not into an ordinal, a
    sum of money or a measure ("4th", "23d", "10s"; :data:`~pipeline.core.lexicon.NUMBER_SUFFIXES`)."""
    names = []
    for match in _ALPHANUMERIC.finditer(text):
        token = match.group(0)
        suffix = token.lstrip("0123456789")
        if (token[0].isdigit() and suffix.lower() in NUMBER_SUFFIXES) or token[0].islower():
            continue
        names.append(token)
    return names


def count_ngrams(
    passages: Iterable[tuple[str, str]], *, max_n: int, ordinary: set[str], examples: int = 3,
    documents: bool = False,
) -> NgramStats:
    """Count capitalised n-grams and alphanumeric names of ``(passage_id, text)`` pairs.

    Keys are folded by :func:`canonical`. With ``documents``, also the count of each key in the
    document that uses it most (``top_document``; a passage id is ``<doc_id>#<index>``).
    """
    stats = NgramStats()
    per_document: dict[str, Counter] = defaultdict(Counter)
    for passage_id, text in passages:
        tokens = tokenize(text)
        stats.tokens += len(tokens)
        keys: list[tuple[str, bool, bool]] = []  # (key, mid-sentence, possessive)
        for run in capitalised_runs(tokens, ordinary=ordinary):
            for i, j in ngrams_of(run, max_n):
                keys.append((canonical(surface(run[i:j])), not run[i].sentence_initial, run[j - 1].possessive))
        for name in alphanumeric_names(text):
            stats.alphanumeric.add(name)
            keys.append((name, True, False))
        document = per_document[passage_id.rsplit("#", 1)[0]] if documents else None
        for key, mid_sentence, possessive in keys:
            stats.count[key] += 1
            if mid_sentence:
                stats.mid_sentence[key] += 1
            if possessive:
                stats.possessive[key] += 1
            if document is not None:
                document[key] += 1
            seen = stats.passages[key]
            if len(seen) < examples and (not seen or seen[-1] != passage_id):
                seen.append(passage_id)
    stats.documents = len(per_document)
    for counts in per_document.values():
        for key, count in counts.items():
            if count > stats.top_document[key]:
                stats.top_document[key] = count
    return stats


def lowercase_counts(texts: Iterable[str], phrases: set[str], max_n: int) -> Counter:
    """Occurrences of ``phrases`` (given in lower case) written in lower case in ``texts``."""
    found: Counter = Counter()
    for text in texts:
        words = [t.text for t in tokenize(text)]
        for i, word in enumerate(words):
            if not word.islower():
                continue
            for j in range(i + 1, min(len(words), i + max_n) + 1):
                if not words[j - 1].islower():
                    break
                phrase = " ".join(words[i:j])
                if phrase in phrases:
                    found[phrase] += 1
    return found


def log_odds_z(
    y_forget: float, n_forget: float, y_reference: float, n_reference: float, alpha: float, alpha0: float
) -> float:
    """Weighted log-odds z-score of a term, forget vs reference, Dirichlet prior ``alpha``.

    delta = log((y_f + a) / (n_f + a0 - y_f - a)) - log((y_r + a) / (n_r + a0 - y_r - a));
    var ~= 1 / (y_f + a) + 1 / (y_r + a); z = delta / sqrt(var). Positive: typical of forget.
    """
    delta = math.log((y_forget + alpha) / (n_forget + alpha0 - y_forget - alpha)) - math.log(
        (y_reference + alpha) / (n_reference + alpha0 - y_reference - alpha)
    )
    return delta / math.sqrt(1.0 / (y_forget + alpha) + 1.0 / (y_reference + alpha))


def prior_alpha(zipf: float, alpha0: float, floor: float = 0.5) -> float:
    """Prior pseudo-count from general-English frequency (Zipf = log10 per 10^9 words).

    The floor keeps terms absent from one corpus from getting an unbounded variance, so a
    name seen 30 times in the forget corpus and never elsewhere still scores well.
    """
    return max(alpha0 * 10 ** (zipf - 9), floor)


def name_words(key: str) -> list[str]:
    """The words of a key that carry its identity (no titles, no connectors)."""
    return [w for w in key.split(" ") if w not in TITLES and w.lower() not in NAME_CONNECTORS]


def is_heading(line: str) -> bool:
    """A short line in Title Case or UPPER CASE without closing punctuation."""
    words = line.split()
    if not 2 <= len(words) <= 10 or line[-1] in ".,;:!?\"'":
        return False
    content = [w for w in words if w.lower() not in HEADING_SMALL_WORDS]
    return bool(content) and all(is_capitalised(w) or not w[:1].isalpha() for w in content)


def heading_key(line: str) -> str | None:
    """The canonical key of a heading line, or None for generic headings (``CHAPTER IV``)."""
    line = " ".join(line.split())
    # "VII. THE DEATH OF A HERO" and its contents line "The Death of a Hero" are one title.
    number, _, rest = line.partition(" ")
    if rest and (is_roman_numeral(number.rstrip(".:)")) or number.rstrip(".:)").isdigit()):
        line = rest
    if not is_heading(line) or GENERIC_HEADINGS.match(line):
        return None
    if all(is_roman_numeral(w) or w.lower() in NAME_CONNECTORS for w in line.split()):
        return None
    # One key for "A STUDY IN SCARLET" (heading) and "A Study In Scarlet" (contents).
    return " ".join(
        w.lower() if (i and w.lower() in HEADING_SMALL_WORDS) else (_capitalise_parts(w) if line.isupper() else w)
        for i, w in enumerate(line.split())
    )


def _capitalise_parts(word: str) -> str:
    # "PINCE-NEZ" -> "Pince-Nez", "STOCK-BROKER'S" -> "Stock-Broker's": as a contents line writes it.
    return "-".join(part[:1] + part[1:].lower() for part in word.split("-"))
