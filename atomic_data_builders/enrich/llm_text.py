"""`llm_text`: LLM-written item text for LLM-EMF (arXiv 2506.17966), embedded by a frozen text encoder.

One chat request per item with a title, with the prompt of the item's domain (section `llm_text`
of prompts.yaml, overridable by `--llm-prompts`): the model gives key terms, a one-sentence
summary and the interests of likely buyers as a JSON object (`parse_item_text`). The text written
for the item (`compose`) is its title followed by those three parts; the build embeds it with the
CLIP text encoder when `--clip-model` is given, else with the sentence-transformers model, into
the `.item` column `llm_text_emb`.

Cache, resume, retries, re-asks after a bad reply, stop when the server is unreachable and key
hygiene are the tagger's (`llm_client`): one JSONL record per item keyed by a hash of (item id,
request), so a re-run makes no call and a killed run resumes. An item whose replies never parse,
or without a title, gets an empty cell.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Hashable, Iterable, Optional, Tuple

from atomic_data_builders.enrich.cache import JsonlCache
from atomic_data_builders.enrich.llm_client import (
    BadReply,
    LLMConfig,
    LLMInterrupted,
    LLMRun,
    RunSummary,
    ask_per_item,
    clean_phrases,
    clean_text,
    default_cache_dir,
    interrupted,
    load_prompt_file,
    parse_json,
    safe_url,
    section_prompt,
    unique_ids,
)

log = logging.getLogger(__name__)

CACHE_FILE = "llm_text.jsonl"
SCHEMA = {"type": "object", "properties": {
    "key_terms": {"type": "array", "items": {"type": "string", "maxLength": 40}, "minItems": 1, "maxItems": 6},
    "summary": {"type": "string", "maxLength": 240},
    "buyer_interests": {"type": "array", "items": {"type": "string", "maxLength": 60}, "minItems": 1, "maxItems": 4}},
    "required": ["key_terms", "summary", "buyer_interests"]}


@dataclass
class LLMTextConfig(LLMConfig):
    max_tokens: int = 160


@dataclass
class LLMTextSummary(RunSummary):
    written: int = 0  # items given a text by this run
    no_title: int = 0  # items without a title: nothing to ask


def parse_item_text(reply: Optional[str]) -> dict:
    """{"key_terms": [...], "summary": str, "buyer_interests": [...]} from a reply; raises BadReply otherwise."""
    value = parse_json(reply, dict)
    missing = [k for k in ("key_terms", "summary", "buyer_interests") if k not in value]
    if missing:
        raise BadReply(f"the object lacks {missing}")
    return {"key_terms": clean_phrases(value["key_terms"], "key_terms", 8, 60),
            "summary": clean_text(value["summary"], "summary", 400),
            "buyer_interests": clean_phrases(value["buyer_interests"], "buyer_interests", 6, 80)}


def compose(title: str, parts: dict) -> str:
    """The text embedded for an item: title, key terms, likely buyers, then the summary (CLIP reads 77 tokens)."""
    return (f"{title.strip()}. Key terms: {', '.join(parts['key_terms'])}. "
            f"Likely buyers: {', '.join(parts['buyer_interests'])}. {parts['summary']}")


def _messages(prompts: dict, item) -> list:
    categories = [str(c) for c in (getattr(item, "categories", None) or []) if str(c).strip()]
    fields = {"domain": item.domain, "category": " > ".join(categories[-3:]) or item.domain,
              "title": (item.title or "").strip()}
    return section_prompt(prompts, "llm_text", item.domain).render(fields, f"llm_text for domain {item.domain!r}")


def _write_one(run: LLMRun, cache: JsonlCache, item, key: str, body: dict) -> dict:
    parts, reason, reply = run.ask(body, parse_item_text, what=f"item {item.item_id}")
    if parts is not None:
        record = {"key": key, "item_id": str(item.item_id), "model": run.config.model, "status": "ok",
                  **parts, "text": compose(item.title, parts)}
    else:
        record = {"key": key, "item_id": str(item.item_id), "model": run.config.model, "status": "failed",
                  "reason": reason, "reply": (reply or "")[:300]}
        log.warning("llm_text: item %s (%s): no usable reply after %d request(s): %s", item.item_id, item.domain,
                    run.config.parse_retries + 1, reason)
    cache.put(record)
    return record


def generate_item_texts(items: Iterable, config: LLMTextConfig,
                        http_client=None) -> Tuple[Dict[Hashable, str], LLMTextSummary]:
    """({item_id: text}, summary); items without a title or whose replies failed are absent.

    Raises LLMInterrupted when the server stays unreachable (finished items stay cached).
    """
    start = time.perf_counter()
    items = list(items)
    unique_ids((it.item_id for it in items), "item", "in the items of llm_text")
    prompts = load_prompt_file(config.prompts_file)
    summary = LLMTextSummary(model=config.model, base_url=safe_url(config.base_url), items=len(items))
    cache = JsonlCache(Path(config.cache_dir or default_cache_dir() / "llm_text") / CACHE_FILE)
    requests = []
    for item in items:
        if not (item.title or "").strip():
            summary.no_title += 1
            continue
        requests.append((item, config.chat_body(_messages(prompts, item), SCHEMA, "item_text")))
    try:
        texts, why = ask_per_item(requests, config, cache, summary, _write_one, field="text", counter="written",
                                  desc=f"llm_text ({config.model})", total=len(items), http_client=http_client)
    finally:
        cache.close()
        summary.seconds = round(time.perf_counter() - start, 3)
    log.info("llm_text: %s", json.dumps(summary.as_dict()))
    if why:
        raise interrupted(summary, why, summary.cache_hits + summary.written + summary.failed + summary.no_title,
                          summary.items, "item", cache.path, LLMInterrupted)
    return texts, summary
