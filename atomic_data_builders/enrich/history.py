"""The training part of each user's history: the one place that decides what a user profile may read.

The evaluation protocol (docs/protocol.md) is leave-one-out on each user's merged, time-ordered
timeline: the last interaction is the test target, the one before it the validation target. A
profile is built from the interactions before both, and from nothing else, so no validation or
test item can reach an LLM prompt, a profile text or a profile embedding.

The order is RecBole's: it reads timestamps as float32 and sorts them stably, so rows whose
float32 times tie keep their file order (the builder writes each user's rows in true order).
Every stage that needs a user's history calls `training_histories`; none derives it again.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import pandas as pd

HELD_OUT = 2  # the validation target, then the test target: the last two of the merged timeline


def training_histories(inter: pd.DataFrame) -> Dict[str, List[str]]:
    """{user_id: [item_id, ...]}, oldest first: every user's merged timeline without its last HELD_OUT.

    `inter` holds the dataset's interactions in file order (columns user_id, item_id and, where the
    dataset has one, timestamp). Users come in order of first appearance; a user with HELD_OUT
    interactions or fewer has an empty training part (no profile: their only items are targets).
    """
    return {user: seq[:-HELD_OUT] if len(seq) > HELD_OUT else [] for user, seq in timelines(inter).items()}


def timelines(inter: pd.DataFrame) -> Dict[str, List[str]]:
    """{user_id: [item_id, ...]}: every user's whole merged timeline, oldest first, in RecBole's order."""
    for column in ("user_id", "item_id"):
        if column not in inter.columns:
            raise ValueError(f"the interactions need a {column!r} column to split histories")
    rows = np.arange(len(inter))
    if "timestamp" in inter.columns:
        times = pd.to_numeric(inter["timestamp"], errors="coerce").to_numpy(dtype=np.float64)
        if np.isnan(times).any():
            bad = int(np.flatnonzero(np.isnan(times))[0])
            raise ValueError(f"interaction row {bad + 1} (user {inter['user_id'].iloc[bad]!r}) has no timestamp: "
                             "fix the .inter file, the split needs each user's order")
        order = np.lexsort((rows, times.astype(np.float32)))  # by time as RecBole reads it, ties in file order
    else:
        order = rows
    users = inter["user_id"].astype(str).to_numpy()[order]
    items = inter["item_id"].astype(str).to_numpy()[order]
    timeline: Dict[str, List[str]] = {u: [] for u in pd.unique(inter["user_id"].astype(str))}
    for user, item in zip(users, items):
        timeline[user].append(item)
    return timeline
