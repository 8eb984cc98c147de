"""Bad input never becomes silently wrong data: each case is converted as the report says, or refused
with a message that names the file (and line or entry) and says what to do."""
import gzip
import json

import pytest

from atomic_data_builders import atomic
from support.raw_sources import (
    read_inter,
    read_item,
    run_cli,
    write_amazon2014,
    write_amazon2018,
    write_amazon2023,
    write_split,
)

PLAIN = ["--plain", "--no-progress"]
UNFILTERED = ["--k-core", 1, "--no-all-domains", *PLAIN]  # every review of the tiny Amazon fixtures


def _build(raw, out, *extra):
    return run_cli("split", "--input", raw, "--output-dir", out, "--dataset", "toy", *PLAIN, *extra)


def test_a_byte_order_mark_is_not_part_of_the_first_user(tmp_path):
    raw = write_split(tmp_path / "raw")
    sequences = raw / "toy_5_preprocessed.txt"
    sequences.write_bytes(b"\xef\xbb\xbf" + sequences.read_bytes())
    (raw / "map_item_5.txt").write_bytes(b"\xef\xbb\xbf" + (raw / "map_item_5.txt").read_bytes())
    assert _build(raw, tmp_path / "out") == 0
    assert sorted(set(read_inter(tmp_path / "out/toy/toy.inter")["user_id:token"])) == ["0", "1", "2"]


@pytest.mark.parametrize("index", [2, -1, 0.5, 7, "1", True])
def test_a_domain_index_outside_the_domains_is_refused(tmp_path, capsys, index):
    raw = write_split(tmp_path / "raw")
    mapping = json.loads((raw / "map_item_5.txt").read_text())
    mapping["K2"] = [5, index]
    (raw / "map_item_5.txt").write_text(json.dumps(mapping))
    assert _build(raw, tmp_path / "out") == 2
    error = capsys.readouterr().err
    assert "map_item_5.txt" in error and "K2" in error
    assert not (tmp_path / "out/toy/toy.inter").exists()


def test_a_domain_index_gap_is_refused(tmp_path, capsys):
    raw = write_split(tmp_path / "raw", titles=False)
    mapping = {asin: [item_id, 2 * domain] for asin, (item_id, domain) in
               json.loads((raw / "map_item_5.txt").read_text()).items()}  # domains 0 and 2
    (raw / "map_item_5.txt").write_text(json.dumps(mapping))
    assert _build(raw, tmp_path / "out") == 2
    assert "no item has domain index 1" in capsys.readouterr().err


def test_invalid_utf8_is_a_bad_line_that_can_be_skipped(tmp_path, capsys):
    raw = write_split(tmp_path / "raw")
    with open(raw / "titles.tsv", "ab") as handle:
        handle.write(b"F9\tfood\tbad \xff byte\n")
    assert _build(raw, tmp_path / "out") == 2
    assert "titles.tsv:8: not valid UTF-8 (byte 0xff at column 13)" in capsys.readouterr().err
    assert _build(raw, tmp_path / "out", "--skip-bad-lines") == 0
    report = json.loads((tmp_path / "out/toy/toy.report.json").read_text())
    assert report["bad_lines"]["skipped"] == 1 and "not valid UTF-8" in report["bad_lines"]["first"][str(raw / "titles.tsv")]


def test_a_truncated_gzip_file_is_named(tmp_path, capsys):
    raw = write_amazon2018(tmp_path / "raw")
    meta = raw / "meta_Kitchen.json"
    data = gzip.compress(meta.read_bytes() * 50)
    (raw / "meta_Kitchen.json.gz").write_bytes(data[: len(data) // 2])
    meta.unlink()
    assert run_cli("amazon2018", "--input", raw, "--output-dir", tmp_path / "out", "--dataset", "d", *PLAIN) == 2
    error = capsys.readouterr().err
    assert "meta_Kitchen.json.gz: the compressed file is truncated or corrupt" in error and "again" in error
    assert len(error.strip().splitlines()) == 1


def test_items_keep_their_domains(tmp_path):
    raw = write_split(tmp_path / "raw")
    assert _build(raw, tmp_path / "out") == 0
    item = read_item(tmp_path / "out/toy/toy.item")
    assert dict(zip(item["item_id:token"], item["domain:token"])) == {
        "F1": "food", "F2": "food", "F3": "food", "K1": "kitchen", "K2": "kitchen"}


def _times(path):
    return read_inter(path)["timestamp:float"].astype(float)


@pytest.mark.parametrize("source,writer,scale", [("amazon2018", write_amazon2018, 1000),  # ms where s documented
                                                 ("amazon2023", write_amazon2023, 0.001)])  # s where ms documented
def test_timestamps_in_the_other_unit_are_converted_and_reported(tmp_path, source, writer, scale):
    raw = writer(tmp_path / "raw")
    assert run_cli(source, "--input", raw, "--output-dir", tmp_path / "ok", "--dataset", "d", *UNFILTERED) == 0
    for path in raw.iterdir():
        if not path.name.startswith("meta_"):
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt") as handle:
                records = [json.loads(line) for line in handle]
            for record in records:
                key = "unixReviewTime" if "unixReviewTime" in record else "timestamp"
                record[key] = int(record[key] * scale)
            with opener(path, "wt") as handle:
                handle.writelines(json.dumps(record) + "\n" for record in records)
    assert run_cli(source, "--input", raw, "--output-dir", tmp_path / "out", "--dataset", "d", *UNFILTERED) == 0
    expected = _times(tmp_path / "ok/d/d.inter")
    assert (_times(tmp_path / "out/d/d.inter") - expected).abs().max() < 2  # same dates (ties are stepped by 1 s)
    report = (tmp_path / "out/d/d.report.md").read_text()
    assert ("divided by 1000" if scale > 1 else "multiplied by 1000") in report


def test_a_time_that_is_no_date_names_its_line(tmp_path, capsys):
    raw = write_amazon2018(tmp_path / "raw")
    with open(raw / "Kitchen.json", "a") as handle:
        handle.write(json.dumps({"reviewerID": "u9", "asin": "K1", "overall": 5.0, "unixReviewTime": 12}) + "\n")
    assert run_cli("amazon2018", "--input", raw, "--output-dir", tmp_path / "out", "--dataset", "d", *UNFILTERED) == 2
    error = capsys.readouterr().err
    assert "Kitchen.json:" in error and "review time 12" in error and "between 1990 and 2100" in error


def test_amazon2014_reads_gzipped_ratings(tmp_path):
    raw = write_amazon2014(tmp_path / "raw")
    for path in raw.glob("ratings_*.csv"):
        (raw / (path.name + ".gz")).write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    assert run_cli("amazon2014", "--input", raw, "--output-dir", tmp_path / "out", "--dataset", "d", *UNFILTERED) == 0
    assert set(read_item(tmp_path / "out/d/d.item")["domain:token"]) == {"grocery", "kitchen"}


@pytest.mark.parametrize("flag", ["--output-dir", "--cache-dir"])
def test_a_folder_that_cannot_be_written_is_one_line(tmp_path, capsys, flag):
    raw = write_split(tmp_path / "raw")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "out" if flag == "--output-dir" else tmp_path / "out"
    extra = [] if flag == "--output-dir" else ["--cache-dir", blocker / "cache"]
    assert run_cli("split", "--input", raw, "--output-dir", out, "--dataset", "toy", "--no-progress", *extra) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: cannot use ") and str(blocker) in error and "Traceback" not in error
    assert len(error.splitlines()) == 1
    assert run_cli("split", "--input", raw, "--output-dir", out, "--dataset", "toy", "--no-progress", "--verbose",
                   *extra) == 2
    assert "Traceback" in capsys.readouterr().err


def test_files_of_two_builds_are_detected_when_the_dataset_loads(tmp_path, monkeypatch):
    from recbole_tema.config import Config
    from recbole_tema.errors import ConfigurationError
    from recbole_tema.quick_start import prepare_data

    raw = write_split(tmp_path / "raw")
    assert _build(raw, tmp_path / "out") == 0
    folder = tmp_path / "out/toy"
    manifest = json.loads((folder / "toy.manifest.json").read_text())
    assert set(manifest["files"]) == {"toy.inter", "toy.item"}
    config = {"data_path": str(tmp_path / "out"), "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO",
                                                                "mode": "full"}, "MAX_ITEM_LIST_LENGTH": 5}
    prepare_data(Config(model="SASRec", dataset="toy", config_dict=config))  # consistent: loads

    # A second build (user 1 only: items F3 and K2 gone) killed between its two renames: new .inter and
    # manifest, old .item.
    sequences = raw / "toy_5_preprocessed.txt"
    sequences.write_text(sequences.read_text().splitlines()[1] + "\n")
    replace = atomic.os.replace

    def killed_at_the_item(source, target):
        if str(target).endswith("toy.item") and str(source).endswith(".staged"):
            raise KeyboardInterrupt  # the process dies here
        replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", killed_at_the_item)
    with pytest.raises(KeyboardInterrupt):
        _build(raw, tmp_path / "out")
    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(ConfigurationError, match=r"toy.item is not the file its build recorded in toy.manifest.json"):
        prepare_data(Config(model="SASRec", dataset="toy", config_dict=config))
    assert _build(raw, tmp_path / "out") == 0  # the same build again mends it
    prepare_data(Config(model="SASRec", dataset="toy", config_dict=config))
    assert not list(folder.glob(".*.staged"))
