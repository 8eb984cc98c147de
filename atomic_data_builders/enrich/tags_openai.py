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
tags and the run summary; the benchmark uses it).
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Optional
from urllib.parse import urlsplit, urlunsplit

import yaml
from tqdm.auto import tqdm

from atomic_data_builders.enrich.cache import JsonlCache
from atomic_data_builders.enrich.tags_refine import Encoder, RefineConfig, normalize_tag, refine_tags

log = logging.getLogger(__name__)

CACHE_FILE = "tags_openai.jsonl"
_TRANSIENT_STATUS = {408, 409, 429}  # and every 5xx
# CLI names of the refinement options (atomic_data_builders.build) -> RefineConfig fields
_CLI_ALIASES = {"max_tags_per_item": "max_tags", "min_tag_count": "min_count", "tag_merge_threshold": "merge_threshold"}
_REJECTED_STATUS = {400, 413, 422}  # this request is bad (too long, ...): the item fails, the run goes on


@dataclass
class OpenAITagConfig:
    """Settings of the LLM tagging stage (CLI flags map one to one onto these fields)."""

    # OpenAI itself unless told otherwise (OPENAI_BASE_URL, as the openai client reads it, or the CLI)
    base_url: str = field(default_factory=lambda: os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1")
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"  # NAME of the environment variable holding the key
    concurrency: int = 4  # requests in flight at once
    timeout: float = 60.0  # seconds per request
    max_retries: int = 4  # retries of one request after a transient error
    parse_retries: int = 1  # extra requests after a reply that does not parse
    backoff_base: float = 1.0  # seconds before the first retry; doubles each time
    backoff_max: float = 30.0
    max_tokens: int = 96
    temperature: float = 0.0
    retry_temperature: float = 0.7  # a deterministic model repeats a bad reply at temperature 0
    extra_body: dict = field(default_factory=dict)  # server-specific, e.g. {"repeat_penalty": 1.3}
    prompts_file: Optional[str] = None  # YAML overriding prompts.yaml per domain
    cache_dir: Optional[str] = None  # default: $XDG_CACHE_HOME/atomic_data_builders
    max_reply_tags: int = 10  # tags kept from one reply (the list is ranked)
    max_tag_words: int = 4  # a longer "tag" is an echoed title or a sentence: dropped
    max_description_chars: int = 600  # descriptions are cut to bound prompt tokens
    retry_failed: bool = False  # ask again for items whose reply was recorded as failed
    progress: bool = True
    refine: RefineConfig = field(default_factory=RefineConfig)

    def __post_init__(self):
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.max_retries < 0 or self.parse_retries < 0:
            raise ValueError("max_retries and parse_retries must be >= 0")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "OpenAITagConfig":
        """Build from a plain dict (CLI options, YAML); refine options may sit at the top level."""
        values = {_CLI_ALIASES.get(k, k): v for k, v in values.items()}
        refine_names = {f.name for f in dataclasses.fields(RefineConfig)}
        refine = values.pop("refine", None) or {}
        if not isinstance(refine, RefineConfig):
            refine = RefineConfig(**{**refine, **{k: values.pop(k) for k in list(values) if k in refine_names}})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown LLM tagging option(s) {unknown}; known: {sorted(known | refine_names)}")
        return cls(**values, refine=refine)


@dataclass
class TagRunSummary:
    """What one run did, for the build report (no secret in here)."""

    model: str
    base_url: str
    items: int = 0
    cache_hits: int = 0  # items answered from the cache
    calls: int = 0  # HTTP requests sent, retries included
    retries: int = 0  # requests repeated after a transient error or a bad reply
    tagged: int = 0  # items tagged by this run
    failed: int = 0  # items with no usable reply (this run or cached), absent from the output
    no_text: int = 0  # items without title or description: nothing to ask
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class BadReply(ValueError):
    """A reply that is not a usable JSON list of tags."""


class TaggingInterrupted(RuntimeError):
    """The server stayed unreachable; finished items are cached, so running again resumes."""

    def __init__(self, message: str, summary: TagRunSummary):
        super().__init__(message)
        self.summary = summary


class _ServerUnavailable(Exception):
    pass


class _Stopped(Exception):
    pass


class _Rejected(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# prompts

@dataclass(frozen=True)
class Prompt:
    system: str
    user: str
    examples: tuple = ()  # ((user, assistant), ...)


def load_prompts(path: Optional[str] = None) -> dict[str, Prompt]:
    """Shipped prompts, with the domains of the YAML file at `path` replacing them entry by entry."""
    shipped = resources.files("atomic_data_builders.enrich").joinpath("prompts.yaml")
    prompts = _parse_prompts(yaml.safe_load(shipped.read_text(encoding="utf-8")), "prompts.yaml (shipped)")
    if path:
        with open(path, encoding="utf-8") as fh:
            prompts.update(_parse_prompts(yaml.safe_load(fh), path))
    if "default" not in prompts:
        raise ValueError("prompts need a `default` entry")
    return prompts


def _parse_prompts(data: Any, source: str) -> dict[str, Prompt]:
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of domain -> prompt, got {type(data).__name__}")
    prompts = {}
    for domain, entry in data.items():
        where = f"{source}: domain {domain!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("system"), str) \
                or not isinstance(entry.get("user"), str):
            raise ValueError(f"{where}: needs string fields `system` and `user`")
        examples = []
        for k, ex in enumerate(entry.get("examples") or []):
            if not isinstance(ex, dict) or not isinstance(ex.get("user"), str) \
                    or not isinstance(ex.get("assistant"), str):
                raise ValueError(f"{where}: example {k} needs string fields `user` and `assistant`")
            examples.append((ex["user"], ex["assistant"]))
        prompts[str(domain)] = Prompt(entry["system"], entry["user"], tuple(examples))
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
    try:
        messages = [{"role": "system", "content": prompt.system.format(**fields)}]
        for user, assistant in prompt.examples:
            messages.append({"role": "user", "content": user.format(**fields)})
            messages.append({"role": "assistant", "content": assistant})
        messages.append({"role": "user", "content": prompt.user.format(**fields)})
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"prompt for domain {item.domain!r}: bad placeholder ({err!r}); "
                         "use {domain}, {category}, {title}, {description}") from err
    return messages


# ---------------------------------------------------------------------------------------------
# reply parsing

_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)
# Bounds on one reply, so that one item can never cost more than a fixed, small time: a tag list
# of a few dozen short tags is a few kilobytes.
MAX_REPLY_CHARS = 65_536
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
    if text and len(text) > MAX_REPLY_CHARS:
        raise BadReply(f"reply of {len(text):,} characters, over the {MAX_REPLY_CHARS:,} a tag list needs")
    body = (text or "").strip()
    fenced = _FENCE.fullmatch(body)
    if fenced:
        body = fenced.group(1)
    if not body:
        raise BadReply("empty reply")
    try:
        value = json.loads(body, strict=False)  # a raw tab or newline inside a tag is harmless: normalized away
    except json.JSONDecodeError as err:
        raise BadReply(f"not JSON: {err.msg} at character {err.pos}") from None
    if not isinstance(value, list):
        raise BadReply(f"JSON {type(value).__name__}, not a list")
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
# cache

def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "atomic_data_builders"


def _request_key(item_id: Hashable, body: dict) -> str:
    """Cache key: item id + everything that shapes the reply (model, messages, sampling)."""
    blob = json.dumps({"item_id": str(item_id), "request": body}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _safe_url(url: str) -> str:
    """The base URL without user:password@ (it may carry credentials)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


# ---------------------------------------------------------------------------------------------
# the run

class _Run:
    """State of one tagging run shared by the worker threads."""

    def __init__(self, config: OpenAITagConfig, client, cache: JsonlCache, summary: TagRunSummary):
        import openai

        self.openai = openai
        self.config = config
        self.client = client
        self.cache = cache
        self.summary = summary
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def _count(self, **increments):
        with self.lock:
            for name, value in increments.items():
                setattr(self.summary, name, getattr(self.summary, name) + value)

    def _backoff(self, attempt: int, err: Exception):
        delay = min(self.config.backoff_max, self.config.backoff_base * 2 ** (attempt - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter: workers that failed together do not retry together
        response = getattr(err, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after and retry_after.replace(".", "", 1).isdigit():
            delay = min(self.config.backoff_max, max(delay, float(retry_after)))
        if self.stop.wait(delay):
            raise _Stopped()

    def _complete(self, body: dict):
        """One chat completion, retried on transient errors; raises _ServerUnavailable at the end.

        Raises _Rejected for a request the server rejects as such (400, 413, 422: the item fails);
        any other non-transient HTTP error (401, 403, 404, ...) stops the run with RuntimeError.
        """
        oa = self.openai
        for attempt in range(self.config.max_retries + 1):
            if self.stop.is_set():
                raise _Stopped()
            self._count(calls=1, retries=int(attempt > 0))
            try:
                return self.client.chat.completions.create(**body)
            except oa.APIConnectionError as err:  # timeouts included (APITimeoutError subclasses it)
                error, last = err, type(err).__name__
            except oa.APIStatusError as err:
                if err.status_code in _REJECTED_STATUS:
                    raise _Rejected(f"HTTP {err.status_code}: {self._scrub(err.message)[:200]}") from None
                if err.status_code not in _TRANSIENT_STATUS and err.status_code < 500:
                    raise RuntimeError(
                        f"LLM server {self.summary.base_url} refused the request with HTTP {err.status_code} "
                        f"({self._scrub(err.message)[:300]}); check the key in ${self.config.api_key_env}, "
                        f"the model name {self.config.model!r} and the base URL") from None
                error, last = err, f"HTTP {err.status_code}"
            if attempt < self.config.max_retries:
                log.debug("transient error (%s), retry %d/%d", last, attempt + 1, self.config.max_retries)
                self._backoff(attempt + 1, error)
        self.stop.set()  # here, not in the caller: a free worker must not start the next item first
        raise _ServerUnavailable(f"{last} after {self.config.max_retries + 1} attempt(s)")

    def _scrub(self, text: str) -> str:
        """Server text with the API key masked, should a server echo it."""
        key = getattr(self.client, "api_key", None)
        return str(text).replace(key, "***") if key else str(text)

    def tag_one(self, item, key: str, body: dict) -> dict:
        """Ask for one item's tags until a reply parses or the re-asks run out; cache the outcome."""
        reason, reply = "", ""
        for attempt in range(self.config.parse_retries + 1):
            request = dict(body)
            if attempt:
                request["temperature"] = self.config.retry_temperature
                self._count(retries=1)
            try:
                response = self._complete(request)
            except _Rejected as err:
                reason, reply = str(err), ""
                break
            usage = getattr(response, "usage", None)
            if usage is not None:
                self._count(prompt_tokens=usage.prompt_tokens or 0, completion_tokens=usage.completion_tokens or 0)
            reply = response.choices[0].message.content if response.choices else ""
            try:
                tags = parse_reply(reply, self.config.max_reply_tags, self.config.max_tag_words, item.title or "")
            except BadReply as err:
                reason = str(err)
                log.debug("item %s: bad reply (%s)", item.item_id, reason)
                continue
            record = {"key": key, "item_id": str(item.item_id), "model": self.config.model,
                      "status": "ok", "tags": tags}
            self.cache.put(record)
            return record
        record = {"key": key, "item_id": str(item.item_id), "model": self.config.model,
                  "status": "failed", "reason": reason, "reply": (reply or "")[:300]}
        self.cache.put(record)
        log.warning("item %s (%s): no usable reply after %d request(s): %s", item.item_id, item.domain,
                    self.config.parse_retries + 1, reason)
        return record


def _make_client(config: OpenAITagConfig, http_client=None):
    import openai

    api_key = os.environ.get(config.api_key_env)
    if not api_key:
        log.warning("environment variable %s is not set: sending a placeholder key (enough for a local "
                    "llama.cpp, vLLM or Ollama server without authentication)", config.api_key_env)
        api_key = "no-key"
    # retries are ours (backoff, counting, stopping), so the client's own are off
    return openai.OpenAI(base_url=config.base_url, api_key=api_key, timeout=config.timeout, max_retries=0,
                         http_client=http_client)


def fetch_tags(items: Iterable, config: OpenAITagConfig,
               http_client=None) -> tuple[dict[Hashable, list[str]], TagRunSummary]:
    """Raw normalized tags per item ({item_id: [tag, ...]}, ranked) and the run summary.

    Items whose reply failed (now or in an earlier run) or that have no text are absent.
    Raises TaggingInterrupted when the server stays unreachable (finished items stay cached),
    and openai's APIStatusError for a non-transient HTTP error (401, 404, ...), which no retry fixes.
    """
    start = time.perf_counter()
    items = list(items)
    seen = set()
    for item in items:
        if item.item_id in seen:
            raise ValueError(f"item {item.item_id!r} appears twice in the items to tag")
        seen.add(item.item_id)
    prompts = load_prompts(config.prompts_file)
    summary = TagRunSummary(model=config.model, base_url=_safe_url(config.base_url), items=len(items))
    cache = JsonlCache(Path(config.cache_dir or default_cache_dir()) / CACHE_FILE)
    results: dict[Hashable, list[str]] = {}
    todo = []
    for item in items:
        if not (item.title or "").strip() and not (getattr(item, "description", None) or "").strip():
            summary.no_text += 1
            continue
        body = {"model": config.model, "max_tokens": config.max_tokens, "temperature": config.temperature,
                "messages": render_messages(prompts.get(item.domain, prompts["default"]), item,
                                            config.max_description_chars)}
        if config.extra_body:
            body["extra_body"] = config.extra_body
        key = _request_key(item.item_id, body)
        cached = cache.get(key)
        if cached is not None and (cached["status"] == "ok" or not config.retry_failed):
            summary.cache_hits += 1
            if cached["status"] == "ok":
                results[item.item_id] = cached["tags"]
            else:
                summary.failed += 1
            continue
        todo.append((item, key, body))

    run = _Run(config, _make_client(config, http_client) if todo else None, cache, summary)
    interrupted: Optional[str] = None
    progress = tqdm(total=len(items), initial=len(items) - len(todo), desc=f"LLM tags ({config.model})",
                    unit="item", disable=not config.progress)
    pool = cf.ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="llm-tags")
    try:
        futures = {pool.submit(run.tag_one, item, key, body): item for item, key, body in todo}
        for future in cf.as_completed(futures):
            item = futures[future]
            try:
                record = future.result()
            except _Stopped:
                continue
            except _ServerUnavailable as err:
                if interrupted is None:
                    interrupted = f"item {item.item_id}: {err}"
                continue
            except Exception:
                run.stop.set()
                raise
            if record["status"] == "ok":
                results[item.item_id] = record["tags"]
                summary.tagged += 1
            else:
                summary.failed += 1
            progress.update(1)
            progress.set_postfix(failed=summary.failed, refresh=False)
    finally:
        run.stop.set()  # on an error or Ctrl-C, workers stop before their next request or backoff
        pool.shutdown(wait=True, cancel_futures=True)
        progress.close()
        cache.close()
        summary.seconds = round(time.perf_counter() - start, 3)
    log.info("LLM tags: %s", json.dumps(summary.as_dict()))
    if interrupted:
        done = summary.cache_hits + summary.tagged + summary.failed
        raise TaggingInterrupted(
            f"LLM server {summary.base_url} unreachable ({interrupted}); {done} of {summary.items} items are "
            f"done and cached in {cache.path}; run again to resume", summary)
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
