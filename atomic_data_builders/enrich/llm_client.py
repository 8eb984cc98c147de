"""The OpenAI-compatible client machinery every LLM stage shares (tags, llm_emb, llm_text, user_profile).

One home for: the settings of a run (`LLMConfig`), the client (`make_client`: the key comes from
the environment variable named by `api_key_env` and goes to the server only), the retry loop
(`LLMRun.call`: transient errors, 429, 408, 409, 5xx, connection errors and timeouts are retried
with exponential backoff and jitter; 400, 413, 422 reject the one request; any other HTTP error
stops the run with a message that names the key's variable, never the key), the re-asks after a
reply that does not parse (`LLMRun.ask`), the bounded worker pool that stops every worker when the
server stays unreachable (`run_pool`, then `interrupted` builds the error, whose message says how
much is cached), the run counters (`RunSummary`), the cache key of a request (`request_key`) and
the prompt file (`load_prompt_file`: the shipped `prompts.yaml`, overridden section by section
and domain by domain by the user's `--llm-prompts` file).

Servers that speak the API but return one vector per token from `/v1/embeddings` (llama.cpp with
a generative model) are mean-pooled to one vector per text (`embedding_vectors`).
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import re
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit, urlunsplit

import yaml
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

TRANSIENT_STATUS = {408, 409, 429}  # and every 5xx
REJECTED_STATUS = {400, 413, 422}  # this request is bad (too long, ...): its item fails, the run goes on
# `--llm-response-format`: how a stage's JSON schema is sent (None: not sent; the prompt asks for JSON)
RESPONSE_FORMATS = ("none", "json_schema", "json_object_schema")


@dataclass
class LLMConfig:
    """Settings of one LLM stage's run (CLI flags map one to one onto these fields)."""

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
    response_format: str = "none"  # one of RESPONSE_FORMATS: send the stage's JSON schema
    prompts_file: Optional[str] = None  # YAML overriding prompts.yaml per section and domain
    cache_dir: Optional[str] = None  # default: $XDG_CACHE_HOME/atomic_data_builders
    retry_failed: bool = False  # ask again for work whose reply was recorded as failed
    progress: bool = True

    def __post_init__(self):
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.max_retries < 0 or self.parse_retries < 0:
            raise ValueError("max_retries and parse_retries must be >= 0")
        if self.response_format not in RESPONSE_FORMATS:
            raise ValueError(f"response_format must be one of {list(RESPONSE_FORMATS)}, got {self.response_format!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], what: str = "LLM"):
        """Build from a plain dict (CLI options, YAML); an unknown key is an error that lists the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {what} option(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def chat_body(self, messages: list, schema: Optional[dict] = None, name: str = "reply",
                  max_tokens: Optional[int] = None) -> dict:
        """The request body of one chat completion (also what its cache key hashes)."""
        body = {"model": self.model, "max_tokens": max_tokens or self.max_tokens, "temperature": self.temperature,
                "messages": messages}
        extra = dict(self.extra_body or {})
        if schema is not None and self.response_format == "json_schema":  # OpenAI structured outputs, vLLM
            extra["response_format"] = {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
        elif schema is not None and self.response_format == "json_object_schema":  # llama-cpp-python's server
            extra["response_format"] = {"type": "json_object", "schema": schema}
        if extra:
            body["extra_body"] = extra
        return body


@dataclass
class RunSummary:
    """What one run did, for the build report (no secret in here)."""

    model: str
    base_url: str
    items: int = 0  # units of work asked for (items, users, texts)
    cache_hits: int = 0  # answered from the cache
    calls: int = 0  # HTTP requests sent, retries included
    retries: int = 0  # requests repeated after a transient error or a bad reply
    failed: int = 0  # no usable reply (this run or cached): absent from the output
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class BadReply(ValueError):
    """A reply that is not what the stage asked for (not a JSON list of tags, a wrong vector, ...)."""


class LLMInterrupted(RuntimeError):
    """The server stayed unreachable; finished work is cached, so running again resumes."""

    def __init__(self, message: str, summary: RunSummary):
        super().__init__(message)
        self.summary = summary


class ServerUnavailable(Exception):
    pass


class Stopped(Exception):
    pass


class Rejected(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# keys, URLs, the client

def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "atomic_data_builders"


def request_key(owner: Hashable, body: dict, owner_field: str = "item_id") -> str:
    """Cache key: the owner (item, user) + everything that shapes the reply (model, messages, sampling)."""
    blob = json.dumps({owner_field: str(owner), "request": body}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def safe_url(url: str) -> str:
    """The base URL without user:password@ (it may carry credentials)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


def make_client(config: LLMConfig, http_client=None):
    import openai

    api_key = os.environ.get(config.api_key_env)
    if not api_key:
        log.warning("environment variable %s is not set: sending a placeholder key (enough for a local "
                    "llama.cpp, vLLM or Ollama server without authentication)", config.api_key_env)
        api_key = "no-key"
    # retries are ours (backoff, counting, stopping), so the client's own are off
    return openai.OpenAI(base_url=config.base_url, api_key=api_key, timeout=config.timeout, max_retries=0,
                         http_client=http_client)


# ---------------------------------------------------------------------------------------------
# the run

class LLMRun:
    """State of one run shared by the worker threads: client, counters, the stop signal."""

    def __init__(self, config: LLMConfig, client, summary: RunSummary):
        import openai

        self.openai = openai
        self.config = config
        self.client = client
        self.summary = summary
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def count(self, **increments):
        with self.lock:
            for name, value in increments.items():
                setattr(self.summary, name, getattr(self.summary, name) + value)

    def backoff(self, attempt: int, err: Exception):
        delay = min(self.config.backoff_max, self.config.backoff_base * 2 ** (attempt - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter: workers that failed together do not retry together
        response = getattr(err, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after and retry_after.replace(".", "", 1).isdigit():
            delay = min(self.config.backoff_max, max(delay, float(retry_after)))
        if self.stop.wait(delay):
            raise Stopped()

    def call(self, send: Callable[[], Any]):
        """`send()` (one HTTP request), retried on transient errors; raises ServerUnavailable at the end.

        Raises Rejected for a request the server rejects as such (400, 413, 422: the work item fails);
        any other non-transient HTTP error (401, 403, 404, ...) stops the run with RuntimeError.
        """
        oa = self.openai
        for attempt in range(self.config.max_retries + 1):
            if self.stop.is_set():
                raise Stopped()
            self.count(calls=1, retries=int(attempt > 0))
            try:
                return send()
            except oa.APIConnectionError as err:  # timeouts included (APITimeoutError subclasses it)
                error, last = err, type(err).__name__
            except oa.APIStatusError as err:
                if err.status_code in REJECTED_STATUS:
                    raise Rejected(f"HTTP {err.status_code}: {self.scrub(err.message)[:200]}") from None
                if err.status_code not in TRANSIENT_STATUS and err.status_code < 500:
                    raise RuntimeError(
                        f"LLM server {self.summary.base_url} refused the request with HTTP {err.status_code} "
                        f"({self.scrub(err.message)[:300]}); check the key in ${self.config.api_key_env}, "
                        f"the model name {self.config.model!r} and the base URL") from None
                error, last = err, f"HTTP {err.status_code}"
            if attempt < self.config.max_retries:
                log.debug("transient error (%s), retry %d/%d", last, attempt + 1, self.config.max_retries)
                self.backoff(attempt + 1, error)
        self.stop.set()  # here, not in the caller: a free worker must not start the next item first
        raise ServerUnavailable(f"{last} after {self.config.max_retries + 1} attempt(s)")

    def complete(self, body: dict):
        """One chat completion (retried); its token usage is counted."""
        response = self.call(lambda: self.client.chat.completions.create(**body))
        usage = getattr(response, "usage", None)
        if usage is not None:
            self.count(prompt_tokens=usage.prompt_tokens or 0, completion_tokens=usage.completion_tokens or 0)
        return response

    def embed(self, body: dict):
        """One embeddings request (retried); its token usage is counted."""
        response = self.call(lambda: self.client.embeddings.create(**body))
        usage = getattr(response, "usage", None)
        if usage is not None:
            self.count(prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0)
        return response

    def ask(self, body: dict, parse: Callable[[Optional[str]], Any], what: str = "") -> Tuple[Any, str, str]:
        """Chat until a reply parses or the re-asks run out: (value or None, reason, last reply).

        A re-ask goes at `retry_temperature` (a deterministic model would repeat the bad reply).
        """
        reason, reply = "", ""
        for attempt in range(self.config.parse_retries + 1):
            request = dict(body)
            if attempt:
                request["temperature"] = self.config.retry_temperature
                self.count(retries=1)
            try:
                response = self.complete(request)
            except Rejected as err:
                return None, str(err), ""
            reply = response.choices[0].message.content if response.choices else ""
            try:
                return parse(reply), "", reply or ""
            except BadReply as err:
                reason = str(err)
                log.debug("%s: bad reply (%s)", what, reason)
        return None, reason, reply or ""

    def scrub(self, text: str) -> str:
        """Server text with the API key masked, should a server echo it."""
        key = getattr(self.client, "api_key", None)
        return str(text).replace(key, "***") if key else str(text)


def run_pool(run: LLMRun, tasks: Sequence, work: Callable, on_result: Callable, *, desc: str, unit: str,
             total: int, initial: int = 0, label: Optional[Callable] = None) -> Optional[str]:
    """Run `work(task)` for every task on `config.concurrency` threads; `on_result(task, result)` in this thread.

    Returns None when every task finished, else why the server is unreachable (the first worker to
    give up says it, named by `label(task)`; the others stop before their next request). Any other error stops the
    workers and is raised; a task stopped that way is not passed to `on_result`.
    """
    interrupted: Optional[str] = None
    progress = tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not run.config.progress)
    pool = cf.ThreadPoolExecutor(max_workers=run.config.concurrency, thread_name_prefix="llm")
    try:
        futures = {pool.submit(work, task): task for task in tasks}
        for future in cf.as_completed(futures):
            task = futures[future]
            try:
                result = future.result()
            except Stopped:
                continue
            except ServerUnavailable as err:
                if interrupted is None:
                    interrupted = f"{unit} {(label or _label)(task)}: {err}"
                continue
            except Exception:
                run.stop.set()
                raise
            on_result(task, result)
            progress.update(1)
            progress.set_postfix(failed=run.summary.failed, refresh=False)
    finally:
        run.stop.set()  # on an error or Ctrl-C, workers stop before their next request or backoff
        pool.shutdown(wait=True, cancel_futures=True)
        progress.close()
    return interrupted


def ask_per_item(requests: Sequence, config: LLMConfig, cache, summary: RunSummary, worker: Callable, *,
                 field: str, counter: str, desc: str, total: int, http_client=None) -> Tuple[dict, Optional[str]]:
    """The per-item chat loop of the item stages (tags, llm_text): cached outcomes first, the rest asked.

    `requests` are (item, request body) pairs; `worker(run, cache, item, key, body)` asks one item and
    returns its cached record (`status` "ok" with the answer under `field`, or "failed"). A recorded
    failure is asked again only with `config.retry_failed`. Counts cache hits, failures and, under the
    summary's `counter`, the items this run answered. Returns ({item_id: answer} of every answered
    item, now or earlier; the reason the server became unreachable, or None).
    """
    answers: dict = {}
    todo = []
    for item, body in requests:
        key = request_key(item.item_id, body)
        cached = cache.get(key)
        if cached is not None and (cached["status"] == "ok" or not config.retry_failed):
            summary.cache_hits += 1
            if cached["status"] == "ok":
                answers[item.item_id] = cached[field]
            else:
                summary.failed += 1
            continue
        todo.append((item, key, body))
    run = LLMRun(config, make_client(config, http_client) if todo else None, summary)

    def done(task, record):
        if record["status"] == "ok":
            answers[task[0].item_id] = record[field]
            setattr(summary, counter, getattr(summary, counter) + 1)
        else:
            summary.failed += 1

    why = run_pool(run, todo, lambda task: worker(run, cache, *task), done, desc=desc, unit="item",
                   total=total, initial=total - len(todo))
    return answers, why


def _label(task) -> str:
    first = task[0] if isinstance(task, tuple) and task else task
    return str(getattr(first, "item_id", first))


def interrupted(summary: RunSummary, why: str, done: int, total: int, unit: str, cache_path,
                error=LLMInterrupted) -> LLMInterrupted:
    """The error raised after an interrupted run: it says how much is cached and how to resume."""
    return error(f"LLM server {summary.base_url} unreachable ({why}); {done} of {total} {unit}s are done and "
                 f"cached in {cache_path}; run again to resume", summary)


# ---------------------------------------------------------------------------------------------
# replies

_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)
MAX_REPLY_CHARS = 65_536  # a longer reply is bad before any parsing: one reply costs a bounded time


def parse_json(text: Optional[str], kind: type) -> Any:
    """The JSON value of a reply that must be one `kind` (list or dict), alone or in one code fence."""
    if text and len(text) > MAX_REPLY_CHARS:
        raise BadReply(f"reply of {len(text):,} characters, over the {MAX_REPLY_CHARS:,} allowed")
    body = (text or "").strip()
    fenced = _FENCE.fullmatch(body)
    if fenced:
        body = fenced.group(1)
    if not body:
        raise BadReply("empty reply")
    try:
        value = json.loads(body, strict=False)
    except json.JSONDecodeError as err:
        raise BadReply(f"not JSON: {err.msg} at character {err.pos}") from None
    if not isinstance(value, kind):
        raise BadReply(f"JSON {type(value).__name__}, not a{'n object' if kind is dict else ' list'}")
    return value


def clean_phrases(value: Any, what: str, max_items: int, max_chars: int) -> list:
    """Distinct non-empty strings (whitespace collapsed) from a JSON list, at most `max_items`."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise BadReply(f"{what} is a {type(value).__name__}, not a list of strings")
    out: dict = {}
    for k, element in enumerate(value[:256]):
        if not isinstance(element, str):
            raise BadReply(f"{what}: element {k} is a {type(element).__name__}, not a string")
        text = " ".join(element.split())
        if text and len(text) <= max_chars:
            out.setdefault(text, None)
    if not out:
        raise BadReply(f"{what}: no usable string among {len(value)} element(s)")
    return list(out)[:max_items]


def clean_text(value: Any, what: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise BadReply(f"{what} is a {type(value).__name__}, not a string")
    text = " ".join(value.split())
    if not text:
        raise BadReply(f"{what} is empty")
    return text[:max_chars]


def embedding_vectors(response, n: int) -> list:
    """One vector (list of floats) per input from an embeddings response; raises BadReply otherwise.

    The entries are put back in input order by their `index`. A per-token list of vectors (llama.cpp
    serving a generative model without pooling) is mean-pooled; NaN, infinities, an empty vector or
    vectors of different lengths are bad.
    """
    data = list(getattr(response, "data", None) or [])
    if len(data) != n:
        raise BadReply(f"{len(data)} embeddings for {n} inputs")
    ordered = sorted(data, key=lambda d: getattr(d, "index", 0))
    if sorted(getattr(d, "index", k) for k, d in enumerate(ordered)) != list(range(n)):
        raise BadReply("embedding indices are not 0..n-1")
    out = []
    for entry in ordered:
        vector = getattr(entry, "embedding", None)
        if isinstance(vector, list) and vector and isinstance(vector[0], list):  # one vector per token
            width = len(vector[0])
            if not width or any(not isinstance(v, list) or len(v) != width for v in vector):
                raise BadReply("per-token embeddings of different lengths")
            vector = [sum(col) / len(vector) for col in zip(*vector)]
        if not isinstance(vector, list) or not vector:
            raise BadReply(f"embedding {getattr(entry, 'index', '?')} is not a list of numbers")
        try:
            vector = [float(v) for v in vector]
        except (TypeError, ValueError):
            raise BadReply(f"embedding {getattr(entry, 'index', '?')} holds a non-number") from None
        if not all(math.isfinite(v) for v in vector):
            raise BadReply(f"embedding {getattr(entry, 'index', '?')} holds NaN or infinity")
        out.append(vector)
    if len({len(v) for v in out}) > 1:
        raise BadReply(f"embeddings of different lengths {sorted({len(v) for v in out})}")
    return out


# ---------------------------------------------------------------------------------------------
# prompts

# Top-level sections of prompts.yaml other than the tagger's domains (which sit at the top level).
SECTIONS = ("llm_text", "profile_cluster", "profile_merge")


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str
    examples: tuple = ()  # ((user, assistant), ...)

    def render(self, fields: Mapping[str, str], where: str) -> list:
        """Chat messages: system, the one-shot example(s), then the user message."""
        try:
            messages = [{"role": "system", "content": self.system.format(**fields)}]
            for user, assistant in self.examples:
                messages.append({"role": "user", "content": user.format(**fields)})
                messages.append({"role": "assistant", "content": assistant})
            messages.append({"role": "user", "content": self.user.format(**fields)})
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"prompt {where}: bad placeholder ({err!r}); use "
                             + ", ".join("{" + k + "}" for k in fields)) from err
        return messages


def load_prompt_file(path: Optional[str] = None) -> dict:
    """{"tags": {domain: Prompt}, section: {domain: Prompt}, ...}: shipped, then `path` domain by domain."""
    shipped = resources.files("atomic_data_builders.enrich").joinpath("prompts.yaml")
    prompts = parse_prompt_file(yaml.safe_load(shipped.read_text(encoding="utf-8")), "prompts.yaml (shipped)")
    if path:
        with open(path, encoding="utf-8") as fh:
            for section, table in parse_prompt_file(yaml.safe_load(fh), path).items():
                prompts.setdefault(section, {}).update(table)
    for section, table in prompts.items():
        if table and "default" not in table:
            raise ValueError(f"prompts: section {section!r} needs a `default` entry")
    return prompts


def parse_prompt_file(data: Any, source: str) -> dict:
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of domain -> prompt, got {type(data).__name__}")
    out: dict = {"tags": {}}
    for key, entry in data.items():
        if key in SECTIONS:
            if not isinstance(entry, dict):
                raise ValueError(f"{source}: section {key!r} must map domains to prompts")
            out[key] = {str(domain): _parse_prompt(value, f"{source}: {key}, domain {domain!r}")
                        for domain, value in entry.items()}
        else:
            out["tags"][str(key)] = _parse_prompt(entry, f"{source}: domain {key!r}")
    return out


def _parse_prompt(entry: Any, where: str) -> Prompt:
    if not isinstance(entry, dict) or not isinstance(entry.get("system"), str) \
            or not isinstance(entry.get("user"), str):
        raise ValueError(f"{where}: needs string fields `system` and `user`")
    examples = []
    for k, ex in enumerate(entry.get("examples") or []):
        if not isinstance(ex, dict) or not isinstance(ex.get("user"), str) or not isinstance(ex.get("assistant"), str):
            raise ValueError(f"{where}: example {k} needs string fields `user` and `assistant`")
        examples.append((ex["user"], ex["assistant"]))
    return Prompt(entry["system"], entry["user"], tuple(examples))


def section_prompt(prompts: dict, section: str, domain: str) -> Prompt:
    table = prompts.get(section) or {}
    if not table:
        raise ValueError(f"prompts: no section {section!r} (shipped prompts.yaml has one; check --llm-prompts)")
    return table.get(domain, table["default"])


def unique_ids(values: Iterable, what: str, where: str = "") -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{what} {value!r} appears twice{' ' + where if where else ''}")
        seen.add(value)
