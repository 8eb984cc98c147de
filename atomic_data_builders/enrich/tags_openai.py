"""LLM tags through any OpenAI-compatible chat server (OpenAI, vLLM, Ollama, llama.cpp).

One chat request per item, with a prompt chosen by the item's domain (`prompts.yaml`, overridable
by a user YAML file). The reply must be a JSON list of strings (`parse_reply`); a bad reply is
asked again at a higher temperature, then recorded as failed: it never reaches the dataset.
Transient errors (429, 408, 409, 5xx, connection errors, timeouts) are retried with exponential
backoff and jitter; when the server stays unreachable the run stops with `TaggingInterrupted`
and everything done so far is already in the cache.

The cache is an append-only JSONL file: one line per finished item, flushed as soon as the reply
is parsed, keyed by a hash of (item id, model, rendered prompt, generation parameters). A re-run
makes zero calls for cached items, and a killed run resumes where it stopped; a torn last line
(a crash mid-write) is cut off on the next open. The API key is read from the environment
variable named by `api_key_env`; it is sent to the server and nowhere else (not to the cache,
the logs, the summary or an error message).

Entry points: `tag_items` (tags refined per domain, for the .item file) and `fetch_tags` (raw
tags and the run summary; the benchmark uses it). The client, retries, worker pool and key
hygiene live in `llm_client`, shared with the other LLM stages (llm_emb, llm_text, user_profile).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Optional

from atomic_data_builders.enrich.cache import JsonlCache
from atomic_data_builders.enrich.llm_client import (
    MAX_REPLY_CHARS,
    BadReply,
    LLMConfig,
    LLMInterrupted,
    LLMRun,
    Prompt,
    RunSummary,
    ask_per_item,
    default_cache_dir,
    interrupted,
    load_prompt_file,
    parse_json,
    request_key,
    safe_url,
    unique_ids,
)
from atomic_data_builders.enrich.tags_refine import Encoder, RefineConfig, normalize_tag, refine_tags

log = logging.getLogger(__name__)

CACHE_FILE = "tags_openai.jsonl"
# CLI names of the refinement options (atomic_data_builders.build) -> RefineConfig fields
_CLI_ALIASES = {"max_tags_per_item": "max_tags", "min_tag_count": "min_count", "tag_merge_threshold": "merge_threshold"}
# the reply's JSON schema, sent with --llm-response-format (the prompt asks for this shape anyway)
TAGS_SCHEMA = {"type": "array", "items": {"type": "string", "maxLength": 40}, "minItems": 1, "maxItems": 10}

# names kept for callers of this module (the machinery lives in llm_client)
__all__ = ["BadReply", "CACHE_FILE", "OpenAITagConfig", "Prompt", "TagRunSummary", "TaggingInterrupted",
           "MAX_REPLY_CHARS", "default_cache_dir", "fetch_tags", "load_prompts", "parse_reply", "render_messages", "tag_items"]
_request_key = request_key
_safe_url = safe_url


@dataclass
class OpenAITagConfig(LLMConfig):
    """Settings of the LLM tagging stage (CLI flags map one to one onto these fields)."""

    max_reply_tags: int = 10  # tags kept from one reply (the list is ranked)
    max_tag_words: int = 4  # a longer "tag" is an echoed title or a sentence: dropped
    max_description_chars: int = 600  # descriptions are cut to bound prompt tokens
    refine: RefineConfig = field(default_factory=RefineConfig)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], what: str = "LLM tagging") -> "OpenAITagConfig":
        """Build from a plain dict (CLI options, YAML); refine options may sit at the top level."""
        values = {_CLI_ALIASES.get(k, k): v for k, v in values.items()}
        refine_names = {f.name for f in dataclasses.fields(RefineConfig)}
        refine = values.pop("refine", None) or {}
        if not isinstance(refine, RefineConfig):
            refine = RefineConfig(**{**refine, **{k: values.pop(k) for k in list(values) if k in refine_names}})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {what} option(s) {unknown}; known: {sorted(known | refine_names)}")
        return cls(**values, refine=refine)


@dataclass
class TagRunSummary(RunSummary):
    """What one tagging run did, for the build report (no secret in here)."""

    tagged: int = 0  # items tagged by this run
    no_text: int = 0  # items without title or description: nothing to ask


class TaggingInterrupted(LLMInterrupted):
    """The server stayed unreachable; finished items are cached, so running again resumes."""


# ---------------------------------------------------------------------------------------------
# prompts

def load_prompts(path: Optional[str] = None) -> dict[str, Prompt]:
    """Shipped tag prompts, with the domains of the YAML file at `path` replacing them entry by entry.

    The file's other sections (llm_text, profile_cluster, profile_merge) belong to other stages.
    """
    prompts = load_prompt_file(path)["tags"]
    if "default" not in prompts:
        raise ValueError("prompts need a `default` entry")
    return prompts


def render_messages(prompt: Prompt, item, max_description_chars: int = 600) -> list[dict]:
    """Chat messages for one item: system, the one-shot example(s), then the item."""
    categories = [str(c) for c in (getattr(item, "categories", None) or []) if str(c).strip()]
    fields = {
        "domain": item.domain,
        "category": " > ".join(categories[-3:]) or item.domain,  # the most specific levels
        "title": (item.title or "").strip(),
        "description": ((getattr(item, "description", None) or "").strip()[:max_description_chars] or "-"),
    }
    return prompt.render(fields, f"for domain {item.domain!r}")


# ---------------------------------------------------------------------------------------------
# reply parsing

# Bounds on one reply, so that one item can never cost more than a fixed, small time: a tag list
# of a few dozen short tags is a few kilobytes (the reply's length is bounded by MAX_REPLY_CHARS).
MAX_REPLY_ELEMENTS = 256
MAX_TAG_CHARS = 200


def parse_reply(text: Optional[str], max_tags: int = 10, max_words: int = 4, title: str = "") -> list[str]:
    """Normalized tags from a reply that must be a JSON list of strings; raises BadReply otherwise.

    Accepted: the list alone, or the list alone inside one Markdown code fence. Anything else
    (prose, malformed or truncated JSON, an object, a non-string element, an empty list) is bad.
    Repeated tags keep their first place; a tag of more than `max_words` words (or MAX_TAG_CHARS
    characters) or equal to the title is dropped (small models echo the title); at most `max_tags`
    tags are kept, in order. A reply over MAX_REPLY_CHARS characters or MAX_REPLY_ELEMENTS elements
    is bad before any further work, so one reply costs a bounded time.
    """
    value = parse_json(text, list)  # a raw tab or newline inside a tag is harmless: normalized away
    if len(value) > MAX_REPLY_ELEMENTS:
        raise BadReply(f"a list of {len(value):,} elements, over {MAX_REPLY_ELEMENTS}")
    title_tag = normalize_tag(title)
    tags: dict[str, None] = {}  # ordered set: linear de-duplication
    for k, element in enumerate(value):
        if not isinstance(element, str):
            raise BadReply(f"element {k} is a {type(element).__name__}, not a string")
        tag = normalize_tag(element) if len(element) <= MAX_TAG_CHARS else ""  # a tag is a few words
        if tag and tag != title_tag and len(tag.split("_")) <= max_words:
            tags.setdefault(tag)
    if not tags:
        raise BadReply(f"no usable tag among {len(value)} element(s)")
    return list(tags)[:max_tags]


# ---------------------------------------------------------------------------------------------
# the run

def _tag_one(run: LLMRun, cache: JsonlCache, item, key: str, body: dict) -> dict:
    """Ask for one item's tags until a reply parses or the re-asks run out; cache the outcome."""
    config = run.config
    tags, reason, reply = run.ask(
        body, lambda text: parse_reply(text, config.max_reply_tags, config.max_tag_words, item.title or ""),
        what=f"item {item.item_id}")
    if tags is not None:
        record = {"key": key, "item_id": str(item.item_id), "model": config.model, "status": "ok", "tags": tags}
    else:
        record = {"key": key, "item_id": str(item.item_id), "model": config.model,
                  "status": "failed", "reason": reason, "reply": (reply or "")[:300]}
        log.warning("item %s (%s): no usable reply after %d request(s): %s", item.item_id, item.domain,
                    config.parse_retries + 1, reason)
    cache.put(record)
    return record


def fetch_tags(items: Iterable, config: OpenAITagConfig,
               http_client=None) -> tuple[dict[Hashable, list[str]], TagRunSummary]:
    """Raw normalized tags per item ({item_id: [tag, ...]}, ranked) and the run summary.

    Items whose reply failed (now or in an earlier run) or that have no text are absent.
    Raises TaggingInterrupted when the server stays unreachable (finished items stay cached),
    and RuntimeError for a non-transient HTTP error (401, 404, ...), which no retry fixes.
    """
    start = time.perf_counter()
    items = list(items)
    unique_ids((item.item_id for item in items), "item", "in the items to tag")
    prompts = load_prompts(config.prompts_file)
    summary = TagRunSummary(model=config.model, base_url=safe_url(config.base_url), items=len(items))
    cache = JsonlCache(Path(config.cache_dir or default_cache_dir()) / CACHE_FILE)
    requests = []
    for item in items:
        if not (item.title or "").strip() and not (getattr(item, "description", None) or "").strip():
            summary.no_text += 1
            continue
        messages = render_messages(prompts.get(item.domain, prompts["default"]), item, config.max_description_chars)
        requests.append((item, config.chat_body(messages, TAGS_SCHEMA, "tags")))
    try:
        results, why = ask_per_item(requests, config, cache, summary, _tag_one, field="tags", counter="tagged",
                                    desc=f"LLM tags ({config.model})", total=len(items), http_client=http_client)
    finally:
        cache.close()
        summary.seconds = round(time.perf_counter() - start, 3)
    log.info("LLM tags: %s", json.dumps(summary.as_dict()))
    if why:
        raise interrupted(summary, why, summary.cache_hits + summary.tagged + summary.failed, summary.items, "item",
                          cache.path, TaggingInterrupted)
    return results, summary


def tag_items(items: Iterable, config: Optional[OpenAITagConfig] = None, report: Optional[dict] = None,
              encode: Optional[Encoder] = None,
              http_client=None) -> dict[Hashable, list[tuple[str, float]]]:
    """LLM tags of every item, refined per domain: {item_id: [(tag, weight), ...]}, most relevant first.

    `items` are ItemText records (item_id, domain, title, description, categories). Items that
    could not be tagged are absent. `report`, if given, receives the run summary under
    "tags_openai". `encode` is the tag-text encoder of the refinement (default MiniLM).
    """
    config = config or OpenAITagConfig()
    items = list(items)
    raw, summary = fetch_tags(items, config, http_client=http_client)
    if report is not None:
        report["tags_openai"] = summary.as_dict()
    domains = {item.item_id: item.domain for item in items}
    refined = refine_tags(raw, domains, config.refine, encode=encode)
    return {item_id: tags for item_id, tags in refined.items() if tags}
