"""`user_profile`: a profile of each user from the TRAINING part of their history, and its embedding.

Input: `history.training_histories` (each user's merged timeline without its validation and test
targets) and item text only. Nothing else is read, so no evaluation item can reach a prompt, a
profile text or a profile embedding. Output: `NAME.user` (`user_id` token, `profile_emb`
float_seq; docs/atomic_files.md) and `NAME.profiles.jsonl` (per user: the profile text, the
per-cluster texts, the training items they came from), written by the build.

Two ways to write a profile:

- `local` (default, no LLM): per domain the user bought from in training, the number of items,
  their most frequent tags (the `.item` tags, weighted; else their categories) and the most recent
  titles (`local_profile`). Deterministic; 16k users take seconds before the embedding.
- `openai` (hierarchical, as LLM4CDSR): the items of each domain are clustered once by their
  `llm_emb` text embeddings (k-means, `cluster_items`; items only, no interaction). A user's
  training items fall into some of those clusters; the largest (`max_clusters`) are each shown to
  the LLM with the domain's `profile_cluster` prompt (its latest `items_per_cluster` titles),
  which answers with the interests they show; a `profile_merge` prompt then merges those interests
  into one profile. Each request is cached under a hash of (user, request), with the retries,
  re-asks, resume and key hygiene of every LLM stage (`llm_client`); a user whose replies never
  parse gets an empty cell.

The profile text is embedded by the same backend as `llm_emb` (the local sentence-transformers
model, or `--llm-emb-model` at the server). A user with no training interaction has an empty cell.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from atomic_data_builders.atomic import atomic_open
from atomic_data_builders.enrich.cache import JsonlCache, slug
from atomic_data_builders.enrich.llm_client import (
    BadReply,
    LLMConfig,
    LLMInterrupted,
    LLMRun,
    RunSummary,
    clean_phrases,
    clean_text,
    default_cache_dir,
    interrupted,
    load_prompt_file,
    make_client,
    parse_json,
    request_key,
    run_pool,
    safe_url,
    section_prompt,
)

log = logging.getLogger(__name__)

CACHE_FILE = "user_profile.jsonl"
INTERESTS_SCHEMA = {"type": "array", "items": {"type": "string", "maxLength": 60}, "minItems": 1, "maxItems": 4}
PROFILE_SCHEMA = {"type": "object", "properties": {"profile": {"type": "string", "maxLength": 600}},
                  "required": ["profile"]}
TITLE_CHARS = 120  # a title is cut to this in prompts and local profiles


@dataclass
class ProfileConfig(LLMConfig):
    """Settings of `--profiles openai` (the LLM options of the CLI, plus these)."""

    max_tokens: int = 160
    clusters: int = 8  # k-means clusters per domain
    max_clusters: int = 6  # a user's largest clusters that are asked about
    items_per_cluster: int = 10  # most recent titles shown per cluster

    def __post_init__(self):
        super().__post_init__()
        if min(self.clusters, self.max_clusters, self.items_per_cluster) < 1:
            raise ValueError("clusters, max_clusters and items_per_cluster must be >= 1")


@dataclass
class ProfileSummary(RunSummary):
    requests: int = 0  # cluster and merge requests the users needed (answered from the cache or not)
    profiled: int = 0  # users profiled by this run


# ---------------------------------------------------------------------------------------------
# local profiles (no LLM)

def local_profile(history: Sequence[str], items: Mapping[str, object], item_tags: Mapping[str, list],
                  domains: Sequence[str], top_tags: int = 5, recent: int = 3) -> Tuple[str, list]:
    """(profile text, [{"domain", "items", "text"}, ...]) of one user's training items, domain by domain."""
    by_domain: Dict[str, List[str]] = defaultdict(list)
    for item_id in history:
        by_domain[items[item_id].domain].append(item_id)
    order = list(domains) + sorted(set(by_domain) - set(domains))
    parts = []
    for domain in order:
        members = by_domain.get(domain)
        if not members:
            continue
        scores: Counter = Counter()
        for item_id in members:
            tags = item_tags.get(item_id) or []
            for tag, weight in tags:
                scores[tag.replace("_", " ")] += float(weight)
        if not scores:  # no tags: the most specific category of each item
            scores.update(str(items[i].categories[-1]).strip().lower() for i in members
                          if getattr(items[i], "categories", None))
        best = [t for t, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:top_tags]]
        titles = [items[i].title.strip()[:TITLE_CHARS] for i in reversed(members) if (items[i].title or "").strip()]
        text = f"{domain} ({len(members)} {'purchase' if len(members) == 1 else 'purchases'})"
        if best:
            text += ": interests " + ", ".join(best)
        if titles:
            text += "; recently bought " + "; ".join(titles[:recent])
        parts.append({"domain": domain, "items": list(members), "text": text + "."})
    return " ".join(p["text"] for p in parts), parts


def local_profiles(histories: Mapping[str, List[str]], items: Mapping[str, object], item_tags: Mapping[str, list],
                   domains: Sequence[str]) -> Dict[str, dict]:
    out = {}
    for user, history in histories.items():
        if not history:
            out[user] = {"user_id": user, "status": "no_history", "profile": "", "clusters": [], "source": "local"}
            continue
        text, parts = local_profile(history, items, item_tags, domains)
        out[user] = {"user_id": user, "status": "ok", "profile": text, "clusters": parts, "source": "local"}
    return out


# ---------------------------------------------------------------------------------------------
# clusters of items (per domain, from item embeddings only)

def kmeans(matrix: np.ndarray, k: int, seed: int = 0, iterations: int = 50) -> np.ndarray:
    """Labels [n] of a deterministic spherical k-means (k-means++ seeding from a fixed seed)."""
    x = np.asarray(matrix, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # [n, d]
    n = len(x)
    if n <= k:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    centers = [x[rng.integers(n)]]
    closest = np.full(n, np.inf)
    for _ in range(1, k):
        closest = np.minimum(closest, ((x - centers[-1]) ** 2).sum(axis=1))  # [n]
        total = closest.sum()
        centers.append(x[rng.choice(n, p=closest / total)] if total > 0 else x[rng.integers(n)])
    centers = np.stack(centers)  # [k, d]
    labels = np.full(n, -1)
    for _ in range(iterations):
        new = (x @ centers.T).argmax(axis=1)  # [n] most similar center
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            members = x[labels == j]
            if len(members):
                center = members.sum(axis=0)
                centers[j] = center / max(np.linalg.norm(center), 1e-12)
    return labels


def cluster_items(vectors: Mapping[str, Optional[np.ndarray]], domain_of: Mapping[str, str], k: int,
                  folder: Path) -> Dict[str, str]:
    """{item_id: "<domain>#<cluster>"} for every item with a vector; k-means within each domain.

    The labels of an input (ids, vectors, k) are stored in `folder`, so a re-run groups alike.
    """
    out: Dict[str, str] = {}
    for domain in dict.fromkeys(domain_of[i] for i in vectors if vectors[i] is not None):
        ids = [i for i, v in vectors.items() if v is not None and domain_of[i] == domain]
        matrix = np.ascontiguousarray(np.stack([vectors[i] for i in ids]), dtype=np.float32)
        digest = hashlib.sha256(json.dumps([k, ids]).encode() + matrix.tobytes()).hexdigest()[:20]
        path = Path(folder) / f"clusters-{slug(domain, 40)}-{digest}.json"
        labels = None
        if path.is_file():
            try:
                labels = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                labels = None
        if not isinstance(labels, list) or len(labels) != len(ids):
            labels = [int(v) for v in kmeans(matrix, k)]
            with atomic_open(path) as handle:
                json.dump(labels, handle)
        out.update({i: f"{domain}#{j}" for i, j in zip(ids, labels)})
    return out


def user_groups(history: Sequence[str], items: Mapping[str, object], labels: Mapping[str, str],
                domains: Sequence[str], max_clusters: int, items_per_cluster: int) -> List[Tuple[str, List[str]]]:
    """[(domain, [item_id, ...]), ...]: the user's largest clusters of titled training items, latest items.

    Largest first (ties: the most recently used); listed in domain order; each keeps its last
    `items_per_cluster` items, oldest first. An item without a vector is a cluster of its domain's
    "unclustered" items.
    """
    groups: Dict[str, List[Tuple[int, str]]] = defaultdict(list)
    for position, item_id in enumerate(history):
        if (items[item_id].title or "").strip():
            groups[labels.get(item_id) or f"{items[item_id].domain}#-"].append((position, item_id))
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), -kv[1][-1][0], kv[0]))[:max_clusters]
    rank = {d: r for r, d in enumerate(domains)}
    ranked.sort(key=lambda kv: rank.get(items[kv[1][0][1]].domain, len(rank)))  # stable: size order within a domain
    return [(items[members[0][1]].domain, [i for _, i in members[-items_per_cluster:]]) for _, members in ranked]


# ---------------------------------------------------------------------------------------------
# LLM profiles

def parse_interests(reply: Optional[str]) -> list:
    return clean_phrases(parse_json(reply, list), "interests", 5, 80)


def parse_profile(reply: Optional[str]) -> str:
    value = parse_json(reply, dict)
    if "profile" not in value:
        raise BadReply("the object has no field `profile`")
    return clean_text(value["profile"], "profile", 1200)


def _asked(run: LLMRun, cache: JsonlCache, user: str, kind: str, body: dict, parse, field: str) -> dict:
    """The cached outcome of one request of a user, asking the server on a miss."""
    run.count(requests=1)
    key = request_key(user, body, owner_field="user_id")
    cached = cache.get(key)
    if cached is not None and (cached["status"] == "ok" or not run.config.retry_failed):
        run.count(cache_hits=1)
        return cached
    value, reason, reply = run.ask(body, parse, what=f"user {user} ({kind})")
    record = {"key": key, "user_id": user, "kind": kind, "model": run.config.model}
    if value is not None:
        record.update(status="ok", **{field: value})
    else:
        record.update(status="failed", reason=reason, reply=(reply or "")[:300])
        log.warning("user_profile: user %s, %s request: no usable reply after %d request(s): %s", user, kind,
                    run.config.parse_retries + 1, reason)
    cache.put(record)
    return record


def _profile_user(run: LLMRun, cache: JsonlCache, prompts: dict, user: str, groups: list, items: Mapping) -> dict:
    config = run.config
    clusters = []
    for domain, members in groups:
        titles = "\n".join(f"- {items[i].title.strip()[:TITLE_CHARS]}" for i in members)
        messages = section_prompt(prompts, "profile_cluster", domain).render(
            {"domain": domain, "count": str(len(members)), "titles": titles}, f"profile_cluster for domain {domain!r}")
        record = _asked(run, cache, user, "cluster", config.chat_body(messages, INTERESTS_SCHEMA, "interests"),
                        parse_interests, "interests")
        if record["status"] == "ok":
            clusters.append({"domain": domain, "items": list(members), "text": "; ".join(record["interests"])})
    result = {"user_id": user, "profile": "", "clusters": clusters, "source": "openai"}
    if not clusters:
        return {**result, "status": "failed", "reason": "no cluster reply parsed"}
    domains = list(dict.fromkeys(c["domain"] for c in clusters))
    fields = {"domains": ", ".join(domains), "interests": "\n".join(f"- {c['domain']}: {c['text']}" for c in clusters)}
    merge_domain = domains[0] if len(domains) == 1 else "default"
    messages = section_prompt(prompts, "profile_merge", merge_domain).render(fields, "profile_merge")
    record = _asked(run, cache, user, "merge", config.chat_body(messages, PROFILE_SCHEMA, "profile"),
                    parse_profile, "profile")
    if record["status"] != "ok":
        return {**result, "status": "failed", "reason": f"merge: {record.get('reason', '')}"}
    return {**result, "status": "ok", "profile": record["profile"]}


def llm_profiles(histories: Mapping[str, List[str]], items: Mapping[str, object], labels: Mapping[str, str],
                 domains: Sequence[str], config: ProfileConfig,
                 http_client=None) -> Tuple[Dict[Hashable, dict], ProfileSummary]:
    """({user_id: record}, summary) of the hierarchical LLM profiles (see the module docstring).

    Raises LLMInterrupted when the server stays unreachable (finished requests stay cached).
    """
    start = time.perf_counter()
    prompts = load_prompt_file(config.prompts_file)
    summary = ProfileSummary(model=config.model, base_url=safe_url(config.base_url))
    cache = JsonlCache(Path(config.cache_dir or default_cache_dir() / "user_profile") / CACHE_FILE)
    records: Dict[Hashable, dict] = {}
    todo = []
    for user, history in histories.items():
        groups = user_groups(history, items, labels, domains, config.max_clusters, config.items_per_cluster)
        if groups:
            todo.append((user, groups))
        else:
            records[user] = {"user_id": user, "status": "no_history", "profile": "", "clusters": [],
                             "source": "openai"}
    summary.items = len(todo)
    run = LLMRun(config, make_client(config, http_client) if todo else None, summary)

    def done(task, record):
        records[task[0]] = record
        if record["status"] == "ok":
            summary.profiled += 1
        else:
            summary.failed += 1

    try:
        why = run_pool(run, todo, lambda task: _profile_user(run, cache, prompts, task[0], task[1], items), done,
                       desc=f"user_profile ({config.model})", unit="user", total=len(todo))
    finally:
        cache.close()
        summary.seconds = round(time.perf_counter() - start, 3)
    log.info("user_profile: %s", json.dumps(summary.as_dict()))
    if why:
        raise interrupted(summary, why, summary.profiled + summary.failed, summary.items, "user", cache.path,
                          LLMInterrupted)
    return {user: records[user] for user in histories}, summary


# ---------------------------------------------------------------------------------------------
# output

def write_profiles_jsonl(path: Path, records: Sequence[dict]) -> None:
    """`NAME.profiles.jsonl`: one JSON line per user, in the order of the `.user` file."""
    with atomic_open(path) as handle:
        handle.writelines(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
