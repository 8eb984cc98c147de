"""Amazon 2018 (Ni et al.): review JSON lines `<Domain>.json(.gz)` or `<Domain>_5.json(.gz)`
(reviewerID, asin, overall, unixReviewTime) and `meta_<Domain>.json(.gz)` (asin, title,
description list, imageURLHighRes / imageURL, category)."""
from __future__ import annotations

import json

from atomic_data_builders.sources import amazon
from atomic_data_builders.sources.base import clean_text

NAME = "amazon2018"
DEFAULT_FILTERS = amazon.DEFAULT_FILTERS
add_arguments = amazon.add_arguments


def parse_review(line: str) -> amazon.Review:
    record = json.loads(line)
    rating = record.get("overall")
    return (str(record["reviewerID"]), str(record["asin"]), float(int(record["unixReviewTime"])),
            None if rating is None else float(rating))


def parse_meta(line: str) -> dict:
    record = json.loads(line)
    images = record.get("imageURLHighRes") or record.get("imageURL") or []
    return {"item_id": str(record["asin"]), "title": clean_text(record.get("title")),
            "description": clean_text(record.get("description")),
            "categories": amazon.flatten_categories(record.get("category")),
            "image": images[0] if images else None,
            "brand": clean_text(record.get("brand"))}


# 5-core files first: "Food_5.json" is the domain "Food"
RELEASE = amazon.Release(NAME, ["{stem}_5.json.gz", "{stem}_5.json", "{stem}.json.gz", "{stem}.json"],
                         ["meta_{stem}.json.gz", "meta_{stem}.json"], parse_review, parse_meta)


def read(args, bad):
    return amazon.read_release(RELEASE, args, bad)
