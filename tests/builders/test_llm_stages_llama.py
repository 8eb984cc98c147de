"""llm_emb, llm_text and user_profile end to end against a real llama.cpp server (SmolLM2-135M).

One server answers both chat and `/v1/embeddings` (started with `--embedding true`; SmolLM2 has no
pooling there, so it returns a vector per token, which the client averages). A JSON grammar
(`--llm-response-format json_object_schema`) keeps the small model's replies parseable. Skipped
with the install commands when llama-cpp-python[server] or the GGUF is missing.
"""
import json

import pandas as pd
import pytest

from atomic_data_builders.enrich.llama_server import LlamaServer, smollm2_gguf
from support.llama import skip_module_without_llama_server
from support.raw_sources import read_item, run_cli, write_split

skip_module_without_llama_server()

SECRET = "sk-llama-stages-key-not-to-be-seen"
KEY_ENV = "TEMA_LLAMA_STAGES_KEY"
SMOLLM2_WIDTH = 576  # SmolLM2-135M's hidden size: the width of its (mean-pooled) embeddings


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # one thread: on a busy 2-core runner, two llama.cpp threads spin against each other
    srv = LlamaServer(smollm2_gguf(), n_ctx=1024, n_threads=1, embedding=True,
                      log_path=tmp_path_factory.mktemp("llama") / "server.log")
    srv.start(timeout=120)
    yield srv
    srv.stop()


def test_llm_stages_through_llama_cpp(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    raw = write_split(tmp_path / "raw")  # 3 users, 5 items; training parts: 3, 1 and 2 items
    out, folder = tmp_path / "out", tmp_path / "out/toy"
    argv = ["split", "--input", raw, "--output-dir", out, "--dataset", "toy",
            "--stages", "llm_emb", "llm_text", "user_profile", "--profiles", "openai",
            "--llm-base-url", server.base_url, "--llm-model", "smollm2-135m", "--llm-emb-model", "smollm2-135m",
            "--llm-api-key-env", KEY_ENV, "--llm-response-format", "json_object_schema",
            "--llm-extra-body", json.dumps({"repeat_penalty": 1.3}), "--llm-max-tokens", 96,
            "--llm-emb-domain-dim", 4, "--profile-clusters", 1, "--llm-concurrency", 2, "--no-progress"]
    assert run_cli(*argv) == 0
    item = read_item(folder / "toy.item")
    assert {len(c.split()) for c in item["llm_emb:float_seq"]} == {SMOLLM2_WIDTH}
    assert {len(c.split()) for c in item["llm_emb_domain:float_seq"]} == {4}
    assert sum(c != "" for c in item["llm_text_emb:float_seq"]) >= 4  # of 5; a reply that never parses: empty
    users = pd.read_csv(folder / "toy.user", sep="\t", dtype=str, keep_default_na=False)
    assert users["user_id:token"].tolist() == ["0", "1", "2"]
    profiled = [c for c in users["profile_emb:float_seq"] if c]
    assert len(profiled) >= 2 and {len(c.split()) for c in profiled} == {SMOLLM2_WIDTH}
    records = [json.loads(line) for line in (folder / "toy.profiles.jsonl").read_text().splitlines()]
    assert [r["user_id"] for r in records] == ["0", "1", "2"]
    for record in records:
        if record["status"] == "ok":
            assert record["profile"] and record["clusters"]
            assert not {"F2", "K1"} & {i for c in record["clusters"] for i in c["items"]}  # only ever targets
    stages = json.loads((folder / "toy.report.json").read_text())["stages"]
    assert stages["llm_text"]["llm"]["calls"] >= 5 and stages["user_profile"]["llm"]["calls"] >= 4
    assert stages["llm_emb"]["embedding"]["backend"] == "openai" and stages["llm_emb"]["embedding"]["calls"] >= 1

    before = {name: (folder / name).read_bytes() for name in ("toy.item", "toy.user", "toy.profiles.jsonl")}
    assert run_cli(*argv) == 0  # everything from the cache: not one request
    stages = json.loads((folder / "toy.report.json").read_text())["stages"]
    assert stages["llm_text"]["llm"]["calls"] == 0 and stages["user_profile"]["llm"]["calls"] == 0
    assert stages["llm_emb"]["embedding"]["calls"] == 0 and stages["user_profile"]["embedding"]["calls"] == 0
    assert {name: (folder / name).read_bytes() for name in before} == before

    # user 0 gets other validation and test targets: its profile input is unchanged, so nothing is asked
    seq = raw / "toy_5_preprocessed.txt"
    seq.write_text(seq.read_text().replace("0 3|100 1|100 5|100 2|100 4|200", "0 3|100 1|100 5|100 1|150 5|200"))
    assert run_cli(*argv) == 0
    stages = json.loads((folder / "toy.report.json").read_text())["stages"]
    assert stages["user_profile"]["llm"]["calls"] == 0 and stages["user_profile"]["embedding"]["calls"] == 0
    assert (folder / "toy.user").read_bytes() == before["toy.user"]
    assert (folder / "toy.profiles.jsonl").read_bytes() == before["toy.profiles.jsonl"]

    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
