"""The split source on the shared Amazon Food-Kitchen data reproduces its README figures."""
import json
from pathlib import Path

import pandas as pd
import pytest

from support.raw_sources import run_cli

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "amazon-food-kitchen"


def test_food_kitchen_split_reproduces_readme_figures(tmp_path):
    if not DATA.exists():
        pytest.skip(f"shared data folder {DATA} is absent")
    assert run_cli("split", "--input", DATA, "--output-dir", tmp_path, "--dataset", "afk", "--plain",
                   "--no-progress") == 0
    stats = json.loads((tmp_path / "afk/afk.report.json").read_text())["dataset"]
    assert (stats["users"], stats["items"], stats["interactions"]) == (7144, 28095, 173548)
    assert (stats["per_user_min"], stats["per_user_max"], stats["per_user_mean"]) == (10, 50, 24.3)
    food, kitchen = stats["per_domain"]["food"], stats["per_domain"]["kitchen"]
    assert (food["items"], kitchen["items"]) == (11837, 16258)
    assert (food["users"], kitchen["users"]) == (7144, 7144)  # every user is in both domains
    assert (food["test_targets"], kitchen["test_targets"]) == (2419, 4725)

    inter = pd.read_csv(tmp_path / "afk/afk.inter", sep="\t", dtype={"user_id:token": str, "item_id:token": str})
    item = pd.read_csv(tmp_path / "afk/afk.item", sep="\t", dtype=str)
    assert len(inter) == 173548 and len(item) == 28095
    # the file's order is the true order: user 0's line, item ids mapped to ASINs, ties kept in line order
    line = (DATA / "afk_50_preprocessed.txt").open().readline().split()
    by_id = {v[0]: asin for asin, v in json.loads((DATA / "map_item_50.txt").read_text()).items()}
    user0 = inter[inter["user_id:token"] == "0"]
    assert user0["item_id:token"].tolist() == [by_id[int(t.split("|")[0])] for t in line[1:]]
    ts = inter.groupby("user_id:token", sort=False)["timestamp:float"].diff().dropna()
    assert (ts > 0).all()
