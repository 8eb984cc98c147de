"""Text embeddings of the LLM stages, and the `llm_emb` stage (LLM item embeddings, as LLM4CDSR reads them).

Two backends behind one call, `embedder(texts) -> [vector or None, ...]`:

- `LocalEmbedder`: the offline sentence-transformers model (`CachedEncoder`, MiniLM by default);
  the default, needs no server;
- `OpenAIEmbedder`: any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, vLLM, Ollama,
  llama.cpp started with `--embedding true`). Texts go in batches, several batches in flight, with
  the retries, backoff, stop-when-unreachable and key hygiene of every LLM stage (`llm_client`).
  Each vector is cached under a hash of (model, text) as soon as its batch returns, so a re-run
  sends nothing and a killed run resumes; a batch the server rejects (400, 413, 422) is sent
  again text by text, and a text that still fails is recorded (an empty cell, not asked again
  unless `retry_failed`). A server that returns one vector per token is mean-pooled.

`llm_emb` embeds a templated item text (`item_document`: title, category path, brand and
description, each where the source has it) and writes two columns: `llm_emb`, every item in one
space (optionally PCA-reduced over all items, `global_dim`), and `llm_emb_domain`, the same vectors
PCA-reduced within each item's domain (`domain_dim`, 128 by default; LLM4CDSR's domain threads
read it). Each PCA fit is stored in the cache (`reduce.stored_pca`), so a re-run on the same
vectors writes the same bytes.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from atomic_data_builders.enrich.cache import ArrayCache, JsonlCache, digest, slug
from atomic_data_builders.enrich.llm_client import (
    BadReply,
    LLMConfig,
    LLMRun,
    Rejected,
    RunSummary,
    default_cache_dir,
    embedding_vectors,
    interrupted,
    make_client,
    run_pool,
    safe_url,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# backends

class LocalEmbedder:
    """The offline sentence-transformers model; every vector is cached by `CachedEncoder`."""

    backend = "sentence-transformers"

    def __init__(self, encoder):
        self.encoder = encoder
        self.model = encoder.model_name

    def __call__(self, texts: Sequence[str], desc: str = "embed") -> List[Optional[np.ndarray]]:
        return list(self.encoder(list(texts), desc=desc))

    def facts(self) -> dict:
        return {"backend": self.backend, "model": self.model, "encoded": self.encoder.encoded}


@dataclass
class EmbedConfig(LLMConfig):
    """Settings of an OpenAI-compatible embeddings backend (the LLM options of the CLI, plus these)."""

    model: str = "text-embedding-3-small"
    batch_size: int = 32  # texts per request
    max_chars: int = 4000  # a longer text is cut (about 1000 tokens): bounds one request

    def __post_init__(self):
        super().__post_init__()
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class EmbedSummary(RunSummary):
    embedded: int = 0  # texts embedded by this run


class OpenAIEmbedder:
    """`/v1/embeddings` of an OpenAI-compatible server, batched, concurrent, cached per text."""

    backend = "openai"
    FAILED_FILE = "failed.jsonl"

    def __init__(self, config: EmbedConfig, http_client=None):
        self.config = config
        self.model = config.model
        self.http_client = http_client
        self.folder = Path(config.cache_dir or default_cache_dir() / "llm_emb") / slug(f"openai:{config.model}")
        self.cache = ArrayCache(self.folder)
        self.summary = EmbedSummary(model=config.model, base_url=safe_url(config.base_url))
        self._client = None

    def key(self, text: str) -> str:
        return digest("openai-embeddings", self.model, text)

    def __call__(self, texts: Sequence[str], desc: str = "embed") -> List[Optional[np.ndarray]]:
        start = time.perf_counter()
        config, summary = self.config, self.summary
        texts = [t[:config.max_chars] for t in texts]
        keys = [self.key(t) for t in texts]
        failures = JsonlCache(self.folder / self.FAILED_FILE)
        unique = dict(zip(keys, texts))
        summary.items += len(unique)
        todo = []
        for key, text in unique.items():
            if self.cache.get(key) is not None or (failures.get(key) is not None and not config.retry_failed):
                summary.cache_hits += 1
                summary.failed += int(self.cache.get(key) is None)
            else:
                todo.append((key, text))
        batches = [todo[i:i + config.batch_size] for i in range(0, len(todo), config.batch_size)]
        if batches and self._client is None:
            self._client = make_client(config, self.http_client)
        run = LLMRun(config, self._client, summary)
        dims = {len(v) for v in (self.cache.get(k) for k in keys) if v is not None}
        done = {"texts": len(unique) - len(todo)}

        def finished(batch, result):
            good = [(k, v) for k, v in result if isinstance(v, list)]
            width = next(iter(dims), None)
            if good and width is not None and len(good[0][1]) != width:  # another model behind the same name
                result = [(k, f"a vector of {len(good[0][1])} values where this model's others have {width}")
                          for k, _ in result]
                good = []
            if good:
                dims.add(len(good[0][1]))
                self.cache.put_many([k for k, _ in good], np.asarray([v for _, v in good], dtype=np.float32))
                summary.embedded += len(good)
            for key, value in result:
                if not isinstance(value, list):
                    failures.put({"key": key, "model": self.model, "status": "failed", "reason": value})
                    summary.failed += 1
                    log.warning("embedding failed (%s): %s", self.model, value)
            done["texts"] += len(result)

        try:
            why = run_pool(run, batches, lambda batch: self._embed_batch(run, batch), finished,
                           desc=f"{desc} ({self.model})", unit="batch", total=len(batches),
                           label=lambda batch: f"of {len(batch)} text(s)")
        finally:
            failures.close()
            summary.seconds = round(summary.seconds + time.perf_counter() - start, 3)
        log.info("embeddings: %s", json.dumps(summary.as_dict()))
        if why:
            raise interrupted(summary, why, done["texts"], len(unique), "text", self.folder)
        return [self.cache.get(k) for k in keys]

    def _embed_batch(self, run: LLMRun, batch: list) -> list:
        """[(key, vector as a list | reason of the failure as a str), ...] for one batch of (key, text)."""
        body = {"model": self.model, "input": [text for _, text in batch], "encoding_format": "float"}
        reason = ""
        for attempt in range(self.config.parse_retries + 1):
            if attempt:
                run.count(retries=1)
            try:
                vectors = embedding_vectors(run.embed(body), len(batch))
                return [(key, vector) for (key, _), vector in zip(batch, vectors)]
            except Rejected as err:
                if len(batch) > 1:  # one text may be the reason (too long): the others still get theirs
                    return [pair for single in batch for pair in self._embed_batch(run, [single])]
                return [(batch[0][0], str(err))]
            except BadReply as err:
                reason = str(err)
                log.debug("embeddings: bad reply (%s)", reason)
        return [(key, f"bad reply: {reason}") for key, _ in batch]

    def facts(self) -> dict:
        return {"backend": self.backend, **self.summary.as_dict()}


def make_embedder(options: dict, encoder_factory, cache_dir: Path, progress: bool = True, http_client=None):
    """`OpenAIEmbedder` when `options` names an embeddings model (`model`), else the local encoder."""
    if options.get("model"):
        config = EmbedConfig.from_mapping({**options, "cache_dir": str(Path(cache_dir) / "llm_emb"),
                                           "progress": progress}, "embedding")
        return OpenAIEmbedder(config, http_client=http_client)
    return LocalEmbedder(encoder_factory())


# ---------------------------------------------------------------------------------------------
# the llm_emb stage

def item_document(item, max_description_chars: int = 1000) -> str:
    """The item as one text for an embedding model: the fields the source has, one per line ("" if none)."""
    categories = [str(c).strip() for c in (getattr(item, "categories", None) or []) if str(c).strip()]
    lines = [("Title", (item.title or "").strip()), ("Category", " > ".join(categories)),
             ("Brand", (getattr(item, "brand", "") or "").strip()),
             ("Description", (getattr(item, "description", "") or "").strip()[:max_description_chars])]
    return "\n".join(f"{name}: {value}" for name, value in lines if value)


def item_vectors(items, embedder, desc: str = "llm_emb") -> Dict[str, Optional[np.ndarray]]:
    """{item_id: raw embedding of its `item_document`}; None for an item without text or whose embedding failed."""
    docs = {it.item_id: item_document(it) for it in items}
    with_text = [i for i, d in docs.items() if d]
    vectors = embedder([docs[i] for i in with_text], desc=desc)
    out: Dict[str, Optional[np.ndarray]] = {i: None for i in docs}
    out.update({i: (None if v is None else np.asarray(v, dtype=np.float32)) for i, v in zip(with_text, vectors)})
    return out


def llm_item_embeddings(items, embedder, cache_dir: Path, global_dim: Optional[int] = None,
                        domain_dim: int = 128, facts: Optional[dict] = None):
    """({item_id: llm_emb}, {item_id: llm_emb_domain}): see the module docstring. None = empty cell."""
    from atomic_data_builders.enrich.reduce import project, stored_pca

    facts = facts if facts is not None else {}
    if domain_dim < 1 or (global_dim is not None and global_dim < 1):
        raise ValueError(f"--llm-emb-dim and --llm-emb-domain-dim must be >= 1, got {global_dim} and {domain_dim}")
    raw = item_vectors(items, embedder)
    present = [i for i, v in raw.items() if v is not None]
    facts.update(items=len(raw), with_text=sum(1 for it in items if item_document(it)), embedded=len(present))
    glob: Dict[str, Optional[np.ndarray]] = {i: None for i in raw}
    local: Dict[str, Optional[np.ndarray]] = {i: None for i in raw}
    if not present:
        facts["dim"] = None
        return glob, local
    width = int(raw[present[0]].shape[0])
    pca_dir = Path(cache_dir) / "llm_emb" / "pca"
    matrix = np.stack([raw[i] for i in present])  # [n, width]
    facts["dim"] = width
    if global_dim:
        dim = min(global_dim, width)
        fit, reused = stored_pca(matrix, dim, pca_dir, "global")
        glob.update(zip(present, project(matrix, fit, dim)))
        facts["llm_emb"] = {"dim": dim, "explained_variance": round(fit["explained"], 4), "fit_reused": reused}
    else:
        glob.update(zip(present, matrix))
        facts["llm_emb"] = {"dim": width, "pca": None}
    dim = min(domain_dim, width)
    domain_of = {it.item_id: it.domain for it in items}
    per_domain = {}
    for domain in dict.fromkeys(domain_of[i] for i in present):
        members = [i for i in present if domain_of[i] == domain]
        sub = np.stack([raw[i] for i in members])  # [n_d, width]
        fit, reused = stored_pca(sub, dim, pca_dir, "domain-" + slug(domain, 40))
        local.update(zip(members, project(sub, fit, dim)))
        per_domain[domain] = {"items": len(members), "axes": int(fit["components"].shape[0]),
                              "explained_variance": round(fit["explained"], 4), "fit_reused": reused}
    facts["llm_emb_domain"] = {"dim": dim, "domains": per_domain}
    return glob, local
