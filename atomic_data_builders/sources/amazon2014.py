"""Amazon 2014 (McAuley et al.): `ratings_<Domain>.csv(.gz)` (user,item,rating,time) and
`meta_<Domain>.json(.gz)` (one Python-literal dict a line: asin, title, description, imUrl, categories)."""
from __future__ import annotations

import ast

from atomic_data_builders.sources import amazon
from atomic_data_builders.sources.base import clean_text

NAME = "amazon2014"
DEFAULT_FILTERS = amazon.DEFAULT_FILTERS
add_arguments = amazon.add_arguments


def parse_review(line: str) -> amazon.Review:
    fields = line.strip().split(",")
    if len(fields) != 4:
        raise ValueError(f"expected user,item,rating,time, got {len(fields)} fields")
    user, item, rating, ts = fields
    if not user or not item:
        raise ValueError("empty user or item")
    return user, item, float(int(ts)), float(rating)


def parse_meta(line: str) -> dict:
    record = ast.literal_eval(line)  # the 2014 dump is Python literals, not JSON; literal_eval runs no code
    if not isinstance(record, dict):
        raise TypeError(f"expected a dict, got {type(record).__name__}")
    return {"item_id": str(record["asin"]), "title": clean_text(record.get("title")),
            "description": clean_text(record.get("description")),
            "categories": amazon.flatten_categories(record.get("categories")),
            "image": record.get("imUrl") or None,
            "brand": clean_text(record.get("brand"))}


RELEASE = amazon.Release(NAME, ["ratings_{stem}.csv.gz", "ratings_{stem}.csv"], ["meta_{stem}.json.gz", "meta_{stem}.json"],
                         parse_review, parse_meta)


def read(args, bad):
    return amazon.read_release(RELEASE, args, bad)
