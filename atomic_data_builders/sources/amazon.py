"""Shared reader of the Amazon review dumps: one review file and one metadata file per domain.

Each release module (amazon2014/2018/2023) says how its files are named and how one review line
and one metadata line are parsed; this module finds the files of the requested domains, reads
them with the bad-line policy, and keeps the metadata of reviewed items only.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from atomic_data_builders.enrich.items import ItemText
from atomic_data_builders.sources.base import BadLines, SourceData, parse_lines

# (user, item, unix seconds, rating or None)
Review = Tuple[str, str, float, Optional[float]]

# CDSR papers' usual preprocessing; each can be changed on the command line
DEFAULT_FILTERS = {"k_core": 5, "min_per_domain": 1, "all_domains": True}


@dataclass(frozen=True)
class Release:
    name: str
    review_patterns: Sequence[str]  # "{stem}" is the domain's file stem, e.g. "Grocery_and_Gourmet_Food"
    meta_patterns: Sequence[str]
    parse_review: Callable[[str], Review]
    parse_meta: Callable[[str], dict]  # -> {item_id, title, description, categories, image}
    time_unit: str = "s"  # the unit of the dump's review times: "s" or "ms" (parse_review returns seconds)


def add_arguments(parser) -> None:
    parser.add_argument("--domains", nargs="+", metavar="STEM[=NAME]",
                        help="domains to read, by file stem (e.g. Grocery_and_Gourmet_Food=food); "
                             "default: every review file of the folder")


def _stems(folder: Path, release: Release) -> List[str]:
    """File stems of every review file in `folder` (metadata files excluded).

    A file takes the stem of the first pattern it matches, so `Food_5.json` is domain `Food`
    under the pattern `{stem}_5.json`, not a second domain `Food_5`.
    """
    stems = set()
    for path in folder.iterdir():
        if path.name.startswith("meta_") or not path.is_file():
            continue
        for pattern in release.review_patterns:
            prefix, _, suffix = pattern.partition("{stem}")
            if path.name.startswith(prefix) and path.name.endswith(suffix) and len(path.name) > len(prefix + suffix):
                stems.add(path.name[len(prefix):len(path.name) - len(suffix)])
                break
    return sorted(stems)


def _find(folder: Path, patterns: Sequence[str], stem: str, what: str) -> Path:
    for pattern in patterns:
        path = folder / pattern.format(stem=stem)
        if path.exists():
            return path
    raise FileNotFoundError(f"no {what} file for domain {stem!r} in {folder} "
                            f"(looked for {[p.format(stem=stem) for p in patterns]})")


def _parse_domains(folder: Path, release: Release, spec: Optional[Sequence[str]]) -> List[Tuple[str, str]]:
    """[(file stem, domain name)]; at least two domains."""
    if spec:
        pairs = []
        for entry in spec:
            stem, _, name = entry.partition("=")
            pairs.append((stem, name or stem.lower()))
    else:
        pairs = [(s, s.lower()) for s in _stems(folder, release)]
    names = [n for _, n in pairs]
    if len(pairs) < 2:
        raise ValueError(f"{release.name} needs two or more domains, found {pairs} in {folder}")
    if len(set(names)) != len(names) or any(" " in n or not n for n in names):
        raise ValueError(f"domain names must be distinct and without spaces, got {names}")
    return pairs


# Unix seconds of plausible review times (1990-01-01 .. 2100-01-01); milliseconds are 1000x.
PLAUSIBLE_SECONDS = (631_152_000, 4_102_444_800)


def seconds_by_magnitude(times: List[float], lines: List[int], path: Path, unit: str) -> Tuple[List[float], str, bool]:
    """The file's review times in seconds, what the report says of them, and whether they were converted.

    parse_review converts from the release's documented ``unit``; a file written in the other unit
    (milliseconds where seconds are documented, or the reverse) is recognised by the magnitude of its
    median time and converted, which the report states. A time that is then not a date between 1990
    and 2100 is an error naming its line.
    """
    if not times:
        return times, "no reviews", False
    values = np.asarray(times, dtype=np.float64)  # [R] seconds, if the file is in the documented unit
    median = float(np.median(values))
    low, high = PLAUSIBLE_SECONDS
    scale, note = 1, f"unix {'seconds' if unit == 's' else 'milliseconds'}, as documented"
    if unit == "s" and low * 1000 <= median < high * 1000:
        scale, note = 1e-3, "milliseconds where seconds are documented: divided by 1000"
    elif unit == "ms" and low / 1000 <= median < high / 1000:
        scale, note = 1e3, "seconds where milliseconds are documented: multiplied by 1000"
    values = values * scale
    outside = np.flatnonzero((values < low) | (values >= high))
    if len(outside):
        raise ValueError(f"{path}:{lines[outside[0]]}: review time {times[outside[0]]!r} is not a date between 1990 "
                         f"and 2100 (the file's times are {note}); fix or drop the line")
    return values.tolist(), note, scale != 1


def read_release(release: Release, args, bad: BadLines) -> SourceData:
    folder = Path(args.input)
    pairs = _parse_domains(folder, release, getattr(args, "domains", None))
    users, items, times, ratings, domains_col = [], [], [], [], []
    item_domain: Dict[str, str] = {}
    conflicts = Counter()
    files, notes = {}, []
    for stem, name in pairs:
        review_path = _find(folder, release.review_patterns, stem, "review")
        files[name] = {"reviews": review_path.name}
        file_times, file_lines = [], []
        for lineno, (user, item, ts, rating) in parse_lines(review_path, release.parse_review, bad):
            owner = item_domain.setdefault(item, name)
            if owner != name:  # an item listed in two categories stays in the first one
                conflicts[name] += 1
                continue
            users.append(user)
            items.append(item)
            file_times.append(ts)
            file_lines.append(lineno)
            ratings.append(rating)
            domains_col.append(name)
        file_times, files[name]["timestamps"], converted = seconds_by_magnitude(file_times, file_lines, review_path,
                                                                                       release.time_unit)
        times += file_times
        if converted:
            notes.append(f"{review_path.name}: review times in {files[name]['timestamps']}")
    inter = pd.DataFrame({"user_id": users, "item_id": items, "timestamp": times, "domain": domains_col,
                          "rating": pd.array(ratings, dtype="Float64").astype("float64")})
    inter["order"] = range(len(inter))

    texts: Dict[str, ItemText] = {}
    for stem, name in pairs:
        try:
            meta_path = _find(folder, release.meta_patterns, stem, "metadata")
        except FileNotFoundError:
            files[name]["meta"] = None  # titles are optional: items keep empty text
            continue
        files[name]["meta"] = meta_path.name
        for _, meta in parse_lines(meta_path, release.parse_meta, bad):
            item = meta["item_id"]
            if item_domain.get(item) == name and item not in texts:
                texts[item] = ItemText(domain=name, **meta)
    for item, name in item_domain.items():
        texts.setdefault(item, ItemText(item_id=item, domain=name))
    info = {"files": files, "notes": notes, "cross_domain_items_dropped": dict(conflicts),
            "items_with_title": {n: sum(1 for t in texts.values() if t.domain == n and t.title) for _, n in pairs},
            "items_with_image_url": {n: sum(1 for t in texts.values() if t.domain == n and t.image) for _, n in pairs}}
    return SourceData(inter=inter, items=texts, domains=[n for _, n in pairs], info=info)


def flatten_categories(value) -> List[str]:
    """Unique category names, most general first, from a list or a list of lists."""
    out: Dict[str, None] = {}
    stack = list(value or [])
    for entry in stack:
        for name in (entry if isinstance(entry, (list, tuple)) else [entry]):
            name = str(name).strip()
            if name:
                out.setdefault(name, None)
    return list(out)
