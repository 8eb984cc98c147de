"""Each raw format converts to the atomic files of docs/atomic_files.md; filters, order and bad lines."""
import json

import numpy as np
import pytest

from atomic_data_builders.sources.base import BadLineError
from support.raw_sources import (
    FOOD,
    KITCHEN,
    read_inter,
    read_item,
    run_cli,
    write_amazon2014,
    write_amazon2018,
    write_amazon2023,
    write_split,
)

PLAIN = ["--plain", "--no-progress"]


def _check_order(inter):
    """Rows of a user are contiguous and their timestamps strictly increase."""
    users = inter["user_id"].tolist()
    runs = [u for k, u in enumerate(users) if k == 0 or users[k - 1] != u]
    assert len(runs) == len(set(runs)), "a user's rows are split into several runs"
    for _, rows in inter.groupby("user_id", sort=False):
        ts = rows["timestamp"].astype(float).to_numpy()
        assert np.all(np.diff(ts) > 0)


@pytest.mark.parametrize("writer,source", [(write_amazon2014, "amazon2014"), (write_amazon2018, "amazon2018"),
                                           (write_amazon2023, "amazon2023")])
def test_amazon_sources_without_filters(tmp_path, writer, source):
    raw = writer(tmp_path / "raw")
    assert run_cli(source, "--input", raw, "--output-dir", tmp_path / "out", "--dataset", "d",
                   "--domains", "Grocery=food", "Kitchen=kitchen", "--k-core", 1, "--no-all-domains", *PLAIN) == 0
    inter = read_inter(tmp_path / "out/d/d.inter")
    assert list(inter.columns) == ["user_id:token", "item_id:token", "timestamp:float", "rating:float"]
    inter.columns = ["user_id", "item_id", "timestamp", "rating"]
    assert len(inter) == len(FOOD) + len(KITCHEN)
    _check_order(inter)
    # u1 reviewed F1, F2 and K1 on the same day: the file order of the source decides
    assert inter[inter.user_id == "u1"].item_id.tolist() == ["F1", "F2", "K1", "K2"]
    item = read_item(tmp_path / "out/d/d.item")
    assert list(item.columns) == ["item_id:token", "domain:token"]
    assert dict(zip(item["item_id:token"], item["domain:token"])) == {
        "F1": "food", "F2": "food", "F3": "food", "K1": "kitchen", "K2": "kitchen"}
    report = json.loads((tmp_path / "out/d/d.report.json").read_text())
    assert report["dataset"]["per_domain"]["kitchen"]["interactions"] == len(KITCHEN)


def test_amazon_item_text_is_parsed(tmp_path):
    from atomic_data_builders.sources import amazon2014, amazon2018, amazon2023
    from atomic_data_builders.sources.base import BadLines

    class Args:
        domains = ["Grocery=food", "Kitchen=kitchen"]

    for module, writer in ((amazon2014, write_amazon2014), (amazon2018, write_amazon2018),
                           (amazon2023, write_amazon2023)):
        Args.input = str(writer(tmp_path / module.NAME))
        data = module.read(Args, BadLines())
        k1 = data.items["K1"]
        assert (k1.domain, k1.title) == ("kitchen", "Stainless Steel Tea Kettle")
        assert k1.image == "http://img.invalid/K1.jpg"
        assert "Sub" in k1.categories
        if module is amazon2014:
            assert data.items["F1"].description == "A fine product"  # HTML stripped


def test_cdsr_filters(tmp_path):
    raw = write_amazon2014(tmp_path / "raw")
    # every user active in both domains: u4 (food only) goes
    assert run_cli("amazon2014", "--input", raw, "--output-dir", tmp_path / "o1", "--dataset", "d", "--k-core", 1,
                   *PLAIN) == 0
    assert set(read_inter(tmp_path / "o1/d/d.inter")["user_id:token"]) == {"u1", "u2", "u3"}
    # 2-core per domain: F1 (3 users in food) survives... u3's single kitchen review goes, then u3 is
    # no longer in both domains, and its food items lose support: iterated to a fixed point
    assert run_cli("amazon2014", "--input", raw, "--output-dir", tmp_path / "o2", "--dataset", "d", "--k-core", 2,
                   "--no-all-domains", *PLAIN) == 0
    inter = read_inter(tmp_path / "o2/d/d.inter")
    per_user_domain = inter.groupby(["user_id:token", inter["item_id:token"].str[0]]).size()
    assert per_user_domain.min() >= 2
    assert inter.groupby("item_id:token").size().min() >= 2
    # a user keeps a domain only with >= 2 interactions in it:
    # food u1:2 u2:2 u3:2 u4:1 -> u4 goes; kitchen u1:2 u2:2 u3:1 -> u3's kitchen row goes
    assert run_cli("amazon2014", "--input", raw, "--output-dir", tmp_path / "o4", "--dataset", "d", "--k-core", 1,
                   "--min-per-domain", 2, "--no-all-domains", *PLAIN) == 0
    inter = read_inter(tmp_path / "o4/d/d.inter")
    assert len(inter) == len(FOOD) + len(KITCHEN) - 2
    assert inter.groupby(["user_id:token", inter["item_id:token"].str[0]]).size().min() == 2
    # last N per user and a time window
    assert run_cli("amazon2014", "--input", raw, "--output-dir", tmp_path / "o3", "--dataset", "d", "--k-core", 1,
                   "--no-all-domains", "--last-n", 2, "--start", "2014-05-13", "--end", "2014-05-19", *PLAIN) == 0
    inter = read_inter(tmp_path / "o3/d/d.inter")
    assert inter.groupby("user_id:token").size().max() <= 2
    # u1: F1, F2, K1 on day 0 and K2 on day 6 (= the end, excluded): the last two of the rest
    assert inter[inter["user_id:token"] == "u1"]["item_id:token"].tolist() == ["F2", "K1"]


def test_split_source_keeps_line_order_and_reads_titles(tmp_path):
    raw = write_split(tmp_path / "raw")
    assert run_cli("split", "--input", raw, "--output-dir", tmp_path / "out", "--dataset", "toy", *PLAIN) == 0
    inter = read_inter(tmp_path / "out/toy/toy.inter")
    inter.columns = ["user_id", "item_id", "timestamp"]
    _check_order(inter)
    assert inter[inter.user_id == "0"].item_id.tolist() == ["F3", "F1", "K2", "F2", "K1"]
    assert inter[inter.user_id == "0"].timestamp.astype(float).tolist() == [100, 101, 102, 103, 200]
    item = read_item(tmp_path / "out/toy/toy.item")
    assert set(item["domain:token"]) == {"food", "kitchen"}  # names from titles.tsv
    from atomic_data_builders.build import load_items
    texts = {it.item_id: it.title for it in load_items(tmp_path / "out/toy/.cache/items.jsonl")}
    assert texts["K1"] == "Stainless Steel Tea Kettle" and "ZZZ" not in texts


def test_split_without_titles_names_domains_by_index(tmp_path):
    raw = write_split(tmp_path / "raw", titles=False)
    assert run_cli("split", "--input", raw, "--output-dir", tmp_path / "out", "--dataset", "toy", "--no-progress") == 0
    item = read_item(tmp_path / "out/toy/toy.item")
    assert set(item["domain:token"]) == {"d0", "d1"}
    assert list(item.columns) == ["item_id:token", "domain:token"]  # no text: no enrichment by default


def test_malformed_line_names_file_and_line(tmp_path, capsys):
    raw = write_split(tmp_path / "raw")
    seq = raw / "toy_5_preprocessed.txt"
    seq.write_text(seq.read_text() + "3 1|40 4-50\n")
    with pytest.raises(BadLineError) as err:
        from atomic_data_builders.sources import split
        from atomic_data_builders.sources.base import BadLines

        class Args:
            input, sequences, item_map, titles, domain_names = str(raw), None, None, None, None
        split.read(Args, BadLines())
    assert err.value.lineno == 4 and err.value.path == seq
    assert run_cli("split", "--input", raw, "--output-dir", tmp_path / "out", "--dataset", "t", *PLAIN) == 2
    assert "toy_5_preprocessed.txt:4:" in capsys.readouterr().err
    assert not (tmp_path / "out/t/t.inter").exists()
    # skipping: the line is dropped and counted
    assert run_cli("split", "--input", raw, "--output-dir", tmp_path / "out", "--dataset", "t", "--skip-bad-lines",
                   *PLAIN) == 0
    report = json.loads((tmp_path / "out/t/t.report.json").read_text())
    assert report["bad_lines"]["skipped"] == 1
    assert set(read_inter(tmp_path / "out/t/t.inter")["user_id:token"]) == {"0", "1", "2"}


def test_malformed_amazon_meta_line(tmp_path, capsys):
    raw = write_amazon2018(tmp_path / "raw")
    with open(raw / "meta_Kitchen.json", "a") as f:
        f.write('{"asin": "K9", "title": \n')
    assert run_cli("amazon2018", "--input", raw, "--output-dir", tmp_path / "out", "--dataset", "d", *PLAIN) == 2
    assert "meta_Kitchen.json:3:" in capsys.readouterr().err


def test_domains_are_found_by_file_name(tmp_path):
    raw = write_amazon2018(tmp_path / "raw")
    (raw / "Grocery.json").rename(raw / "Grocery_5.json")  # the 5-core file name of the 2018 release
    assert run_cli("amazon2018", "--input", raw, "--output-dir", tmp_path / "out", "--dataset", "d", "--k-core", 1,
                   "--no-all-domains", *PLAIN) == 0
    report = json.loads((tmp_path / "out/d/d.report.json").read_text())
    assert sorted(report["dataset"]["per_domain"]) == ["grocery", "kitchen"]
    assert report["source_info"]["files"]["grocery"] == {"reviews": "Grocery_5.json", "meta": "meta_Grocery.json",
                                                         "timestamps": "unix seconds, as documented"}
