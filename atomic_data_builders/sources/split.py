"""The community CDSR split format (ABXI, C2DSR-derived data), e.g. the Amazon Food-Kitchen folder.

Layout of the input folder:
- `*_preprocessed.txt`: one user a line, `uid item|ts item|ts ...`, oldest first; `item` is a
  global integer id and `ts` a unix time (often rounded to the day: the line order is the true order);
- `map_item_*.txt`: JSON `{ASIN: [item_id, domain_index]}`;
- `titles.tsv` (optional): `asin<TAB>domain<TAB>title` with a header row; rows of items that are
  not in the map are ignored. It also names the domains (`food`, `kitchen`).
Output item ids are the ASINs; user ids are the file's uids.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, List, Optional

import pandas as pd

from atomic_data_builders.enrich.items import ItemText
from atomic_data_builders.sources.base import BadLines, SourceData, clean_text, find_one, open_text, parse_lines

NAME = "split"


def add_arguments(parser) -> None:
    parser.add_argument("--sequences", help="the `uid item|ts ...` file (default: the folder's *_preprocessed.txt)")
    parser.add_argument("--item-map", help="JSON {ASIN: [id, domain]} (default: the folder's map_item_*.txt)")
    parser.add_argument("--titles", help="asin<TAB>domain<TAB>title TSV (default: the folder's titles.tsv if any)")
    parser.add_argument("--domain-names", help="comma-separated names of domain 0, 1, ... "
                                               "(default: from the titles TSV, else d0, d1, ...)")


def _parse_sequence(line: str):
    fields = line.split()
    user = fields[0]
    if len(fields) < 2:
        raise ValueError(f"user {user!r} has no interaction")
    events = []
    for token in fields[1:]:
        item, sep, ts = token.partition("|")
        if not sep:
            raise ValueError(f"expected item|timestamp, got {token!r}")
        events.append((int(item), float(ts)))
    return user, events


def _read_item_map(path: Path) -> Dict[int, tuple]:
    """{global id: (asin, domain index)}; duplicate ids are an error (the map must be a bijection)."""
    with open_text(path) as handle:
        try:
            raw = json.load(handle)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{err.lineno}: invalid JSON item map ({err.msg})") from err
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: not valid UTF-8 (byte {err.object[err.start]:#04x} at offset {err.start})") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object {{ASIN: [item_id, domain_index]}}, got {type(raw).__name__}")
    by_id: Dict[int, tuple] = {}
    for asin, value in raw.items():
        try:
            item_id, domain = (_whole_number(v) for v in value[:2])
            if len(value) != 2 or domain < 0:
                raise ValueError
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: entry {asin!r}: expected [item_id, domain_index] with a domain index "
                             f"0, 1, ..., got {value!r}") from err
        if item_id in by_id:
            raise ValueError(f"{path}: item id {item_id} is mapped twice ({by_id[item_id][0]!r}, {asin!r})")
        by_id[item_id] = (asin, domain)
    return by_id


def _whole_number(value) -> int:
    """An int given as a JSON integer (not 0.5, "1" or true): a map entry's id or domain index."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value


def _read_titles(path: Path, bad: BadLines) -> Dict[str, tuple]:
    """{asin: (domain name, title)} from the titles TSV."""

    def parse(line: str):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 3:
            raise ValueError(f"expected 3 tab-separated fields, got {len(parts)}")
        return parts

    # titles carry HTML entities (&amp;, &quot;) and the odd tag: plain text for taggers and encoders
    return {asin: (domain, clean_text(title)) for _, (asin, domain, title) in parse_lines(path, parse, bad, skip_header=True)}


def _domain_names(by_id: Dict[int, tuple], explicit: Optional[str], titles: Dict[str, tuple], path: Path) -> List[str]:
    """Names of domain indices 0..n-1: from --domain-names, else from the titles TSV, else d0, d1, ...

    An index that is not one of the domains is an error that names the first item carrying it: a
    gap in the indices, an index --domain-names does not name, or (with titles) an index whose items
    the titles file puts in another index's domain or in none.
    """
    used = sorted(set(domain for _, domain in by_id.values()))
    n = used[-1] + 1

    def first_item(index):
        return next(asin for asin, domain in by_id.values() if domain == index)

    gaps = [i for i in range(n) if i not in used]
    if gaps:
        raise ValueError(f"{path}: no item has domain index {gaps[0]} (indices used: {used}, the highest on item "
                         f"{first_item(used[-1])!r}); domain indices must be 0, 1, ... without gaps")
    if explicit:
        names = [s.strip() for s in explicit.split(",")]
        if any(not s or " " in s for s in names) or len(set(names)) != len(names):
            raise ValueError(f"--domain-names needs distinct names without spaces, got {explicit!r}")
        if n > len(names):
            raise ValueError(f"{path}: item {first_item(n - 1)!r} has domain index {n - 1}, but --domain-names "
                             f"names {len(names)} domain(s) {names}: fix the entry or name every domain")
    elif titles:
        votes = defaultdict(Counter)  # domain index -> Counter of names seen in the titles file
        for asin, index in by_id.values():
            if asin in titles:
                votes[index][titles[asin][0]] += 1
        names = []
        for index in range(n):
            if not votes[index]:
                raise ValueError(f"{path}: no item of domain index {index} (e.g. {first_item(index)!r}) has a row in "
                                 f"the titles file: fix the index, or give --domain-names")
            name = votes[index].most_common(1)[0][0]
            if name in names:
                raise ValueError(f"{path}: items of domain index {index} (e.g. {first_item(index)!r}) are in domain "
                                 f"{name!r} by the titles file, which is domain index {names.index(name)}: fix the index")
            names.append(name)
    else:
        names = [f"d{i}" for i in range(n)]
    return names[:n]


def read(args, bad: BadLines) -> SourceData:
    folder = Path(args.input)
    seq_path = Path(args.sequences) if args.sequences else find_one(folder, "*_preprocessed.txt", "sequence file")
    map_path = Path(args.item_map) if args.item_map else find_one(folder, "map_item_*.txt", "item map")
    titles_path = Path(args.titles) if args.titles else find_one(folder, "titles.tsv", "titles", required=False)

    by_id = _read_item_map(map_path)
    titles = _read_titles(titles_path, bad) if titles_path else {}
    domains = _domain_names(by_id, args.domain_names, titles, map_path)

    users: List[str] = []
    items: List[str] = []
    times: List[float] = []
    seen_users = set()
    for lineno, (user, events) in parse_lines(seq_path, _parse_sequence, bad):
        unknown = [i for i, _ in events if i not in by_id]
        if unknown:
            bad.handle(seq_path, lineno, f"item id {unknown[0]} is not in {map_path.name}")
            continue
        if user in seen_users:
            bad.handle(seq_path, lineno, f"user {user!r} appears on two lines")
            continue
        seen_users.add(user)
        for item, ts in events:
            users.append(user)
            items.append(by_id[item][0])
            times.append(ts)
    asin_domain = {asin: domains[d] for asin, d in by_id.values()}
    inter = pd.DataFrame({"user_id": users, "item_id": items, "timestamp": times})
    inter["order"] = range(len(inter))  # line order is the true order, ties included
    inter["domain"] = inter["item_id"].map(asin_domain)

    item_text = {}
    for asin in pd.unique(inter["item_id"]):
        title = titles.get(asin, ("", ""))[1]
        item_text[asin] = ItemText(item_id=asin, domain=asin_domain[asin], title=title)
    info = {"files": {"sequences": seq_path.name, "item_map": map_path.name,
                      "titles": titles_path.name if titles_path else None},
            "items_with_title": {d: sum(1 for t in item_text.values() if t.domain == d and t.title) for d in domains},
            "images": "none (the split format carries no image)"}
    return SourceData(inter=inter, items=item_text, domains=domains, info=info)


DEFAULT_FILTERS: Dict[str, object] = {"dedupe": False}  # already filtered: reproduce it as is
