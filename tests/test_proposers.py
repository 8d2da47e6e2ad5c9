"""pipeline/proposers.py: choosing a proposer, and the OpenAI-compatible one against a real local HTTP server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from pipeline.core.offline_proposer import OfflineProposer
from pipeline.core.translation import AnchorRequest, ProposerError, collect_proposals, propose_translations, word_keys
from pipeline.params import OpenAIProposerParams, TranslationParams
from pipeline.proposers import OpenAICompatibleProposer, make_proposer
from tests.conftest import CHAT_API_KEY as API_KEY, chat_server, completion

NONE: frozenset[str] = frozenset()


def offline(requests, n=2, seed=0, forbidden=NONE) -> dict[str, list[str]]:
    return OfflineProposer().propose(list(requests), n=n, seed=seed, forbidden=forbidden)


def test_make_proposer_reads_the_key_from_env_file(tmp_path: Path, monkeypatch):
    assert make_proposer(TranslationParams(), root=tmp_path).name == "offline"
    monkeypatch.delenv("WHP_TEST_KEY", raising=False)
    (tmp_path / ".env").write_text("WHP_TEST_KEY=sk-from-dotenv\n")
    settings = TranslationParams(
        proposer="openai", openai={"base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": "WHP_TEST_KEY"}
    )
    proposer = make_proposer(settings, root=tmp_path)
    assert isinstance(proposer, OpenAICompatibleProposer) and proposer.name == "openai:m"
    assert proposer._api_key == "sk-from-dotenv"
    assert "sk-from-dotenv" not in repr(proposer)


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible proposer against a real local HTTP server
# ---------------------------------------------------------------------------------------------

def openai_proposer(base_url: str, batch_size: int = 2) -> OpenAICompatibleProposer:
    settings = OpenAIProposerParams(base_url=base_url, model="test-model", timeout_s=5, batch_size=batch_size)
    return OpenAICompatibleProposer(settings, API_KEY)


REQUESTS = [
    AnchorRequest("Mr. Jonathan Pike", "person"), AnchorRequest("Pike", "person"),
    AnchorRequest("Greyholt", "place"), AnchorRequest("Tessaly Row", "place"),
]
GOOD = {
    "Mr. Jonathan Pike": ["Mr. Edward Hale", "Mr. Walter Finch"], "Pike": ["Hale", "Finch"],
    "Greyholt": ["Ambridge", "Lowmoor"], "Tessaly Row": ["Carden Row", "Vessey Row"],
}


def test_good_replies_are_used_in_batches_with_the_key_as_bearer_token():
    content = "Here you are:\n```json\n" + json.dumps(GOOD) + "\n```"
    with chat_server(lambda body: completion(content)) as (url, seen):
        result = collect_proposals(REQUESTS, proposer=openai_proposer(url), n=2, seed=3, forbidden=NONE)
    assert {p.anchor: list(p.translations) for p in result} == GOOD
    assert {p.proposer for p in result} == {"openai:test-model"} and not any(p.refused for p in result)
    assert len(seen) == 2  # four anchors, batches of two, Pike's entity kept together
    assert {r["path"] for r in seen} == {"/v1/chat/completions"}
    assert {r["authorization"] for r in seen} == {f"Bearer {API_KEY}"}
    assert seen[0]["body"]["model"] == "test-model" and seen[0]["body"]["seed"] == 3
    assert "Mr. Jonathan Pike" in seen[0]["body"]["messages"][-1]["content"]


@pytest.mark.parametrize("bad, reason", [
    (["Hale"], "1 translations"),
    (["Pike", "Finch"], "equals the anchor"),
    (["Sutton", "Finch"], "Sutton"),  # a capitalised word of the corpora
    (None, "missing"),
])
def test_a_bad_entry_falls_back_to_offline_for_its_whole_entity_and_is_marked(bad, reason):
    reply = {**GOOD, "Pike": bad}
    if bad is None:
        del reply["Pike"]
    forbidden = frozenset({"sutton"})
    with chat_server(lambda body: completion(json.dumps(reply))) as (url, _):
        result = {p.anchor: p for p in collect_proposals(REQUESTS, proposer=openai_proposer(url), n=2, seed=0,
                                                         forbidden=forbidden)}
    assert result["Pike"].proposer == "offline" and reason in result["Pike"].refused
    # Mr. Jonathan Pike shares the name Pike: it falls back too, so the entity stays consistent.
    assert result["Mr. Jonathan Pike"].proposer == "offline" and "Pike" in result["Mr. Jonathan Pike"].refused
    for i in range(2):
        assert result["Mr. Jonathan Pike"].translations[i].endswith(" " + result["Pike"].translations[i])
    for anchor in ("Greyholt", "Tessaly Row"):
        assert result[anchor].proposer == "openai:test-model" and list(result[anchor].translations) == GOOD[anchor]
    # the fallback never takes a substitute the model gave to another entity
    taken = {w for anchor in ("Greyholt", "Tessaly Row") for t in GOOD[anchor] for w in word_keys(t)} - {"row"}
    assert not taken & {w for t in result["Pike"].translations for w in word_keys(t)}


def test_the_fallback_never_takes_a_name_the_model_gave_another_entity():
    would_be = offline(REQUESTS, n=2)["Pike"]  # the offline substitutes of Pike, without a reply
    reply = {**GOOD, "Greyholt": would_be}
    del reply["Pike"]
    with chat_server(lambda body: completion(json.dumps(reply))) as (url, _):
        result = {p.anchor: p for p in collect_proposals(REQUESTS, proposer=openai_proposer(url), n=2, seed=0,
                                                         forbidden=NONE)}
    assert result["Greyholt"].proposer == "openai:test-model" and list(result["Greyholt"].translations) == would_be
    assert result["Pike"].proposer == "offline"
    assert not set(result["Pike"].translations) & set(would_be)


def test_a_reply_without_json_falls_back_for_the_batch():
    with chat_server(lambda body: completion("Sorry, I cannot help with that.")) as (url, _):
        result = propose_translations(REQUESTS, proposer=openai_proposer(url, batch_size=10), n=2, seed=0,
                                      forbidden=NONE)
    assert {name for _, _, name in result} == {"offline"}


def test_an_http_error_raises_naming_the_url_and_status_but_never_the_key():
    # The server echoes the Authorization header in its error body, as some proxies do.
    def fail(body):
        return 500, json.dumps({"error": f"internal error (auth was Bearer {API_KEY})"})

    with chat_server(fail) as (url, _):
        with pytest.raises(ProposerError) as caught:
            openai_proposer(url).propose(REQUESTS, n=2, seed=0, forbidden=NONE)
    message = str(caught.value)
    assert f"{url}/chat/completions" in message and "500" in message
    assert API_KEY not in message


def test_an_unreachable_endpoint_raises_naming_the_url_but_never_the_key():
    with socket.socket() as probe:  # a port that was free a moment ago and is closed now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(ProposerError) as caught:
        openai_proposer(url).propose(REQUESTS, n=2, seed=0, forbidden=NONE)
    assert f"{url}/chat/completions" in str(caught.value) and "unreachable" in str(caught.value)
    assert API_KEY not in str(caught.value)


def test_a_non_chat_response_raises():
    with chat_server(lambda body: (200, json.dumps({"object": "list", "data": []}))) as (url, _):
        with pytest.raises(ProposerError, match="not a chat completion"):
            openai_proposer(url).propose(REQUESTS, n=2, seed=0, forbidden=NONE)
