"""Amazon Reviews 2023 (Hou et al.): review JSONL `<Domain>.jsonl(.gz)` (user_id, parent_asin,
rating, timestamp in ms) and `meta_<Domain>.jsonl(.gz)` (parent_asin, title, description list,
images list of {thumb, large, hi_res}, main_category, categories)."""
from __future__ import annotations

import json

from atomic_data_builders.sources import amazon
from atomic_data_builders.sources.base import clean_text

NAME = "amazon2023"
DEFAULT_FILTERS = amazon.DEFAULT_FILTERS
add_arguments = amazon.add_arguments


def parse_review(line: str) -> amazon.Review:
    record = json.loads(line)
    rating = record.get("rating")
    return (str(record["user_id"]), str(record["parent_asin"]), int(record["timestamp"]) / 1000.0,
            None if rating is None else float(rating))


def parse_meta(line: str) -> dict:
    record = json.loads(line)
    image = None
    for entry in record.get("images") or []:
        image = entry.get("hi_res") or entry.get("large") or entry.get("thumb")
        if image:
            break
    main = record.get("main_category")
    details = record.get("details") if isinstance(record.get("details"), dict) else {}
    return {"item_id": str(record["parent_asin"]), "title": clean_text(record.get("title")),
            "description": clean_text(record.get("description")),
            "categories": amazon.flatten_categories(([main] if main else []) + list(record.get("categories") or [])),
            "image": image,
            "brand": clean_text(details.get("Brand")) or clean_text(record.get("store"))}


RELEASE = amazon.Release(NAME, ["{stem}.jsonl.gz", "{stem}.jsonl"], ["meta_{stem}.jsonl.gz", "meta_{stem}.jsonl"],
                         parse_review, parse_meta, time_unit="ms")


def read(args, bad):
    return amazon.read_release(RELEASE, args, bad)
