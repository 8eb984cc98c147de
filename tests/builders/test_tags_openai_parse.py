"""LLM tagging: reply parsing, retries, cache and key hygiene, against a canned HTTP server.

The canned server (llm_fakes.FakeLLM) speaks just enough of the OpenAI chat API for the real
`openai` client to talk to it, and answers from a script (bad replies, 429, 500, 401), so every
error path is exercised deterministically. The real model is tested in test_tags_openai_llama.py.
"""
import json
import logging
import time

import pytest
from llm_fakes import FakeLLM, scripted

from atomic_data_builders.enrich.items import ItemText
from atomic_data_builders.enrich.llama_server import free_port
from atomic_data_builders.enrich.tags_openai import (
    CACHE_FILE,
    BadReply,
    OpenAITagConfig,
    TaggingInterrupted,
    _safe_url,
    fetch_tags,
    load_prompts,
    parse_reply,
    render_messages,
)
from atomic_data_builders.enrich.tags_refine import RefineConfig

SECRET = "sk-test-0123456789-very-secret"


def items(n=1, domain="food"):
    return [ItemText(item_id=f"I{k}", domain=domain, title=f"Organic green tea number {k}",
                     description="Loose leaf tea.", categories=["Grocery", "Tea"]) for k in range(n)]


def config(tmp_path, base_url, **overrides):
    values = dict(base_url=base_url, model="canned", api_key_env="TEMA_TEST_LLM_KEY", cache_dir=str(tmp_path / "cache"),
                  backoff_base=0.01, backoff_max=0.05, max_retries=2, parse_retries=1, progress=False)
    values.update(overrides)
    return OpenAITagConfig.from_mapping(values)


# ---- parse_reply on its own ----------------------------------------------------------------------

def test_parse_reply_accepts_a_json_list_and_normalizes():
    assert parse_reply('["Green Tea", "loose-leaf", "Organic!"]') == ["green_tea", "loose_leaf", "organic"]
    assert parse_reply('```json\n["tea", "matcha"]\n```') == ["tea", "matcha"]
    assert parse_reply('["green\ttea", "matcha\n"]') == ["green_tea", "matcha"]  # raw control characters


@pytest.mark.parametrize("reply, reason", [
    ("Here are the tags: tea, matcha", "not JSON"),
    ('Tags: ["tea", "matcha"]', "not JSON"),  # prose around a list is prose
    ('["tea", "matcha"', "not JSON"),  # truncated by max_tokens
    ('{"tags": ["tea"]}', "not a list"),
    ('"tea"', "not a list"),
    ("[]", "no usable tag"),
    ("", "empty reply"),
    (None, "empty reply"),
    ('["tea", ["nested"]]', "not a string"),
    ('["tea", 3]', "not a string"),
    ('["!!!", "  "]', "no usable tag"),
])
def test_parse_reply_rejects_bad_replies(reply, reason):
    with pytest.raises(BadReply, match=reason):
        parse_reply(reply)


def test_parse_reply_drops_duplicates_overlong_tags_and_title_echo():
    reply = json.dumps(["Tea", "tea", "TEA!", "green tea", "Organic Green Tea Number 7",
                        "a very long sentence that is not a tag", "matcha"])
    assert parse_reply(reply, max_words=4, title="Organic green tea number 7") == ["tea", "green_tea", "matcha"]
    assert parse_reply(json.dumps([f"tag{k}" for k in range(30)]), max_tags=5) == [f"tag{k}" for k in range(5)]
    with pytest.raises(BadReply):
        parse_reply(json.dumps(["one two three four five six", "Organic green tea"]), title="Organic green tea")


def test_a_huge_reply_is_refused_before_it_is_parsed():
    # A valid JSON list of a million strings (~11 MB) once spun the builder for hours.
    huge = json.dumps([f"tag {k}" for k in range(1_000_000)])
    with pytest.raises(BadReply, match="characters, over the 65,536"):
        parse_reply(huge)
    with pytest.raises(BadReply, match="a list of 257 elements, over 256"):
        parse_reply(json.dumps(["t"] * 257))
    long_tag = "x" * 201  # one word, but no tag: dropped, the others kept
    assert parse_reply(json.dumps([long_tag, "tea"] + [f"t{k % 50}" for k in range(250)])) == ["tea"] + [
        f"t{k}" for k in range(9)]


def test_prompts_are_domain_aware_and_overridable(tmp_path):
    item = items(1)[0]
    messages = render_messages(load_prompts()["food"], item)
    assert "grocery" in messages[0]["content"].lower()
    assert "Grocery > Tea" in messages[-1]["content"] and item.title in messages[-1]["content"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]  # one-shot example
    override = tmp_path / "p.yaml"
    override.write_text("food:\n  system: 'Tag {domain} things.'\n  user: 'T: {title} C: {category}'\n")
    prompts = load_prompts(str(override))
    assert render_messages(prompts["food"], item)[0]["content"] == "Tag food things."
    assert "kitchen" in prompts  # other domains keep the shipped prompt
    override.write_text("food:\n  system: 'x'\n  user: 'T: {name}'\n")
    with pytest.raises(ValueError, match="placeholder"):
        render_messages(load_prompts(str(override))["food"], item)


# ---- through the real openai client ------------------------------------------------------------

def test_bad_reply_is_retried_then_accepted(tmp_path):
    with FakeLLM(chat=scripted(["Sure! Tags: tea", '["green tea", "tea"]'])) as server:
        tags, summary = fetch_tags(items(1), config(tmp_path, server.base_url))
    assert tags == {"I0": ["green_tea", "tea"]}
    assert (summary.calls, summary.retries, summary.tagged, summary.failed) == (2, 1, 1, 0)
    assert server.chat_bodies()[0]["temperature"] == 0.0 and server.chat_bodies()[1]["temperature"] == 0.7
    assert (summary.prompt_tokens, summary.completion_tokens) == (20, 10)


def test_always_bad_reply_is_recorded_failed_not_written(tmp_path):
    cfg = config(tmp_path, "")
    with FakeLLM(chat=scripted(['{"tags": "not a list"}'])) as server:
        cfg.base_url = server.base_url
        tags, summary = fetch_tags(items(1), cfg)
        assert tags == {} and summary.failed == 1 and summary.calls == 2
        record = json.loads((tmp_path / "cache" / CACHE_FILE).read_text().splitlines()[-1])
        assert record["status"] == "failed" and "not a list" in record["reason"] and "tags" not in record
        # a re-run does not ask again for a recorded failure ...
        tags, summary = fetch_tags(items(1), cfg)
        assert tags == {} and summary.calls == 0 and summary.cache_hits == 1 and summary.failed == 1
        # ... unless asked to
        cfg.retry_failed = True
        server.chat = scripted(['["tea"]'])
        tags, summary = fetch_tags(items(1), cfg)
        assert tags == {"I0": ["tea"]} and summary.calls == 1


def test_rate_limit_and_server_errors_are_retried(tmp_path):
    with FakeLLM(chat=scripted([429, 500, 503, '["tea"]'])) as server:
        tags, summary = fetch_tags(items(1), config(tmp_path, server.base_url, max_retries=3))
    assert tags == {"I0": ["tea"]}
    assert summary.calls == 4 and summary.retries == 3


def test_unreachable_server_interrupts_and_keeps_finished_items(tmp_path):
    cfg = config(tmp_path, "")
    with FakeLLM(chat=scripted(['["tea"]'])) as server:
        cfg.base_url = server.base_url
        fetch_tags(items(2), cfg)
    cfg.base_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    cfg.concurrency = 1
    start = time.perf_counter()
    with pytest.raises(TaggingInterrupted, match="2 of 4 items are done") as info:
        fetch_tags(items(4), cfg)
    assert time.perf_counter() - start < 10
    assert info.value.summary.cache_hits == 2 and info.value.summary.tagged == 0
    assert info.value.summary.calls == 3  # first item: 1 + max_retries=2, then the run stops


def test_cache_key_follows_model_and_prompt(tmp_path):
    with FakeLLM(chat=scripted(['["tea"]'])) as server:
        cfg = config(tmp_path, server.base_url)
        fetch_tags(items(2), cfg)
        assert fetch_tags(items(2), cfg)[1].calls == 0
        cfg.model = "other-model"
        assert fetch_tags(items(2), cfg)[1].calls == 2
        prompts = tmp_path / "p.yaml"
        prompts.write_text("food:\n  system: 'Tag it.'\n  user: '{title}'\n")
        cfg.prompts_file = str(prompts)
        assert fetch_tags(items(2), cfg)[1].calls == 2
        assert fetch_tags(items(2, domain="kitchen"), cfg)[1].calls == 2  # other ids/domain: new keys


def test_torn_cache_line_is_repaired(tmp_path):
    cfg = config(tmp_path, "")
    with FakeLLM(chat=scripted(['["tea"]'])) as server:
        cfg.base_url = server.base_url
        fetch_tags(items(2), cfg)
        path = tmp_path / "cache" / CACHE_FILE
        lines = path.read_text().splitlines(keepends=True)
        path.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # killed in the middle of a write
        tags, summary = fetch_tags(items(2), cfg)
    assert len(tags) == 2 and summary.cache_hits == 1 and summary.calls == 1
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_concurrency_is_bounded(tmp_path):
    with FakeLLM(chat=scripted(['["tea"]']), delay=0.15) as server:
        tags, summary = fetch_tags(items(8), config(tmp_path, server.base_url, concurrency=3))
    assert len(tags) == 8
    assert 2 <= server.max_in_flight <= 3


def test_api_key_is_sent_but_never_cached_logged_or_reported(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TEMA_TEST_LLM_KEY", SECRET)
    caplog.set_level(logging.DEBUG)  # openai and httpx debug logs included
    with FakeLLM(chat=scripted(["nonsense", '["tea"]', 401])) as server:
        tags, summary = fetch_tags(items(1), config(tmp_path, server.base_url))
        assert server.auth[0] == f"Bearer {SECRET}"  # the key does reach the server
        with pytest.raises(RuntimeError, match="TEMA_TEST_LLM_KEY") as info:  # 401: server echoes the key
            fetch_tags(items(2), config(tmp_path, server.base_url))
    assert SECRET not in str(info.value)
    assert SECRET not in caplog.text
    assert SECRET not in json.dumps(summary.as_dict())
    assert SECRET not in (tmp_path / "cache" / CACHE_FILE).read_text()
    assert tags == {"I0": ["tea"]}
    assert _safe_url(f"http://user:{SECRET}@127.0.0.1:8080/v1") == "http://127.0.0.1:8080/v1"  # reported URL


def test_from_mapping_rejects_unknown_options():
    with pytest.raises(ValueError, match="llm_modle"):
        OpenAITagConfig.from_mapping({"llm_modle": "x"})
    cfg = OpenAITagConfig.from_mapping({"model": "m", "max_tags": 3, "min_count": 1})
    assert cfg.refine.max_tags == 3 and cfg.refine.min_count == 1 and cfg.max_reply_tags == 10
    cfg = OpenAITagConfig.from_mapping({"max_tags_per_item": 4, "min_tag_count": 3, "tag_merge_threshold": 0.8})
    assert cfg.refine == RefineConfig(merge_threshold=0.8, min_count=3, max_tags=4)
