"""Datasets built in: made on first use from data that ships with an installed package."""

import csv
from pathlib import Path

import recbole

from atomic_data_builders.atomic import atomic_open

ML100K_CD = "ml-100k-cd"
KEEP_LAST = 50
ML100K_CD_ITEM_HEADER = ["item_id:token", "domain:token", "title:token_seq", "tags:token_seq", "tag_weights:float_seq"]


def _recbole_ml100k():
    return Path(recbole.__file__).parent / "dataset_example" / "ml-100k"


def _read_atomic(path):
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [column.split(":")[0] for column in next(reader)]
        return [dict(zip(header, row)) for row in reader]


def _write_atomic(path, header, rows):
    """A tab-separated atomic file, written whole or not at all."""
    with atomic_open(path) as handle:
        handle.write("\t".join(header) + "\n")
        for row in rows:
            handle.write("\t".join(str(value) for value in row) + "\n")


def _genre_tags(genres):
    """ml-100k genres in the tag format of docs/atomic_files.md: ``Sci-Fi`` -> ``sci_fi``, ``Children's`` -> ``childrens``."""
    return [genre.lower().replace("'", "").replace("-", "_") for genre in genres.split() if genre != "unknown"]


def _item_row(row, domain):
    tags = _genre_tags(row["class"])
    weights = " ".join(f"{1 / len(tags):.4f}" for _ in tags)
    return row["item_id"], domain, row["movie_title"], " ".join(tags), weights


def build_ml100k_cd(dataset_dir):
    """Two-domain ml-100k: a movie is in domain ``drama`` if Drama is among its genres, else ``other``.

    That rule gives 725 drama and 957 other movies. Each movie's genres are its ``tags`` (uniform
    ``tag_weights``), so tag-aware models have item descriptors to use; there are no embeddings. Each user keeps the last ``KEEP_LAST`` ratings
    (as CDSR benchmarks cap histories: Food-Kitchen keeps 10 to 50 per user), which keeps the demo
    fast on a CPU. Timestamps are ml-100k's, made strictly increasing within each user: ratings in
    the same second are ordered by item id and moved forward by whole seconds.
    """
    source = _recbole_ml100k()
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)

    items = _read_atomic(source / "ml-100k.item")
    domain_of = {row["item_id"]: "drama" if "Drama" in row["class"].split() else "other" for row in items}
    _write_atomic(
        dataset_dir / f"{ML100K_CD}.item", ML100K_CD_ITEM_HEADER, (_item_row(row, domain_of[row["item_id"]]) for row in items)
    )

    ratings = _read_atomic(source / "ml-100k.inter")
    ratings.sort(key=lambda row: (int(row["user_id"]), int(row["timestamp"]), int(row["item_id"])))
    by_user = {}
    for row in ratings:
        by_user.setdefault(row["user_id"], []).append(row)
    rows = []
    for user_rows in by_user.values():
        last_time = None
        for row in user_rows[-KEEP_LAST:]:
            time = int(row["timestamp"])
            if last_time is not None and time <= last_time:
                time = last_time + 1
            rows.append((row["user_id"], row["item_id"], row["rating"], time))
            last_time = time
    # The .inter file is written last: its presence marks a complete dataset.
    _write_atomic(
        dataset_dir / f"{ML100K_CD}.inter",
        ["user_id:token", "item_id:token", "rating:float", "timestamp:float"],
        rows,
    )


# name: (builder, the header of the .item file it writes)
BUILTIN = {ML100K_CD: (build_ml100k_cd, ML100K_CD_ITEM_HEADER)}


def builtin_item_columns(name):
    """The .item columns a built-in dataset has once built (so a config can be read before the data
    step builds it), or None for any other dataset."""
    return [column.split(":")[0] for column in BUILTIN[name][1]] if name in BUILTIN else None


def ensure_builtin_dataset(name, dataset_dir):
    """Build a built-in dataset into ``dataset_dir`` unless its files are already there."""
    if name in BUILTIN and not (Path(dataset_dir) / f"{name}.inter").is_file():
        BUILTIN[name][0](dataset_dir)
