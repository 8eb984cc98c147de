"""Local tagger: keyphrases mined from a domain's titles and categories, ranked per item by
embedding similarity, then consolidated like LLM tags (`tags_refine.refine_tags`). No server, no key.

Per domain:
1. candidate phrases are the 1- to 3-word n-grams of titles and the category names, split at
   punctuation and numbers (sizes, counts), not starting or ending with a stopword or a unit;
2. the vocabulary keeps phrases used by at least `min_df` items and at most `max_df` of them
   (a phrase every item has, like the domain's root category, tells items apart no better than none),
   and drops a phrase that never occurs outside one longer phrase ("marys gone" when every such
   title says "marys gone crackers"): it is a fragment, not a concept;
3. each item's candidates are the vocabulary phrases of its own text, ranked by maximal marginal
   relevance: cosine similarity between the phrase and the item text embeddings (what the phrase
   says about this item, rather than how often it occurs) minus a penalty for similarity to the
   phrases already chosen ("betty crocker", then not "betty"), the best `max_candidates` kept;
4. `refine_tags` normalizes, merges near-duplicate phrases, drops rare ones, caps and weights.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from atomic_data_builders.enrich.items import ItemText
from atomic_data_builders.enrich.tags_refine import RefineConfig, refine_tags

STOPWORDS = frozenset("""
a about above after all also an and any are as at be been best by can com de del each for from
great has have in inch inches into is it its la le made make more most new no non not of on one
only or other our out over per plus pro s set size so style than that the their these this to
too two up use used very w was we when which with without x you your
""".split())
# package sizes and counts say nothing about what an item is
UNITS = frozenset("""
oz ounce ounces lb lbs pound pounds g gram grams kg mg ml l liter liters litre quart quarts qt gallon
gallons fl pack packs pk count ct piece pieces pc pcs each box boxes bag bags bottle bottles can cans
jar jars case cases dozen inch inches cm mm ft foot feet pkg packet packets serving servings
""".split())
_SEGMENT = re.compile(r"[^a-z'\s-]+")  # punctuation and digits end a phrase
_WORD = re.compile(r"[a-z][a-z'-]*[a-z]|[a-z]")
_JOINERS = frozenset({"and", "of", "with", "n"})  # allowed inside a 3-gram: "salt and pepper"


def _words(segment: str) -> List[str]:
    return [w.replace("'", "") for w in _WORD.findall(segment)]


def phrases(text: str, max_n: int = 3) -> List[str]:
    """Candidate phrases of a text, in order of appearance, without repeats."""
    out: Dict[str, None] = {}
    for segment in _SEGMENT.split(text.lower().replace("&", " and ")):
        words = _words(segment)
        for n in range(1, max_n + 1):
            for i in range(len(words) - n + 1):
                gram = words[i:i + n]
                if _bad_edge(gram[0]) or _bad_edge(gram[-1]):
                    continue
                if any(w in STOPWORDS and w not in _JOINERS or w in UNITS for w in gram[1:-1]):
                    continue
                out.setdefault(" ".join(gram), None)
    return list(out)


def _bad_edge(word: str) -> bool:
    return word in STOPWORDS or word in UNITS or len(word) < 2


def item_candidates(item: ItemText, max_n: int = 3) -> List[str]:
    """Phrases of the title, plus the category names (each a phrase of its own)."""
    cands = dict.fromkeys(phrases(item.title, max_n))
    for category in item.categories:
        name = " ".join(_words(category.lower().replace("&", " and ")))
        if name:
            cands.setdefault(name, None)
    return list(cands)


def tag_items(items: Sequence[ItemText], config: Optional[Mapping] = None, report: Optional[dict] = None,
              encode=None) -> Dict[str, List[tuple]]:
    """{item_id: [(tag, weight), ...]} most relevant first; items left without a tag are absent.

    `config` keys (all optional): max_tags_per_item (8), min_tag_count (2), tag_merge_threshold
    (0.9), min_df (3), max_df (0.1, a fraction of the domain's items), max_candidates (12),
    max_ngram (3), text_model, cache_dir, progress. `encode` is a text encoder
    (list[str] -> [n, dim]); by default a cached MiniLM `CachedEncoder`.
    """
    config = dict(config or {})
    min_df, max_df = int(config.get("min_df", 3)), float(config.get("max_df", 0.1))
    max_candidates, max_n = int(config.get("max_candidates", 12)), int(config.get("max_ngram", 3))
    diversity = float(config.get("diversity", 0.3))  # weight of the redundancy penalty (0: pure relevance)
    refine = RefineConfig(merge_threshold=float(config.get("tag_merge_threshold", 0.9)),
                          min_count=int(config.get("min_tag_count", 2)),
                          max_tags=int(config.get("max_tags_per_item", 8)))
    if encode is None:
        from atomic_data_builders.enrich.text import CachedEncoder

        encode = CachedEncoder(config.get("text_model"), config.get("cache_dir"),
                               progress=bool(config.get("progress", True)))
    progress = bool(config.get("progress", True))

    by_domain: Dict[str, List[ItemText]] = defaultdict(list)
    for item in items:
        by_domain[item.domain].append(item)
    ranked: Dict[str, List[str]] = {}
    stats = {}
    for domain in sorted(by_domain):
        members = by_domain[domain]
        cands = {it.item_id: item_candidates(it, max_n) for it in members}
        df = Counter(p for ps in cands.values() for p in ps)
        limit = max(min_df, max_df * len(members))
        fragments = _fragments(df)
        vocab = sorted(p for p, c in df.items() if min_df <= c <= limit and p not in fragments)
        stats[domain] = {"items": len(members), "phrases": len(df), "fragments": len(fragments), "vocabulary": len(vocab)}
        if not vocab:
            continue
        index = {p: j for j, p in enumerate(vocab)}
        phrase_emb = _unit(encode(vocab, desc=f"tags_local phrases/{domain}"))  # [V, dim]
        with_text = [it for it in members if any(p in index for p in cands[it.item_id])]
        item_emb = _unit(encode([it.text() or " ".join(it.categories) for it in with_text],
                                desc=f"tags_local items/{domain}"))  # [n, dim]
        for it, vector in tqdm(zip(with_text, item_emb), total=len(with_text), desc=f"tags_local rank/{domain}",
                               unit="item", disable=not progress):
            own = [p for p in cands[it.item_id] if p in index]
            emb = phrase_emb[[index[p] for p in own]]  # [k, dim]
            order = _mmr(emb @ vector, emb @ emb.T, max_candidates, diversity)  # [k] @ ... -> chosen indices
            ranked[it.item_id] = [own[j] for j in order]
    domains = {it.item_id: it.domain for it in items}
    refined = refine_tags(ranked, domains, refine, encode=lambda texts: encode(texts, desc="tags_local merge"))
    result = {i: tags for i, tags in refined.items() if tags}
    if report is not None:
        report["tags_local"] = {"domains": stats, "items_tagged": len(result), "items": len(items),
                                "vocabulary_after_refine": len({t for tags in result.values() for t, _ in tags}),
                                "config": {"min_df": min_df, "max_df": max_df, "max_candidates": max_candidates,
                                           "max_ngram": max_n, "diversity": diversity, **refine.__dict__}}
    return result


def _fragments(df: Counter) -> set:
    """Phrases whose every occurrence lies inside one longer phrase (equal item counts)."""
    out = set()
    for phrase, count in df.items():
        words = phrase.split()
        for n in range(1, len(words)):
            for i in range(len(words) - n + 1):
                sub = " ".join(words[i:i + n])
                if df.get(sub) == count:
                    out.add(sub)
    return out


def _mmr(relevance: np.ndarray, similarity: np.ndarray, k: int, diversity: float) -> list:
    """Greedy maximal marginal relevance: indices of up to k phrases, most relevant first.

    relevance [n]: phrase-item cosine; similarity [n, n]: phrase-phrase cosine.
    """
    chosen = [int(np.argmax(relevance))]
    redundancy = similarity[chosen[0]].copy()  # [n] max similarity to the chosen phrases
    while len(chosen) < min(k, len(relevance)):
        score = (1 - diversity) * relevance - diversity * redundancy  # [n]
        score[chosen] = -np.inf
        best = int(np.argmax(score))
        chosen.append(best)
        redundancy = np.maximum(redundancy, similarity[best])
    return chosen


def _unit(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)  # [n, dim]
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
