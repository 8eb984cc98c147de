"""Tiny raw-data fixtures in each source format, written by the tests themselves."""
import gzip
import json
from pathlib import Path

import pandas as pd

from atomic_data_builders.__main__ import main

DAY = 86400
T0 = 1_400_000_000 - 1_400_000_000 % DAY  # a day boundary, so same-day reviews tie


def run_cli(*argv) -> int:
    return main([str(a) for a in argv])


def read_inter(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str)


def read_item(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


# Two domains; users u1..u3 are active in both, u4 only in food. Same-day ties on purpose.
FOOD = [("u1", "F1", 5, 0), ("u1", "F2", 4, 0), ("u2", "F1", 3, 1), ("u2", "F3", 5, 2), ("u3", "F2", 4, 3),
        ("u3", "F3", 2, 3), ("u4", "F1", 5, 4)]
KITCHEN = [("u1", "K1", 5, 0), ("u2", "K1", 4, 1), ("u2", "K2", 5, 2), ("u3", "K2", 3, 5), ("u1", "K2", 1, 6)]
TITLES = {"F1": "Organic Green Tea Bags, 20 count", "F2": "Dark Roast Coffee Beans 12 oz",
          "F3": "Green Tea Matcha Powder", "K1": "Stainless Steel Tea Kettle", "K2": "Ceramic Coffee Mug Set"}


def write_amazon2014(folder: Path, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, rows in (("Grocery", FOOD), ("Kitchen", KITCHEN)):
        with open(folder / f"ratings_{stem}.csv", "w") as f:
            f.writelines(f"{u},{i},{float(r)},{T0 + d * DAY}\n" for u, i, r, d in rows)
        lines = [repr({"asin": i, "title": TITLES[i], "description": "A <b>fine</b> product",
                       "imUrl": f"http://img.invalid/{i}.jpg", "categories": [[stem, "Sub"]]}) + "\n"
                 for i in sorted({i for _, i, _, _ in rows})]
        opener = gzip.open(folder / f"meta_{stem}.json.gz", "wt") if gz else open(folder / f"meta_{stem}.json", "w")
        with opener as f:
            f.writelines(lines)
    return folder


def write_amazon2018(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, rows in (("Grocery", FOOD), ("Kitchen", KITCHEN)):
        with open(folder / f"{stem}.json", "w") as f:
            f.writelines(json.dumps({"reviewerID": u, "asin": i, "overall": float(r), "unixReviewTime": T0 + d * DAY,
                                     "reviewText": "ok"}) + "\n" for u, i, r, d in rows)
        with open(folder / f"meta_{stem}.json", "w") as f:
            f.writelines(json.dumps({"asin": i, "title": TITLES[i], "description": ["Line one", "line two"],
                                     "imageURLHighRes": [f"http://img.invalid/{i}.jpg"], "category": [stem, "Sub"]}) + "\n"
                         for i in sorted({i for _, i, _, _ in rows}))
    return folder


def write_amazon2023(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, rows in (("Grocery", FOOD), ("Kitchen", KITCHEN)):
        with gzip.open(folder / f"{stem}.jsonl.gz", "wt") as f:
            f.writelines(json.dumps({"user_id": u, "parent_asin": i, "rating": float(r),
                                     "timestamp": (T0 + d * DAY) * 1000}) + "\n" for u, i, r, d in rows)
        with open(folder / f"meta_{stem}.jsonl", "w") as f:
            f.writelines(json.dumps({"parent_asin": i, "title": TITLES[i], "description": [],
                                     "images": [{"thumb": "t", "large": f"http://img.invalid/{i}.jpg"}],
                                     "main_category": stem, "categories": ["Sub"]}) + "\n"
                         for i in sorted({i for _, i, _, _ in rows}))
    return folder


def write_split(folder: Path, titles: bool = True) -> Path:
    """The ABXI layout: global ids 1..3 food, 4..5 kitchen; user 0 has a same-day tie burst."""
    folder.mkdir(parents=True, exist_ok=True)
    asins = {"F1": [1, 0], "F2": [2, 0], "F3": [3, 0], "K1": [4, 1], "K2": [5, 1]}
    (folder / "map_item_5.txt").write_text(json.dumps(asins))
    seqs = ["0 3|100 1|100 5|100 2|100 4|200", "1 1|50 4|60 2|70", "2 5|10 3|20 4|20 1|30"]
    (folder / "toy_5_preprocessed.txt").write_text("\n".join(seqs) + "\n")
    if titles:
        rows = ["asin\tdomain\ttitle"] + [f"{a}\t{'food' if a[0] == 'F' else 'kitchen'}\t{TITLES[a]}" for a in asins]
        rows.append("ZZZ\tfood\tan item that is not in the map")
        (folder / "titles.tsv").write_text("\n".join(rows) + "\n")
    return folder


FOOD_WORDS = ["Organic Green Tea", "Black Tea Bags", "Dark Roast Coffee", "Herbal Tea Blend", "Ground Coffee",
              "Dark Chocolate Bar", "Milk Chocolate Bar", "Green Tea Matcha"]
KITCHEN_WORDS = ["Stainless Steel Kettle", "Ceramic Coffee Mug", "Cast Iron Skillet", "Stainless Steel Pan",
                 "Glass Tea Pot", "Ceramic Tea Cup", "Nonstick Frying Pan", "Cast Iron Dutch Oven"]


def write_split_rich(folder: Path, n_users: int = 30, seed: int = 0) -> Path:
    """A split-format folder with 24 titled items per domain sharing phrases, so tags can be mined."""
    import random

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    titles, mapping = {}, {}
    for domain, (words, prefix) in enumerate(((FOOD_WORDS, "F"), (KITCHEN_WORDS, "K"))):
        for k in range(24):
            asin = f"{prefix}{k:03d}"
            mapping[asin] = [len(mapping) + 1, domain]
            brand = ["Acme", "Bolt", "Crest"][k % 3]
            titles[asin] = f"{brand} {words[k % len(words)]}, {k + 1} oz &amp; more"
    ids = {v[0]: a for a, v in mapping.items()}
    (folder / "map_item_24.txt").write_text(json.dumps(mapping))
    lines = []
    for u in range(n_users):
        seq = rng.sample(range(1, 25), 4) + rng.sample(range(25, 49), 4)
        rng.shuffle(seq)
        lines.append(f"{u} " + " ".join(f"{i}|{T0 + DAY * (j // 3)}" for j, i in enumerate(seq)))
    (folder / "rich_24_preprocessed.txt").write_text("\n".join(lines) + "\n")
    rows = ["asin\tdomain\ttitle"] + [f"{a}\t{'food' if a[0] == 'F' else 'kitchen'}\t{t}" for a, t in titles.items()]
    (folder / "titles.tsv").write_text("\n".join(rows) + "\n")
    assert ids  # every id maps back to an ASIN
    return folder
