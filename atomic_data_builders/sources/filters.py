"""The interaction filters of cross-domain sequential recommendation papers, with a count per step.

Order (as in C2DSR / ABXI-style preprocessing): time window, duplicate (user, item) pairs, then
repeated until nothing changes: k-core within each domain, minimum interactions per domain per
user, users active in every domain; finally each user's last N interactions (merged timeline).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional

import pandas as pd


@dataclass
class FilterConfig:
    start: Optional[float] = None  # keep interactions with timestamp >= start (unix seconds)
    end: Optional[float] = None  # ... and < end
    dedupe: bool = True  # keep only the first interaction of a (user, item) pair
    k_core: int = 0  # every user and item has >= k interactions within each domain it appears in
    min_per_domain: int = 0  # a user keeps a domain only with >= this many interactions in it
    all_domains: bool = False  # keep only users active in every domain
    last_n: Optional[int] = None  # keep each user's last N interactions (merged timeline)
    max_rounds: int = 50

    def as_dict(self) -> dict:
        return asdict(self)


def _counts(df: pd.DataFrame) -> dict:
    return {"interactions": int(len(df)), "users": int(df["user_id"].nunique()), "items": int(df["item_id"].nunique())}


def apply_filters(inter: pd.DataFrame, domains: List[str], config: FilterConfig) -> tuple[pd.DataFrame, list]:
    """Filtered interactions and a log [{step, interactions, users, items}] for the build report."""
    steps = [{"step": "read", **_counts(inter)}]
    df = inter
    if config.start is not None:
        df = df[df["timestamp"] >= config.start]
    if config.end is not None:
        df = df[df["timestamp"] < config.end]
    if config.start is not None or config.end is not None:
        steps.append({"step": f"time window [{config.start}, {config.end})", **_counts(df)})
    if config.dedupe:
        df = df.sort_values(["timestamp", "order"], kind="stable").drop_duplicates(["user_id", "item_id"])
        df = df.sort_values("order", kind="stable")
        steps.append({"step": "dedupe (user, item)", **_counts(df)})
    for round_ in range(1, config.max_rounds + 1):
        before = len(df)
        if config.k_core > 0:
            df = _k_core(df, config.k_core)
        if config.min_per_domain > 0:
            per = df.groupby(["user_id", "domain"])["item_id"].transform("size")
            df = df[per >= config.min_per_domain]
        if config.all_domains:
            n_dom = df.groupby("user_id")["domain"].transform("nunique")
            df = df[n_dom == len(domains)]
        if config.k_core > 0 or config.min_per_domain > 0 or config.all_domains:
            steps.append({"step": f"k-core={config.k_core}, min/domain={config.min_per_domain}, "
                                  f"all domains={config.all_domains} (round {round_})", **_counts(df)})
        if len(df) == before:
            break
    if config.last_n:
        df = df.sort_values(["timestamp", "order"], kind="stable")
        df = df.groupby("user_id", sort=False).tail(config.last_n).sort_values("order", kind="stable")
        steps.append({"step": f"last {config.last_n} per user", **_counts(df)})
    if df.empty:
        raise ValueError(f"no interaction left after filtering; steps: {steps}")
    return df.reset_index(drop=True), steps


def _k_core(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Users and items with >= k interactions in each domain, iterated to a fixed point."""
    while True:
        user_n = df.groupby(["user_id", "domain"])["item_id"].transform("size")
        item_n = df.groupby("item_id")["user_id"].transform("size")
        keep = (item_n >= k) & (user_n >= k)
        if keep.all():
            return df
        df = df[keep]
