"""Translation proposers that reach outside the process, and the choice among proposers.

:func:`make_proposer` turns ``translations.proposer`` into a proposer: the pure
:class:`pipeline.core.offline_proposer.OfflineProposer`, or :class:`OpenAICompatibleProposer`,
which asks an OpenAI-compatible ``/chat/completions`` endpoint and falls back to the offline
proposer for every entity whose reply is unusable. This module sits above ``pipeline.core``:
it reads params and the environment (the API key) and talks to the network.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.lexicon import KEEP_WORDS, TITLE_FUNCTION_WORDS
from pipeline.core.offline_proposer import OfflineProposer
from pipeline.core.translation import (
    AnchorRequest, Proposal, ProposerError, TranslationProposer, check_n, proper_name_words, word_keys, words_of,
)
from pipeline.env import setting
from pipeline.params import OpenAIProposerParams, TranslationParams


_SYSTEM_PROMPT = (
    "You invent generic replacements for names and terms of a book that a language model must "
    "forget. A replacement keeps the text coherent but carries no knowledge of the book."
)


def _user_prompt(requests: Sequence[AnchorRequest], n: int) -> str:
    items = [{"anchor": r.anchor, "kind": r.kind, "variants": list(r.variants)} for r in requests]
    return (
        f"Terms (JSON):\n{json.dumps(items, ensure_ascii=False, indent=1)}\n\n"
        f"For every term give exactly {n} replacements. Replacement i of every term belongs to an "
        f"invented world i (i = 1..{n}): within one world, terms naming the same entity get the same "
        "substitute (if 'Mr. Jonathan Pike' becomes 'Mr. Edward Hale', then 'Pike' becomes 'Hale' "
        "and 'Jonathan' becomes 'Edward'), and different entities get different substitutes.\n"
        "Rules: keep the kind (a person stays a plausible person's name, a place a plausible place, "
        "a title a title) and the shape: honorifics such as Mr. or Dr., generic words such as Street "
        "or Hall, possessives, capitalisation and the number of words. Use ordinary, period-neutral "
        "names that belong to no well-known person, place or story. Never reuse a word of any term "
        "above, and give no synonym, translation or hint of the original.\n"
        "Answer with one JSON object only, mapping every term exactly as spelled above to a list of "
        f"{n} strings, e.g. {{\"Mr. Jonathan Pike\": [\"Mr. Edward Hale\", ...]}}."
    )


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def _parse_reply(content: str) -> dict | None:
    """The JSON object in a model's reply (a ```json fence or surrounding prose tolerated)."""
    fenced = _FENCE.search(content)
    text = fenced.group(1) if fenced else content
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        value = json.loads(text[start:end + 1])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _reply_problem(
    entry: object, request: AnchorRequest, n: int, *, forbidden: frozenset[str], source: frozenset[str]
) -> str | None:
    """Why a reply entry cannot be used (``None``: usable).

    A capitalised word that the anchor's kind does not keep (honorifics, connectors, ``Street``)
    must be new: no word of any anchor (``source``) and, outside work titles, no capitalised word
    of the corpora (``forbidden``). Titles are made of ordinary words that any corpus capitalises
    somewhere, as with the offline proposer.
    """
    if entry is None:
        return "missing from the reply"
    if not isinstance(entry, list):
        return f"not a list but {type(entry).__name__}"
    if len(entry) != n:
        return f"{len(entry)} translations, expected {n}"
    title = request.kind == "work_title"
    protected = source if title else forbidden | source
    allowed = TITLE_FUNCTION_WORDS if title else KEEP_WORDS
    for translation in entry:
        if not isinstance(translation, str) or not translation.strip():
            return "an empty or non-string translation"
        if translation.strip().casefold() == request.anchor.strip().casefold():
            return "a translation equals the anchor"
        for word in words_of(translation):
            if word.stem[0].isupper() and word.key in protected and word.key not in allowed:
                return f"{translation!r} uses {word.stem!r}, a word of the corpora or of an anchor"
    return None


def _entity_groups(requests: Sequence[AnchorRequest]) -> list[list[AnchorRequest]]:
    """Requests that share a proper-name word (variants of one entity), in first-seen order."""
    parent = list(range(len(requests)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # Titles join an entity only through a name that a non-title anchor has ("The Memoirs of
    # Jonathan Pike"), not through ordinary title words ("Adventure").
    names = {w.key for r in requests if r.kind != "work_title" for w in proper_name_words(r.anchor)}
    owner: dict[str, int] = {}
    for index, request in enumerate(requests):
        for word in proper_name_words(request.anchor):
            if word.key not in names:
                continue
            if word.key in owner:
                parent[find(index)] = find(owner[word.key])
            else:
                owner[word.key] = index
    groups: dict[int, list[AnchorRequest]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(find(index), []).append(request)
    return list(groups.values())


def _batches(groups: list[list[AnchorRequest]], size: int) -> list[list[AnchorRequest]]:
    # One entity's anchors go to the same request where possible, so the model can keep them
    # consistent; only an entity larger than a batch is split.
    batches: list[list[AnchorRequest]] = []
    current: list[AnchorRequest] = []
    for group in groups:
        if current and len(current) + len(group) > size:
            batches.append(current)
            current = []
        for request in group:
            if len(current) == size:
                batches.append(current)
                current = []
            current.append(request)
    if current:
        batches.append(current)
    return batches


class OpenAICompatibleProposer:
    """Translations from an OpenAI-compatible ``/chat/completions`` endpoint.

    Every entity (the anchors that share a proper-name word) whose reply is missing or unusable
    takes the :class:`OfflineProposer`'s translations, all its anchors together so that they
    stay consistent with each other; :meth:`propose_marked` says which and why.
    """

    def __init__(self, settings: OpenAIProposerParams, api_key: str | None) -> None:
        self.settings = settings
        self._api_key = api_key
        self.name = f"openai:{settings.model}"
        self.url = settings.base_url.rstrip("/") + "/chat/completions"

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAICompatibleProposer(url={self.url!r}, model={self.settings.model!r})"

    def propose(
        self, requests: list[AnchorRequest], *, n: int, seed: int, forbidden: frozenset[str]
    ) -> dict[str, list[str]]:
        marked = self.propose_marked(requests, n=n, seed=seed, forbidden=forbidden)
        return {anchor: list(proposal.translations) for anchor, proposal in marked.items()}

    def propose_marked(
        self, requests: list[AnchorRequest], *, n: int, seed: int, forbidden: frozenset[str]
    ) -> dict[str, Proposal]:
        """Ask the endpoint in batches of ``settings.batch_size``; fall back per entity.

        Raises:
            ProposerError: the endpoint is unreachable, answers non-2xx or not as a chat
                completion. Unusable *content* is not an error: it falls back.
        """
        check_n(n)
        source = frozenset(key for r in requests for text in (r.anchor, *r.variants) for key in word_keys(text))
        groups = _entity_groups(requests)
        group_of = {r.anchor: index for index, group in enumerate(groups) for r in group}
        usable: dict[str, tuple[str, ...]] = {}
        refused: dict[str, tuple[str, str]] = {}  # anchor -> (reason, reply entry)
        for batch in _batches(groups, self.settings.batch_size):
            content = self._complete(_user_prompt(batch, n), seed=seed)
            reply = _parse_reply(content)
            for request in batch:
                if reply is None:
                    refused[request.anchor] = ("the reply holds no JSON object", content)
                    continue
                entry = reply.get(request.anchor)
                problem = _reply_problem(entry, request, n, forbidden=forbidden, source=source)
                if problem:
                    refused[request.anchor] = (problem, json.dumps(entry, ensure_ascii=False))
                else:
                    usable[request.anchor] = tuple(t.strip() for t in entry)

        failed_groups = {group_of[anchor] for anchor in refused}
        for index in sorted(failed_groups):
            first = next(r.anchor for r in groups[index] if r.anchor in refused)
            for request in groups[index]:
                if request.anchor not in refused:
                    reply_entry = json.dumps(list(usable.pop(request.anchor)), ensure_ascii=False)
                    refused[request.anchor] = (f"shares a name with {first!r}, whose reply was unusable", reply_entry)

        proposals = {anchor: Proposal(translations, self.name) for anchor, translations in usable.items()}
        if refused:
            # The model's accepted substitutes join the forbidden words, so a fallback entity
            # never takes a name the model gave to another one.
            taken = {w.key for ts in usable.values() for t in ts for w in words_of(t) if w.stem[0].isupper()}
            fallback = OfflineProposer().propose(
                list(requests), n=n, seed=seed, forbidden=forbidden | frozenset(taken - KEEP_WORDS)
            )
            for anchor, (reason, entry) in refused.items():
                proposals[anchor] = Proposal(tuple(fallback[anchor]), OfflineProposer.name, reason, entry)
        return proposals

    def _complete(self, prompt: str, *, seed: int) -> str:
        """The first choice's message content for one chat request."""
        body = json.dumps({
            "model": self.settings.model,
            "messages": [{"role": "system", "content": _SYSTEM_PROMPT}, {"role": "user", "content": prompt}],
            "temperature": 0,
            "seed": seed,
        }).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = self._redact(exc.read()[:300].decode("utf-8", "replace"))
            raise ProposerError(f"{self.url}: HTTP {exc.code} {exc.reason}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ProposerError(f"{self.url}: unreachable ({self._redact(str(reason))})") from None
        try:
            return json.loads(raw)["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            snippet = self._redact(raw[:300].decode("utf-8", "replace"))
            raise ProposerError(f"{self.url}: not a chat completion response: {snippet!r}") from None

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text



def make_proposer(settings: TranslationParams, *, root: Path | str = ".") -> TranslationProposer:
    """The proposer ``translations.proposer`` names; the API key comes from the environment or
    the ignored ``.env`` (variable ``translations.openai.api_key_env``), and is never logged."""
    if settings.proposer == "offline":
        return OfflineProposer()
    assert settings.openai is not None  # TranslationParams refuses openai without settings
    return OpenAICompatibleProposer(settings.openai, setting(settings.openai.api_key_env, root))
