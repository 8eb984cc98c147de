"""The LLM stages llm_emb, llm_text and user_profile: local defaults with the real offline MiniLM, the
LLM paths against a canned OpenAI-compatible server (llm_fakes.FakeLLM), the leakage rule of the
profiles, resume from the cache, key hygiene, bad replies, stored PCA fits and the dataset files.
The real model (llama.cpp, SmolLM2) is tested in test_llm_stages_llama.py."""
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from llm_fakes import FakeLLM, default_chat, fake_vector, last_user

from atomic_data_builders.atomic import check_manifest
from atomic_data_builders.enrich.embed import EmbedConfig, OpenAIEmbedder, item_document
from atomic_data_builders.enrich.history import training_histories
from atomic_data_builders.enrich.items import ItemText
from atomic_data_builders.enrich.llama_server import free_port
from atomic_data_builders.enrich.llm_client import BadReply, LLMInterrupted, embedding_vectors, load_prompt_file
from atomic_data_builders.enrich.llm_text import LLMTextConfig, generate_item_texts, parse_item_text
from atomic_data_builders.enrich.profiles import ProfileConfig, llm_profiles, local_profile, parse_interests
from support.raw_sources import TITLES, read_item, run_cli, write_split, write_split_rich

SECRET = "sk-llm-stages-test-key-0123456789"
KEY_ENV = "TEMA_LLM_STAGES_TEST_KEY"


def read_user(path: Path) -> dict:
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["user_id:token", "profile_emb:float_seq"]
    return dict(zip(frame["user_id:token"], frame["profile_emb:float_seq"]))


def read_profiles(path: Path) -> dict:
    return {r["user_id"]: r for r in map(json.loads, path.read_text().splitlines())}


def report(out: Path, name: str) -> dict:
    return json.loads((out / name / f"{name}.report.json").read_text())


def sequences(raw: Path) -> Path:
    return next(raw.glob("*_preprocessed.txt"))


# ---- the training part ---------------------------------------------------------------------------

def test_training_part_is_the_merged_timeline_without_its_last_two():
    inter = pd.DataFrame({
        "user_id": ["a", "a", "b", "a", "a", "b", "c", "a", "c", "c"],
        "item_id": ["a1", "a2", "b1", "a3", "a4", "b2", "c1", "a5", "c2", "c3"],
        # a3 is listed after a4's time: the timeline follows time, not rows; a1/a2 tie in float32
        "timestamp": [1e9, 1e9 + 1, 5.0, 1e9 + 300, 1e9 + 200, 6.0, 1.0, 1e9 + 400, 2.0, 3.0]})
    assert np.float32(1e9) == np.float32(1e9 + 1)  # RecBole's float32 times tie here: file order decides
    assert training_histories(inter) == {"a": ["a1", "a2", "a4"], "b": [], "c": ["c1"]}


def test_item_document_names_the_fields_the_source_has():
    item = ItemText("i", "food", title="Green Tea", categories=["Grocery", "Tea"], brand="Acme",
                    description="Loose leaf.")
    assert item_document(item) == "Title: Green Tea\nCategory: Grocery > Tea\nBrand: Acme\nDescription: Loose leaf."
    assert item_document(ItemText("j", "food", title="Mug")) == "Title: Mug"
    assert item_document(ItemText("k", "food")) == ""


def test_item_clusters_are_stored_and_groups_pick_the_largest_latest(tmp_path):
    from atomic_data_builders.enrich.profiles import cluster_items, kmeans, user_groups

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16))
    vectors = {f"F{k}": centers[k % 3] + 0.01 * rng.normal(size=16) for k in range(30)}
    vectors["F30"] = None  # no text, no vector
    domain_of = {i: "food" for i in vectors}
    labels = cluster_items(vectors, domain_of, 3, tmp_path)
    assert len({labels[f"F{k}"] for k in range(0, 30, 3)}) == 1 and len(set(labels.values())) == 3
    assert "F30" not in labels and len(list(tmp_path.glob("clusters-food-*.json"))) == 1
    assert cluster_items(vectors, domain_of, 3, tmp_path) == labels  # read back, not fitted again
    assert kmeans(np.eye(2), 5).tolist() == [0, 1]  # fewer items than clusters: one each

    items = {i: ItemText(i, "food", title=f"title {i}") for i in vectors}
    items["K0"] = ItemText("K0", "kitchen", title="pan")
    history = ["K0", "F0", "F1", "F3", "F30", "F6", "F4"]  # cluster of F0: F0 F3 F6; of F1: F1 F4
    groups = user_groups(history, items, labels, ["food", "kitchen"], max_clusters=4, items_per_cluster=2)
    assert groups == [("food", ["F3", "F6"]), ("food", ["F1", "F4"]), ("food", ["F30"]), ("kitchen", ["K0"])]
    groups = user_groups(history, items, labels, ["food", "kitchen"], max_clusters=3, items_per_cluster=2)
    assert groups[-1] == ("food", ["F30"])  # of two single items, the more recent one (F30, no vector: its own)
    assert user_groups(history, items, labels, ["food", "kitchen"], 1, 5) == [("food", ["F0", "F3", "F6"])]


# ---- llm_emb -------------------------------------------------------------------------------------

def test_llm_emb_local_columns_and_stored_pca_rerun_identical(tmp_path):
    from atomic_data_builders.build import load_items
    from atomic_data_builders.enrich.text import CachedEncoder

    raw = write_split_rich(tmp_path / "raw", n_users=12)
    out = tmp_path / "out"
    args = ["--stages", "llm_emb", "--llm-emb-dim", 8, "--llm-emb-domain-dim", 16, "--no-progress"]
    assert run_cli("split", "--input", raw, "--output-dir", out, "--dataset", "r", *args) == 0
    item_path = out / "r/r.item"
    item = read_item(item_path)
    assert list(item.columns) == ["item_id:token", "domain:token", "llm_emb:float_seq", "llm_emb_domain:float_seq"]
    glob = np.array([c.split() for c in item["llm_emb:float_seq"]], dtype=float)
    local = np.array([c.split() for c in item["llm_emb_domain:float_seq"]], dtype=float)
    assert glob.shape == (len(item), 8) and local.shape == (len(item), 16)
    for domain in ("food", "kitchen"):  # PCA within each domain: centred per domain
        assert np.allclose(local[(item["domain:token"] == domain).to_numpy()].mean(axis=0), 0, atol=1e-3)
    facts = report(out, "r")["stages"]["llm_emb"]
    assert facts["dim"] == 384 and facts["embedding"]["backend"] == "sentence-transformers"
    assert not facts["llm_emb"]["fit_reused"] and facts["llm_emb_domain"]["domains"]["food"]["axes"] == 16

    before = item_path.read_bytes()
    assert run_cli("enrich", "--output-dir", out, "--dataset", "r", *args) == 0
    assert item_path.read_bytes() == before  # same input, same bytes
    facts = report(out, "r")["stages"]["llm_emb"]
    assert facts["llm_emb"]["fit_reused"] and facts["embedding"]["encoded"] == 0
    assert all(d["fit_reused"] for d in facts["llm_emb_domain"]["domains"].values())
    for fit in (out / "r/.cache/llm_emb/pca").glob("*.npz"):
        fit.unlink()
    assert run_cli("enrich", "--output-dir", out, "--dataset", "r", *args) == 0
    assert item_path.read_bytes() == before  # fitted again: the same axes (signs fixed)

    # without --llm-emb-dim, llm_emb is the model's vector of the templated item text
    assert run_cli("enrich", "--output-dir", out, "--dataset", "r", "--stages", "llm_emb", "--no-progress") == 0
    item = read_item(item_path)
    items = {it.item_id: it for it in load_items(out / "r/.cache/items.jsonl")}
    first = item["item_id:token"][0]
    expected = CachedEncoder(progress=False).model.encode([item_document(items[first])])[0]
    assert np.allclose(np.array(item["llm_emb:float_seq"][0].split(), dtype=float), expected, atol=1e-4)
    assert {len(c.split()) for c in item["llm_emb_domain:float_seq"]} == {128}  # the default width


# ---- user_profile, local -------------------------------------------------------------------------

def _swap_eval_items(raw: Path, user: str) -> tuple:
    """Replace `user`'s last two items (validation and test targets) by two other items of the dataset."""
    path = sequences(raw)
    lines = path.read_text().splitlines()
    seqs = {line.split()[0]: line.split()[1:] for line in lines}
    own = [tok.split("|")[0] for tok in seqs[user]]
    elsewhere = {tok.split("|")[0] for u, s in seqs.items() if u != user for tok in s}
    assert set(own[-2:]) <= elsewhere  # the removed items stay in the dataset
    replacements = sorted(elsewhere - set(own))[:2]
    tokens = seqs[user][:-2] + [f"{r}|{tok.split('|')[1]}" for r, tok in zip(replacements, seqs[user][-2:])]
    path.write_text("\n".join(f"{user} " + " ".join(tokens) if line.split()[0] == user else line for line in lines) + "\n")
    return own[-2:], replacements


def test_local_profiles_read_the_training_part_only(tmp_path):
    raw = write_split_rich(tmp_path / "raw", n_users=10)
    with open(sequences(raw), "a") as handle:
        handle.write("99 1|1400000000 30|1400000001\n")  # two interactions: both are targets
    build = ["--stages", "tags", "user_profile", "--profiles", "local", "--tag-max-df", 0.5, "--no-progress"]
    assert run_cli("split", "--input", raw, "--output-dir", tmp_path / "a", "--dataset", "r", *build) == 0
    folder = tmp_path / "a/r"
    rows, records = read_user(folder / "r.user"), read_profiles(folder / "r.profiles.jsonl")
    assert list(rows) == [str(u) for u in range(10)] + ["99"]
    assert rows["99"] == "" and records["99"]["status"] == "no_history" and records["99"]["profile"] == ""
    assert {len(c.split()) for u, c in rows.items() if u != "99"} == {384}
    manifest = json.loads((folder / "r.manifest.json").read_text())["files"]
    assert set(manifest) == {"r.inter", "r.item", "r.user", "r.profiles.jsonl"} and check_manifest(folder, "r") is None
    facts = report(tmp_path / "a", "r")["stages"]["user_profile"]
    assert facts["profiles"] == "local" and facts["users"] == 11 and facts["no_history"] == 1
    assert facts["with_profile_emb"] == 10 and facts["held_out_per_user"] == 2

    before = {name: (folder / name).read_bytes() for name in ("r.user", "r.profiles.jsonl")}
    assert run_cli("enrich", "--output-dir", tmp_path / "a", "--dataset", "r", "--stages", "user_profile",
                   "--no-progress") == 0  # from the written .inter: the same training parts, the same bytes
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert report(tmp_path / "a", "r")["stages"]["user_profile"]["embedding"]["encoded"] == 0

    inter = pd.read_csv(folder / "r.inter", sep="\t", dtype=str)
    titles = {line.split("\t")[0]: line.split("\t")[2] for line in (raw / "titles.tsv").read_text().splitlines()[1:]}
    mapping = {str(v[0]): k for k, v in json.loads((raw / "map_item_24.txt").read_text()).items()}
    record = records["0"]
    history = inter[inter["user_id:token"] == "0"]["item_id:token"].tolist()
    assert [i for c in record["clusters"] for i in c["items"]] == [i for d in ("food", "kitchen") for i in history[:-2]
                                                                   if i.startswith(d[0].upper())]
    assert "food (" in record["profile"] and "kitchen (" in record["profile"]

    # a different validation and test target for user 0: same profile text, same embedding, same files
    removed, added = _swap_eval_items(raw, "0")
    assert run_cli("split", "--input", raw, "--output-dir", tmp_path / "b", "--dataset", "r", *build) == 0
    other = tmp_path / "b/r"
    new_inter = pd.read_csv(other / "r.inter", sep="\t", dtype=str)
    assert new_inter[new_inter["user_id:token"] == "0"]["item_id:token"].tolist()[-2:] == [mapping[a] for a in added]
    assert (other / "r.item").read_bytes() == (folder / "r.item").read_bytes()
    assert read_profiles(other / "r.profiles.jsonl") == records
    assert (other / "r.user").read_bytes() == (folder / "r.user").read_bytes()
    for item_id in [mapping[r] for r in removed] + [mapping[a] for a in added]:
        assert titles[item_id][:20] not in record["profile"] or item_id in history[:-2]
    # the negative control: the same builder fed the whole timeline would have written another profile
    from atomic_data_builders.build import load_items

    items = {it.item_id: it for it in load_items(folder / ".cache/items.jsonl")}
    assert local_profile(history, items, {}, ["food", "kitchen"])[0] != local_profile(history[:-2], items, {},
                                                                                      ["food", "kitchen"])[0]


def test_recbole_reads_the_user_file(tmp_path):
    from recbole_tema import compat

    raw = write_split(tmp_path / "raw")
    assert run_cli("split", "--input", raw, "--output-dir", tmp_path, "--dataset", "toy", "--stages", "user_profile",
                   "--no-progress") == 0  # --stages user_profile alone: local profiles
    compat.apply()
    from recbole.config import Config
    from recbole.data import create_dataset

    config = Config(model="SASRec", dataset="toy", config_dict={
        "data_path": str(tmp_path), "load_col": {"inter": ["user_id", "item_id", "timestamp"],
                                                 "user": ["user_id", "profile_emb"]},
        "train_neg_sample_args": None, "loss_type": "CE", "MAX_ITEM_LIST_LENGTH": 5, "show_progress": False,
        "checkpoint_dir": str(tmp_path / "saved"), "state": "ERROR"})
    dataset = create_dataset(config)
    dataset.build()  # features become tensors
    feat = dataset.get_user_feature()
    assert feat["profile_emb"].shape == (4, 384)  # 3 users + padding
    assert feat["profile_emb"][dataset.token2id("user_id", "0")].abs().sum() > 0


def test_a_user_file_of_other_interactions_is_removed(tmp_path):
    raw = write_split(tmp_path / "raw")
    out, folder = tmp_path / "out", tmp_path / "out/toy"
    assert run_cli("split", "--input", raw, "--output-dir", out, "--dataset", "toy", "--profiles", "local",
                   "--stages", "user_profile", "--no-progress") == 0
    assert (folder / "toy.user").exists() and (folder / "toy.profiles.jsonl").exists()
    assert run_cli("split", "--input", raw, "--output-dir", out, "--dataset", "toy", "--plain", "--no-progress") == 0
    assert (folder / "toy.user").exists()  # the same interactions: the profiles still hold
    seq = sequences(raw)
    seq.write_text(seq.read_text().replace("1 1|50 4|60 2|70", "1 1|50 4|60 3|65 2|70"))
    assert run_cli("split", "--input", raw, "--output-dir", out, "--dataset", "toy", "--plain", "--no-progress") == 0
    assert not (folder / "toy.user").exists() and not (folder / "toy.profiles.jsonl").exists()
    assert set(json.loads((folder / "toy.manifest.json").read_text())["files"]) == {"toy.inter", "toy.item"}
    assert any("toy.user" in note for note in report(out, "toy")["notes"])


# ---- the LLM paths against the canned server ------------------------------------------------------

def _llm_args(server, *extra):
    return ["--llm-base-url", server.base_url, "--llm-model", "fake-chat", "--llm-api-key-env", KEY_ENV,
            "--llm-max-retries", 1, "--no-progress", *extra]


def test_llm_text_and_profiles_end_to_end_resume_leakage_and_key(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG)
    raw = write_split(tmp_path / "raw")  # user 0: F3 F1 K2 | F2 K1; user 1: F1 | K1 F2; user 2: K2 F3 | K1 F1
    out, folder = tmp_path / "out", tmp_path / "out/toy"
    argv = ["split", "--input", raw, "--output-dir", out, "--dataset", "toy", "--stages", "llm_emb", "llm_text",
            "user_profile", "--profiles", "openai", "--llm-emb-model", "fake-emb", "--llm-emb-domain-dim", 4,
            "--profile-clusters", 2]
    with FakeLLM() as server:
        assert run_cli(*argv, *_llm_args(server)) == 0
        first = {name: (folder / name).read_bytes() for name in ("toy.item", "toy.user", "toy.profiles.jsonl")}
        requests = len(server.requests)
        assert set(server.auth) == {f"Bearer {SECRET}"}  # the key does reach the server

        item = read_item(folder / "toy.item")
        assert {len(c.split()) for c in item["llm_emb:float_seq"]} == {8}  # the fake model's width
        assert {len(c.split()) for c in item["llm_emb_domain:float_seq"]} == {4}
        assert {len(c.split()) for c in item["llm_text_emb:float_seq"]} == {384}  # MiniLM: no --clip-model
        facts = report(out, "toy")["stages"]
        assert facts["llm_text"]["llm"]["written"] == 5 and facts["llm_text"]["encoder"].startswith("sentence-")
        assert facts["user_profile"]["llm"]["profiled"] == 3 and facts["user_profile"]["dim"] == 8
        cached = [json.loads(line) for line in (folder / ".cache/llm_text/llm_text.jsonl").read_text().splitlines()]
        assert {r["text"].split(".")[0] for r in cached} == set(TITLES.values())

        # no evaluation item in any profile prompt: F2 and K1 are only ever targets in this data
        profile_prompts = [last_user(b) for b in server.chat_bodies() if "key_terms" not in b["messages"][0]["content"]]
        assert profile_prompts and not any("Dark Roast" in p or "Tea Kettle" in p for p in profile_prompts)
        records = read_profiles(folder / "toy.profiles.jsonl")
        assert records["1"]["clusters"] == [{"domain": "food", "items": ["F1"], "text": "likes organic green tea bags"}]
        assert records["0"]["profile"].startswith("Profile: food: ") and "kitchen: likes ceramic" in records["0"]["profile"]

        # a re-run asks nothing and writes the same bytes
        assert run_cli(*argv, *_llm_args(server)) == 0
        assert len(server.requests) == requests
        assert {name: (folder / name).read_bytes() for name in first} == first
        again = report(out, "toy")["stages"]
        assert again["llm_text"]["llm"]["calls"] == 0 and again["user_profile"]["llm"]["calls"] == 0
        assert again["llm_emb"]["embedding"]["calls"] == 0 and again["user_profile"]["embedding"]["calls"] == 0

        # other validation and test targets for user 0: its profile input is the same, so nothing is asked
        seq = sequences(raw)
        seq.write_text(seq.read_text().replace("0 3|100 1|100 5|100 2|100 4|200", "0 3|100 1|100 5|100 1|150 5|200"))
        assert run_cli(*argv, *_llm_args(server)) == 0
        assert len(server.requests) == requests
        assert read_profiles(folder / "toy.profiles.jsonl") == records
        assert (folder / "toy.user").read_bytes() == first["toy.user"]

    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in caplog.text


def test_bad_replies_are_asked_again_then_recorded_failed(tmp_path):
    items = [ItemText("A", "food", title="Organic Green Tea"), ItemText("B", "kitchen", title="Cast Iron Pan"),
             ItemText("C", "food")]
    asked = []

    def chat(body):
        title = last_user(body).split("Title: ")[-1]
        asked.append((title, body["temperature"]))
        if title == "Organic Green Tea":
            return "Sure! Here it is." if len(asked) == 1 else default_chat(body)
        return '{"key_terms": [], "summary": "x", "buyer_interests": ["y"]}'  # never usable

    config = LLMTextConfig(base_url="", model="fake", api_key_env=KEY_ENV, cache_dir=str(tmp_path / "t"),
                           backoff_base=0.01, concurrency=1, progress=False)
    with FakeLLM(chat=chat) as server:
        config.base_url = server.base_url
        texts, summary = generate_item_texts(items, config)
        assert set(texts) == {"A"} and texts["A"].startswith("Organic Green Tea. Key terms: organic")
        assert (summary.written, summary.failed, summary.no_title, summary.calls, summary.retries) == (1, 1, 1, 4, 2)
        assert [temperature for title, temperature in asked if title == "Cast Iron Pan"] == [0.0, 0.7]  # the re-ask is not deterministic
        texts, summary = generate_item_texts(items, config)
        assert set(texts) == {"A"} and summary.calls == 0 and summary.cache_hits == 2 and summary.failed == 1
        config.retry_failed = True
        assert generate_item_texts(items, config)[1].calls == 2

    # profiles: user u2's cluster replies never parse (a failed user, an empty cell); the merge re-asks once
    by_id = {it.item_id: it for it in items}
    merges = []

    def profile_chat(body):
        user = last_user(body)
        if "Cast Iron" in user and "Bought" in user:
            return "I like pans."
        if user.startswith("Interests:"):
            merges.append(body["temperature"])
            return "oops" if len(merges) == 1 else default_chat(body)
        return default_chat(body)

    histories = {"u1": ["A", "C"], "u2": ["B"], "u3": []}
    labels = {"A": "food#0", "B": "kitchen#0"}
    pconfig = ProfileConfig(base_url="", model="fake", api_key_env=KEY_ENV, cache_dir=str(tmp_path / "p"),
                            backoff_base=0.01, concurrency=1, progress=False)
    with FakeLLM(chat=profile_chat) as server:
        pconfig.base_url = server.base_url
        records, summary = llm_profiles(histories, by_id, labels, ["food", "kitchen"], pconfig)
        assert records["u1"]["status"] == "ok" and records["u1"]["profile"] == "Profile: food: likes organic green tea"
        assert records["u2"]["status"] == "failed" and records["u2"]["profile"] == ""
        assert records["u3"]["status"] == "no_history"  # C has no title: nothing to show, and u3 has nothing
        assert merges == [0.0, 0.7] and summary.profiled == 1 and summary.failed == 1
        again, summary = llm_profiles(histories, by_id, labels, ["food", "kitchen"], pconfig)
        assert again == records and summary.calls == 0


def test_profiles_resume_where_the_server_went_away(tmp_path):
    items = {f"F{k}": ItemText(f"F{k}", "food", title=f"Tea number {k}") for k in range(6)}
    histories = {f"u{k}": [f"F{k}"] for k in range(6)}  # one cluster each: two requests per user
    labels = {item_id: "food#0" for item_id in items}
    served = []

    def going_away(body):
        served.append(body)
        return 503 if len(served) > 5 else default_chat(body)

    config = ProfileConfig(base_url="", model="fake", api_key_env=KEY_ENV, cache_dir=str(tmp_path / "p"),
                           concurrency=1, max_retries=0, backoff_base=0.01, progress=False)
    with FakeLLM(chat=going_away) as server:
        config.base_url = server.base_url
        with pytest.raises(LLMInterrupted, match=r"2 of 6 users are done .* run again to resume"):
            llm_profiles(histories, items, labels, ["food"], config)
    with FakeLLM() as server:  # back (on another port: the cache does not depend on it)
        config.base_url = server.base_url
        records, summary = llm_profiles(histories, items, labels, ["food"], config)
        assert all(r["status"] == "ok" for r in records.values())
        assert (summary.requests, summary.cache_hits, summary.calls) == (12, 5, 7)  # u0, u1 and u2's cluster kept


@pytest.mark.parametrize("reply, reason", [
    ('{"key_terms": ["tea"], "summary": "s"}', "lacks"),
    ('["tea"]', "not an object"),
    ('{"key_terms": "tea", "summary": 3, "buyer_interests": ["x"]}', "summary is a int"),
    ("", "empty reply"),
])
def test_parse_item_text_rejects_bad_replies(reply, reason):
    with pytest.raises(BadReply, match=reason):
        parse_item_text(reply)


def test_parse_interests_and_prompt_override(tmp_path):
    assert parse_interests('```json\n["Tea  drinking", "tea drinking", "baking"]\n```') == ["Tea drinking",
                                                                                          "tea drinking", "baking"]
    with pytest.raises(BadReply):
        parse_interests('{"interests": ["tea"]}')
    override = tmp_path / "p.yaml"
    override.write_text("profile_merge: [a, b]\n")
    with pytest.raises(ValueError, match="section 'profile_merge' must map domains to prompts"):
        load_prompt_file(str(override))
    override.write_text("profile_cluster:\n  food:\n    system: 'x'\n")
    with pytest.raises(ValueError, match="profile_cluster, domain 'food': needs string fields"):
        load_prompt_file(str(override))
    override.write_text("llm_text:\n  food:\n    system: 'Describe {domain} things; key_terms please.'\n"
                        "    user: 'Title: {title}'\n")
    config = LLMTextConfig(base_url="", model="fake", api_key_env=KEY_ENV, cache_dir=str(tmp_path / "t"),
                           prompts_file=str(override), response_format="json_schema", progress=False)
    with FakeLLM() as server:
        config.base_url = server.base_url
        generate_item_texts([ItemText("A", "food", title="Tea"), ItemText("B", "kitchen", title="Pan")], config)
        bodies = {last_user(b).split("Title: ")[-1]: b for b in server.chat_bodies()}
    assert bodies["Tea"]["messages"][0]["content"] == "Describe food things; key_terms please."
    assert "kitchen" in bodies["Pan"]["messages"][0]["content"]  # other domains keep the shipped prompt
    assert bodies["Tea"]["response_format"]["json_schema"]["schema"]["required"] == ["key_terms", "summary",
                                                                                    "buyer_interests"]


# ---- the embeddings backend ----------------------------------------------------------------------

def test_embeddings_batches_pools_tokens_splits_rejected_batches_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    bad_count_once = {"left": 1}
    token_vectors = [fake_vector("t1"), fake_vector("t2")]

    def embed(inputs):
        if any("TOO LONG" in t for t in inputs):
            return 400
        if "b" in inputs and bad_count_once["left"]:
            bad_count_once["left"] -= 1
            return [fake_vector("b")]  # one vector for two inputs: a bad reply, asked again
        return [token_vectors if t == "tokens" else fake_vector(t) for t in inputs]

    texts = ["a", "b", "c", "TOO LONG", "tokens", "a"]
    config = EmbedConfig(base_url="", model="fake-emb", api_key_env=KEY_ENV, cache_dir=str(tmp_path / "e"),
                         batch_size=2, concurrency=2, backoff_base=0.01, max_retries=1, progress=False)
    with FakeLLM(embed=embed) as server:
        config.base_url = server.base_url
        embedder = OpenAIEmbedder(config)
        vectors = embedder(texts)
        assert np.allclose(vectors[0], fake_vector("a")) and np.allclose(vectors[5], vectors[0])
        assert vectors[3] is None  # rejected alone, after its batch was split
        assert np.allclose(vectors[4], np.mean(token_vectors, axis=0), atol=1e-6)  # per-token vectors averaged
        summary = embedder.summary
        assert (summary.items, summary.embedded, summary.failed, summary.retries) == (5, 4, 1, 1)
        sent = server.count("embeddings")
        again = OpenAIEmbedder(config)
        assert np.allclose(np.stack([v for v in again(texts) if v is not None]),
                           np.stack([v for v in vectors if v is not None]))
        assert server.count("embeddings") == sent and again.summary.cache_hits == 5  # the failure is not re-asked
        config.retry_failed = True
        OpenAIEmbedder(config)(texts)
        assert server.count("embeddings") == sent + 1
    files = [p for p in (tmp_path / "e").rglob("*") if p.is_file()]
    assert files and all(SECRET.encode() not in p.read_bytes() for p in files)


def test_unreachable_embeddings_server_keeps_finished_batches(tmp_path):
    config = EmbedConfig(base_url="", model="fake-emb", api_key_env=KEY_ENV, cache_dir=str(tmp_path / "e"),
                         batch_size=2, concurrency=1, max_retries=0, progress=False)
    with FakeLLM() as server:
        config.base_url = server.base_url
        OpenAIEmbedder(config)(["a", "b"])
    config.base_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with pytest.raises(LLMInterrupted, match=r"\(batch of 2 text\(s\): APIConnectionError.*2 of 4 texts are done"):
        OpenAIEmbedder(config)(["a", "b", "c", "d"])


@pytest.mark.parametrize("data, reason", [
    ([{"index": 0, "embedding": [1.0, float("nan")]}], "NaN"),
    ([{"index": 0, "embedding": [1.0, 2.0]}, {"index": 1, "embedding": [1.0]}], "different lengths"),
    ([{"index": 0, "embedding": []}], "not a list of numbers"),
    ([{"index": 0, "embedding": ["x"]}], "non-number"),
    ([{"index": 1, "embedding": [1.0]}], "indices"),
])
def test_embedding_replies_are_checked(data, reason):
    from types import SimpleNamespace

    response = SimpleNamespace(data=[SimpleNamespace(**d) for d in data])
    with pytest.raises(BadReply, match=reason):
        embedding_vectors(response, len(data))


# ---- errors --------------------------------------------------------------------------------------

def test_llm_text_without_a_server_is_a_clear_error(tmp_path, capsys):
    raw = write_split(tmp_path / "raw")
    assert run_cli("split", "--input", raw, "--output-dir", tmp_path / "out", "--dataset", "toy", "--llm-text",
                   "--no-progress") == 2
    assert "llm_text needs --llm-base-url" in capsys.readouterr().err
    assert not (tmp_path / "out/toy/toy.inter").exists()


def test_unreachable_server_stops_the_profiles_with_a_resume_message(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    raw = write_split(tmp_path / "raw")
    assert run_cli("split", "--input", raw, "--output-dir", tmp_path / "out", "--dataset", "toy", "--stages",
                   "user_profile", "--profiles", "openai", "--llm-base-url", f"http://127.0.0.1:{free_port()}/v1",
                   "--llm-max-retries", 0, "--llm-api-key-env", KEY_ENV, "--no-progress") == 2
    error = capsys.readouterr().err
    assert "unreachable" in error and "run again to resume" in error and SECRET not in error
    assert not (tmp_path / "out/toy/toy.user").exists()
