"""End to end: CLI build with default enrichment, RecBole reads it, stages run again, atomic writes."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from atomic_data_builders.atomic import atomic_open, order_interactions
from support.raw_sources import read_inter, run_cli, write_split_rich

ITEM_COLS = ["item_id", "domain", "tags", "tag_weights", "tag_emb", "text_emb"]


def _recbole_dataset(data_path, name, item_cols):
    from recbole_tema import compat

    compat.apply()
    from recbole.config import Config
    from recbole.data import create_dataset

    config = Config(model="SASRec", dataset=name, config_dict={
        "data_path": str(data_path), "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": item_cols},
        "train_neg_sample_args": None, "loss_type": "CE", "MAX_ITEM_LIST_LENGTH": 20, "show_progress": False,
        "checkpoint_dir": str(data_path / "saved"), "state": "ERROR"})
    return create_dataset(config)


def test_enriched_split_build_loads_in_recbole_and_reenriches(tmp_path):
    raw = write_split_rich(tmp_path / "raw")
    titles = (raw / "titles.tsv").read_text().splitlines()
    untitled = {line.split("\t")[0] for line in titles[1:] if line.split("\t")[0].endswith("1")}
    (raw / "titles.tsv").write_text("\n".join(row for row in titles if row.split("\t")[0] not in untitled) + "\n")
    out = tmp_path / "out"
    assert run_cli("split", "--input", raw, "--output-dir", out, "--dataset", "rich", "--no-progress",
                   "--tag-max-df", 0.5) == 0
    report = json.loads((out / "rich/rich.report.json").read_text())
    assert report["stages_run"] == ["tags", "tag_emb", "text_emb"]
    assert any("clip_img: off" in n for n in report["notes"])
    n_items = report["dataset"]["items"]
    written = set(pd.read_csv(out / "rich/rich.item", sep="\t", dtype=str)["item_id:token"])
    untitled &= written
    assert untitled  # some items without a title made it into the dataset
    assert report["columns"]["text_emb"] == {"type": "float_seq", "non_empty": n_items - len(untitled), "dim": 384}
    assert report["columns"]["tags"]["non_empty"] > 0.8 * (n_items - len(untitled))
    for stage in ("tags", "tag_emb", "text_emb"):
        assert report["stages"][stage]["seconds"] >= 0 and report["stages"][stage]["peak_rss_mib"] > 0

    ds = _recbole_dataset(out, "rich", ITEM_COLS)
    ds.build()  # converts features to tensors and sorts interactions (stably) by user, then time
    feat = ds.get_item_feature()
    n = ds.item_num  # items + padding
    assert feat["text_emb"].shape == (n, 384) and feat["tag_emb"].shape == (n, 384)
    assert feat["tags"].shape[0] == n and feat["tag_weights"].shape[0] == n
    for asin in untitled:  # an empty cell loads as zeros
        row = ds.token2id("item_id", asin)
        assert not feat["text_emb"][row].any() and not feat["tag_emb"][row].any() and not feat["tags"][row].any()
    from atomic_data_builders.build import load_items
    from atomic_data_builders.enrich.text import CachedEncoder
    item = next(it for it in load_items(out / "rich/.cache/items.jsonl") if "Dutch Oven" in it.title)
    assert item.title.endswith("oz & more")  # &amp; unescaped by the split source
    row = ds.token2id("item_id", item.item_id)
    title = item.title
    expected = CachedEncoder(progress=False).model.encode([title])[0]
    assert np.allclose(feat["text_emb"][row].numpy(), expected, atol=1e-4)  # 4 decimals written
    assert float(feat["tag_weights"][row].sum()) == pytest.approx(1.0, abs=1e-3)
    tags = [ds.id2token("tags", int(t)) for t in feat["tags"][row] if int(t) != 0]
    assert tags and all(t.replace("_", " ") in title.lower() for t in tags)  # phrases of its own title

    # RecBole's float32 timestamps collapse the second-apart ties; its stable sort keeps file order:
    # the augmented rows of a user have targets = items 2..n of the file, each after its true prefix
    file_rows = read_inter(out / "rich/rich.inter")
    for user in ("0", "7"):
        expected_items = file_rows[file_rows["user_id:token"] == user]["item_id:token"].tolist()
        uid = ds.token2id("user_id", user)
        rows = ds.inter_feat[ds.inter_feat["user_id"] == uid]
        assert [ds.id2token("item_id", int(i)) for i in rows["item_id"]] == expected_items[1:]
        last = rows[len(rows) - 1]
        history = last["item_id_list"][: int(last["item_length"])]
        assert [ds.id2token("item_id", int(i)) for i in history] == expected_items[:-1]

    # run one stage again on the built dataset: text_emb reduced by PCA, tags untouched
    before = pd.read_csv(out / "rich/rich.item", sep="\t", dtype=str, keep_default_na=False)
    assert run_cli("enrich", "--output-dir", out, "--dataset", "rich", "--stages", "text_emb",
                   "--pca", "text_emb=8", "--no-progress") == 0
    after = pd.read_csv(out / "rich/rich.item", sep="\t", dtype=str, keep_default_na=False)
    assert after["tags:token_seq"].tolist() == before["tags:token_seq"].tolist()
    assert after["tag_emb:float_seq"].tolist() == before["tag_emb:float_seq"].tolist()
    assert {len(c.split()) for c in after["text_emb:float_seq"] if c} == {8}
    assert sum(c == "" for c in after["text_emb:float_seq"]) == len(untitled)  # PCA keeps empty cells empty
    report = json.loads((out / "rich/rich.report.json").read_text())
    assert report["stages"]["text_emb"]["encoded"] == 0  # every title came from the cache
    assert report["pca"]["text_emb"]["to"] == 8
    assert report["dataset"]["items"] == n_items and report["built"]["source"] == "split"  # the data's facts stay


def test_atomic_open_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "d.item"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write("half a fi")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["d.item"]


def test_ties_get_strictly_increasing_times_in_source_order():
    inter = pd.DataFrame({"user_id": ["b", "a", "b", "a", "b"], "item_id": list("vwxyz"),
                          "timestamp": [5.0, 1.0, 5.0, 1.0, 5.5], "order": [0, 1, 2, 3, 4]})
    out = order_interactions(inter, tie_step=1.0)
    assert out["user_id"].tolist() == ["b", "b", "b", "a", "a"]
    assert out["item_id"].tolist() == ["v", "x", "z", "w", "y"]
    assert out["timestamp"].tolist() == [5.0, 6.0, 7.0, 1.0, 2.0]


def test_interrupted_build_keeps_the_previous_dataset(tmp_path, monkeypatch):
    from support.raw_sources import write_split

    raw = write_split(tmp_path / "raw")
    out = tmp_path / "out"
    assert run_cli("split", "--input", raw, "--output-dir", out, "--dataset", "t", "--plain", "--no-progress") == 0
    before = {p.name: p.read_bytes() for p in (out / "t").iterdir() if p.is_file()}
    seq = raw / "toy_5_preprocessed.txt"
    seq.write_text(seq.read_text() + "9 1|5 4|6\n")  # the new build would have one more user

    import atomic_data_builders.enrich.text as text

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(text, "text_embeddings", stopped)
    with pytest.raises(KeyboardInterrupt):
        run_cli("split", "--input", raw, "--output-dir", out, "--dataset", "t", "--tags", "none", "--no-progress")
    after = {p.name: p.read_bytes() for p in (out / "t").iterdir() if p.is_file()}
    assert after == before  # same files, same bytes: no new .inter beside the old .item, no temp file
