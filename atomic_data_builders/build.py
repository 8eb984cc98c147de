"""The build pipeline: source -> filters -> `.inter`; items -> enrichment stages -> `.item`; report.

`build` converts a source; `enrich` runs stages again on a dataset folder written by `build`
(its item texts are kept in `<cache>/items.jsonl`). Every stage caches its work under the cache
folder (default `<output-dir>/<name>/.cache`), so a re-run or a resumed run recomputes nothing
that finished. The LLM stages (llm_emb, llm_text, user_profile) run only when asked for; the
user_profile stage also writes `NAME.user` and `NAME.profiles.jsonl`, committed with the others.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import pandas as pd

from atomic_data_builders.atomic import (
    DatasetFiles,
    atomic_open,
    fingerprint,
    item_column_types,
    order_interactions,
    read_inter,
    read_item,
    write_inter,
    write_item,
    write_user,
)
from atomic_data_builders.enrich.items import ItemText
from atomic_data_builders.report import BuildReport, dataset_stats
from atomic_data_builders.sources.base import SourceData
from atomic_data_builders.sources.filters import FilterConfig, apply_filters

log = logging.getLogger(__name__)

STAGES = ("tags", "tag_emb", "text_emb", "clip_txt", "clip_img", "llm_emb", "llm_text", "user_profile")
# .item columns a stage writes, where they are not the stage's name (user_profile writes NAME.user)
STAGE_COLUMNS = {"tags": ("tags", "tag_weights"), "llm_emb": ("llm_emb", "llm_emb_domain"),
                 "llm_text": ("llm_text_emb",), "user_profile": ()}
# CLI option -> key of every LLM stage's config mapping (llm_client.LLMConfig.from_mapping)
LLM_SHARED_OPTIONS = {"llm_base_url": "base_url", "llm_model": "model", "llm_api_key_env": "api_key_env",
                      "llm_concurrency": "concurrency", "llm_timeout": "timeout", "llm_max_retries": "max_retries",
                      "llm_max_tokens": "max_tokens", "llm_prompts": "prompts_file", "llm_extra_body": "extra_body",
                      "llm_parse_retries": "parse_retries", "llm_retry_failed": "retry_failed",
                      "llm_response_format": "response_format"}
# CLI option -> key of the LLM tagger's config mapping (tags_openai.OpenAITagConfig.from_mapping)
LLM_OPTIONS = {**LLM_SHARED_OPTIONS, "tag_cache_dir": "cache_dir"}
# the options of an embeddings server (--llm-emb-model): connection and retries, not chat sampling
EMBED_OPTIONS = ("base_url", "api_key_env", "concurrency", "timeout", "max_retries", "parse_retries", "retry_failed")
REFINE_OPTIONS = ("max_tags_per_item", "min_tag_count", "tag_merge_threshold")


def dataset_folder(args) -> Path:
    return Path(args.output_dir) / args.dataset


def cache_folder(args) -> Path:
    return Path(args.cache_dir) if getattr(args, "cache_dir", None) else dataset_folder(args) / ".cache"


def build(source: SourceData, args, report: BuildReport) -> Path:
    """Filter, enrich, then write `.inter`, `.item` and the report; returns the dataset folder.

    Both atomic files are written only once every stage has finished, so an interrupted build
    leaves the previous dataset (if any) as it was, never a new `.inter` beside an old `.item`.
    """
    folder = dataset_folder(args)
    filters = FilterConfig(**{k: v for k, v in vars(args).items() if k in FilterConfig.__dataclass_fields__
                              and v is not None})
    with report.stage("filter+order") as facts:
        inter, steps = apply_filters(source.inter, source.domains, filters)
        written = order_interactions(inter, tie_step=args.tie_step)
        facts["rows"] = int(len(written))
    report.data.update({"filters": steps, "filter_config": filters.as_dict(), "source_info": source.info,
                        "dataset": dataset_stats(written, source.domains)})
    domain_rank = {d: i for i, d in enumerate(source.domains)}
    kept = sorted(pd.unique(written["item_id"]), key=lambda i: (domain_rank[source.items[i].domain], i))
    items = [source.items[i] for i in kept]
    save_items(cache_folder(args) / "items.jsonl", items)
    table = pd.DataFrame({"item_id": [it.item_id for it in items], "domain": [it.domain for it in items]})
    files = DatasetFiles(folder, args.dataset)
    files.clear_staged()
    table = run_stages(items, table, args, report, files=files, interactions=lambda: written)
    with report.stage("write inter") as facts:
        write_inter(files.staged("inter"), written, tie_step=args.tie_step)
        facts["rows"] = int(len(written))
    if "user_profile" not in report.data["stages_run"] and files.final("user").exists():
        old = files.final("inter")
        if not old.exists() or fingerprint(old) != fingerprint(files.staged("inter")):
            files.drop("user")
            files.drop("profiles.jsonl")
            report.note(f"{files.final('user').name} and {files.final('profiles.jsonl').name} were removed: they "
                        "were built from other interactions (run the user_profile stage to write them again)")
    finish_item(files, args, table, report)
    return folder


def enrich(args, report: BuildReport) -> Path:
    """Run stages again on an existing dataset; columns of stages not run are kept as they are."""
    folder = dataset_folder(args)
    item_path = folder / f"{args.dataset}.item"
    if not item_path.exists():
        raise FileNotFoundError(f"{item_path} does not exist; build the dataset first")
    table = read_item(item_path)
    types = item_column_types(item_path)
    items_path = cache_folder(args) / "items.jsonl"
    if items_path.exists():
        texts = {it.item_id: it for it in load_items(items_path)}
    else:
        report.note(f"{items_path} is missing: items have no text, text stages write empty cells")
        texts = {}
    items = [texts.get(i) or ItemText(item_id=i, domain=d) for i, d in zip(table["item_id"], table["domain"])]
    _keep_data_facts(folder / f"{args.dataset}.report.json", report)
    files = DatasetFiles(folder, args.dataset)
    files.clear_staged()
    table = run_stages(items, table, args, report, files=files,
                       interactions=lambda: read_inter(files.final("inter")))
    finish_item(files, args, table, report, column_types=types)
    return folder


# What the build report says of the data itself: `enrich` changes none of it, so its report keeps it.
DATA_FACTS = ("source", "input", "started_utc", "filters", "filter_config", "source_info", "bad_lines", "dataset")


def _keep_data_facts(path: Path, report: BuildReport) -> None:
    """Copy the facts about the data from the report of the build being enriched (if it has one)."""
    if not path.is_file():
        return
    previous = json.loads(path.read_text(encoding="utf-8"))
    report.data["built"] = {key: previous[key] for key in DATA_FACTS if key in previous}
    for key in ("filters", "filter_config", "source_info", "bad_lines", "dataset"):
        if key in previous:
            report.data.setdefault(key, previous[key])


def save_items(path: Path, items: List[ItemText]) -> None:
    with atomic_open(path) as handle:
        handle.writelines(json.dumps(asdict(it)) + "\n" for it in items)


def load_items(path: Path) -> List[ItemText]:
    with open(path, encoding="utf-8") as handle:
        return [ItemText(**json.loads(line)) for line in handle if line.strip()]


def plan(args, items: List[ItemText], table: pd.DataFrame, report: BuildReport) -> List[str]:
    """Stages to run: explicit flags win; unset flags follow the data (see --help)."""
    if getattr(args, "plain", False):
        return []
    has_text = any(it.title or it.description or it.categories for it in items)
    has_images = bool(args.image_dir) or any(it.image for it in items)
    tags = args.tags if args.tags is not None else ("local" if has_text else "none")
    wanted = {"tags": tags != "none",
              "text_emb": args.text_emb if args.text_emb is not None else has_text,
              "clip_txt": args.clip_txt if args.clip_txt is not None else bool(args.clip_model) and has_text,
              "clip_img": args.clip_img if args.clip_img is not None else bool(args.clip_model) and has_images}
    wanted["tag_emb"] = args.tag_emb if args.tag_emb is not None else (wanted["tags"] or "tags" in table.columns)
    wanted.update(llm_emb=bool(getattr(args, "llm_emb", None)), llm_text=bool(getattr(args, "llm_text", None)),
                  user_profile=(getattr(args, "profiles", None) or "none") != "none")
    if not has_text and (wanted["tags"] or wanted["text_emb"]):
        report.note("the items have no title, description or category: text stages write empty cells")
    if not has_images:
        report.note("clip_img: off, the data has no image (no --image-dir and no image URL in the metadata)")
        wanted["clip_img"] = False
    elif not wanted["clip_img"]:
        report.note("clip_img: off (pass --clip-model to embed the images)")
    if (wanted["clip_txt"] or wanted["clip_img"]) and not args.clip_model:
        raise ValueError("clip_txt / clip_img need --clip-model (a checkpoint name in --clip-download-root or a path)")
    stages = [s for s in STAGES if wanted[s]]
    if args.stages:
        unknown = set(args.stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stage(s) {sorted(unknown)}; stages are {list(STAGES)}")
        stages = [s for s in STAGES if s in args.stages]
    if "llm_text" in stages and not getattr(args, "llm_base_url", None):
        raise ValueError("llm_text needs --llm-base-url: the /v1 URL of an OpenAI-compatible chat server (OpenAI, "
                         "vLLM, or a local llama.cpp: python -m llama_cpp.server --model FILE.gguf), with --llm-model")
    if "user_profile" in stages and getattr(args, "profiles", None) == "none":
        raise ValueError("--stages user_profile with --profiles none: choose --profiles local or openai")
    return stages


def tagger_config(args) -> dict:
    """The mapping given to the tagger: refine options, and the LLM options the user set."""
    config = {k: getattr(args, k) for k in REFINE_OPTIONS if getattr(args, k, None) is not None}
    if args.tags == "openai":
        for option, key in LLM_OPTIONS.items():
            if getattr(args, option, None) is not None:
                config[key] = getattr(args, option)
        config.setdefault("cache_dir", str(cache_folder(args) / "tags_openai"))
        config["progress"] = not args.no_progress
    return config


def llm_options(args) -> dict:
    """The LLM options the user set, as keys of llm_client.LLMConfig (shared by the LLM stages)."""
    return {key: getattr(args, option) for option, key in LLM_SHARED_OPTIONS.items()
            if getattr(args, option, None) is not None}


def embed_options(args) -> dict:
    """Options of the embeddings backend: empty (the local model) unless --llm-emb-model names a server model."""
    if not getattr(args, "llm_emb_model", None):
        return {}
    shared = llm_options(args)
    options = {key: shared[key] for key in EMBED_OPTIONS if key in shared}
    options["model"] = args.llm_emb_model
    if getattr(args, "llm_emb_batch", None):
        options["batch_size"] = args.llm_emb_batch
    return options


def _delta(before: dict, after: dict) -> dict:
    """Facts of one stage from an embedder's running totals (numbers: after - before)."""
    return {k: round(v - before[k], 3) if isinstance(v, (int, float)) and not isinstance(v, bool) and k in before
            else v for k, v in after.items()}


def run_stages(items: List[ItemText], table: pd.DataFrame, args, report: BuildReport,
               files: Optional[DatasetFiles] = None,
               interactions: Optional[Callable[[], pd.DataFrame]] = None) -> pd.DataFrame:
    """Run the planned stages on the item table; user_profile writes its files staged in `files`."""
    stages = plan(args, items, table, report)
    report.data["stages_run"] = stages
    cache = cache_folder(args)
    progress = not args.no_progress
    shared: dict = {}  # models loaded once per run, on first use

    def text_encoder():
        if "encoder" not in shared:
            from atomic_data_builders.enrich.text import CachedEncoder

            shared["encoder"] = CachedEncoder(args.text_model, cache / "text", progress=progress)
        return shared["encoder"]

    def embedder():
        if "embedder" not in shared:
            from atomic_data_builders.enrich.embed import make_embedder

            shared["embedder"] = make_embedder(embed_options(args), text_encoder, cache, progress=progress)
        return shared["embedder"]

    def clip_model():
        if "clip" not in shared:
            from atomic_data_builders.enrich import clip as clip_stage

            shared["clip"] = clip_stage.load_clip(args.clip_model, args.clip_download_root)
        return shared["clip"]

    encoder = text_encoder() if {"tags", "tag_emb", "text_emb"} & set(stages) else None
    ids = table["item_id"].tolist()

    if "tags" in stages:
        with report.stage("tags") as facts:
            before = encoder.encoded
            tags = run_tagger(args, items, encoder, facts)
            facts["encoded"] = encoder.encoded - before  # texts run through the text model (cache misses)
            table["tags"] = [[t for t, _ in tags[i]] if tags.get(i) else None for i in ids]
            table["tag_weights"] = [[w for _, w in tags[i]] if tags.get(i) else None for i in ids]
            facts.update(tagger=args.tags or "local", items_with_tags=sum(1 for i in ids if tags.get(i)),
                         vocabulary=len({t for v in tags.values() for t, _ in v}))
    if "tag_emb" in stages:
        if "tags" not in table.columns:
            raise ValueError("tag_emb needs tags: run the tags stage (--tags local|openai) first")
        from atomic_data_builders.enrich.text import tag_embeddings

        with report.stage("tag_emb") as facts:
            before = encoder.encoded
            item_tags = {i: list(zip(t, w if w is not None else [1.0] * len(t))) if t else []
                         for i, t, w in zip(ids, table["tags"], table.get("tag_weights", [None] * len(ids)))}
            emb = tag_embeddings(item_tags, encoder)
            table["tag_emb"] = [emb[i] for i in ids]
            facts.update(model=encoder.model_name, encoded=encoder.encoded - before)
    if "text_emb" in stages:
        from atomic_data_builders.enrich.text import text_embeddings

        with report.stage("text_emb") as facts:
            before = encoder.encoded
            emb = text_embeddings(items, encoder, with_description=not args.title_only)
            table["text_emb"] = [emb[i] for i in ids]
            facts.update(model=encoder.model_name, encoded=encoder.encoded - before)
    if "clip_txt" in stages or "clip_img" in stages:
        from atomic_data_builders.enrich import clip as clip_stage

        model, preprocess = clip_model()
        if "clip_txt" in stages:
            with report.stage("clip_txt") as facts:
                emb = clip_stage.clip_text_embeddings(items, model, args.clip_model, cache / "clip", progress=progress)
                table["clip_txt"] = [emb[i] for i in ids]
                facts["model"] = args.clip_model
        if "clip_img" in stages:
            with report.stage("clip_img") as facts:
                config = clip_stage.ImageConfig(image_dir=args.image_dir, download=not args.no_download,
                                                timeout=args.image_timeout, max_bytes=args.image_max_bytes,
                                                workers=args.image_workers, cache_dir=str(cache / "images"))
                emb, failures = clip_stage.clip_image_embeddings(items, model, preprocess, args.clip_model, config,
                                                                 cache / "clip", progress=progress)
                table["clip_img"] = [emb[i] for i in ids]
                facts.update(model=args.clip_model, embedded=sum(1 for i in ids if emb[i] is not None),
                             failures=dict(failures))
                if failures:
                    report.note(f"clip_img: {sum(failures.values())} items without image embedding "
                                f"(empty cells): {dict(failures)}")
    if "llm_emb" in stages:
        from atomic_data_builders.enrich.embed import llm_item_embeddings

        with report.stage("llm_emb") as facts:
            before = embedder().facts()
            glob, local = llm_item_embeddings(items, embedder(), cache, args.llm_emb_dim, args.llm_emb_domain_dim,
                                              facts)
            table["llm_emb"] = [glob[i] for i in ids]
            table["llm_emb_domain"] = [local[i] for i in ids]
            facts["embedding"] = _delta(before, embedder().facts())
    if "llm_text" in stages:
        with report.stage("llm_text") as facts:
            run_llm_text(args, items, table, cache, facts, text_encoder, clip_model)
    if "user_profile" in stages:
        if files is None or interactions is None:
            raise ValueError("user_profile needs the dataset's interactions and files")
        with report.stage("user_profile") as facts:
            before = embedder().facts()
            run_user_profile(args, items, table, interactions(), files, cache, embedder(), facts)
            facts["embedding"] = _delta(before, embedder().facts())
    for stage in stages:
        for column in STAGE_COLUMNS.get(stage, (stage,)):
            counts = Counter(v is not None for v in table[column]) if column in table.columns else Counter()
            log.info("%s: %d of %d items have a value", column, counts[True], len(ids))
    return table


def run_llm_text(args, items: List[ItemText], table: pd.DataFrame, cache: Path, facts: dict, text_encoder,
                 clip_model) -> None:
    """`llm_text_emb`: LLM-written item texts (llm_text.py), embedded by CLIP's text tower or the text model."""
    from atomic_data_builders.enrich.llm_text import LLMTextConfig, generate_item_texts

    config = LLMTextConfig.from_mapping({**llm_options(args), "cache_dir": str(cache / "llm_text"),
                                         "progress": not args.no_progress}, "llm_text")
    texts, summary = generate_item_texts(items, config)
    facts["llm"] = summary.as_dict()
    with_text = [i for i in table["item_id"] if i in texts]
    if args.clip_model:
        from atomic_data_builders.enrich.clip import clip_encode_texts

        model, _ = clip_model()
        vectors = clip_encode_texts([texts[i] for i in with_text], model, args.clip_model, cache / "clip",
                                    progress=not args.no_progress, desc="llm_text_emb")
        facts["encoder"] = f"clip text encoder {args.clip_model}"
    else:
        encoder = text_encoder()
        vectors = encoder([texts[i] for i in with_text], desc="llm_text_emb")
        facts["encoder"] = f"sentence-transformers {encoder.model_name}"
    emb = dict(zip(with_text, vectors))
    table["llm_text_emb"] = [emb.get(i) for i in table["item_id"]]
    facts.update(items=len(table), with_text=len(with_text))


def run_user_profile(args, items: List[ItemText], table: pd.DataFrame, inter: pd.DataFrame, files: DatasetFiles,
                     cache: Path, embedder, facts: dict) -> None:
    """`NAME.user` and `NAME.profiles.jsonl` (profiles.py) from the training part of each history, staged."""
    from atomic_data_builders.enrich import profiles
    from atomic_data_builders.enrich.history import HELD_OUT, training_histories

    histories = training_histories(inter)
    by_id = {it.item_id: it for it in items}
    for user, history in histories.items():
        unknown = next((i for i in history if i not in by_id), None)
        if unknown is not None:
            raise ValueError(f"user {user!r}: item {unknown!r} of {files.final('inter').name} has no row in "
                             f"{files.final('item').name}; rebuild the dataset so that both files agree")
    domains = list(dict.fromkeys(table["domain"]))
    mode = args.profiles if args.profiles not in (None, "none") else "local"
    if mode == "local":
        item_tags = {}
        if "tags" in table.columns:
            weights = table["tag_weights"] if "tag_weights" in table.columns else [None] * len(table)
            item_tags = {i: list(zip(t, w if w is not None else [1.0] * len(t))) for i, t, w
                         in zip(table["item_id"], table["tags"], weights) if t}
        records = profiles.local_profiles(histories, by_id, item_tags, domains)
    else:
        from atomic_data_builders.enrich.embed import item_vectors

        options = {**llm_options(args), "cache_dir": str(cache / "user_profile"), "progress": not args.no_progress}
        options.update({key: getattr(args, option) for option, key in (
            ("profile_clusters", "clusters"), ("profile_max_clusters", "max_clusters"),
            ("profile_items", "items_per_cluster")) if getattr(args, option, None) is not None})
        config = profiles.ProfileConfig.from_mapping(options, "user_profile")
        labels = profiles.cluster_items(item_vectors(items, embedder, desc="user_profile items"),
                                        {it.item_id: it.domain for it in items}, config.clusters,
                                        cache / "user_profile")
        records, summary = profiles.llm_profiles(histories, by_id, labels, domains, config)
        facts["llm"] = summary.as_dict()
    users = list(histories)
    with_text = [u for u in users if records[u]["profile"]]
    vectors = dict(zip(with_text, embedder([records[u]["profile"] for u in with_text], desc="profile_emb")))
    write_user(files.staged("user"), users, vectors, decimals=args.decimals)
    profiles.write_profiles_jsonl(files.staged("profiles.jsonl"), [records[u] for u in users])
    dims = {int(np.asarray(v).size) for v in vectors.values() if v is not None}
    statuses = Counter(records[u]["status"] for u in users)
    facts.update(profiles=mode, users=len(users), with_profile_emb=sum(v is not None for v in vectors.values()),
                 no_history=statuses["no_history"], failed=statuses["failed"], dim=dims.pop() if len(dims) == 1 else None,
                 held_out_per_user=HELD_OUT)


def run_tagger(args, items: List[ItemText], encoder, facts: dict) -> Dict[str, list]:
    """Dispatch `--tags local|openai`; the LLM tagger is imported only when asked for."""
    config = tagger_config(args)
    if args.tags in (None, "local"):
        from atomic_data_builders.enrich.tags_local import tag_items

        config.update(progress=not args.no_progress)
        config.update({key: getattr(args, option) for option, key in (("tag_min_df", "min_df"), ("tag_max_df", "max_df"))
                       if getattr(args, option, None) is not None})
        return tag_items(items, config, report=facts, encode=encoder)
    if args.tags == "openai":
        from atomic_data_builders.enrich.tags_openai import OpenAITagConfig, tag_items

        return tag_items(items, OpenAITagConfig.from_mapping(config), report=facts, encode=encoder)
    raise ValueError(f"unknown tagger {args.tags!r}")


def finish_item(files: DatasetFiles, args, table: pd.DataFrame, report: BuildReport,
                column_types: Optional[dict] = None) -> None:
    """PCA, then write the `.item` file, replace the dataset's files together, and write the report."""
    from atomic_data_builders.enrich.reduce import parse_pca, pca_column

    for column, dim in parse_pca(args.pca).items():
        if column not in table.columns:
            raise ValueError(f"--pca {column}={dim}: the .item has no column {column!r}")
        values, info = pca_column(list(table[column]), dim)
        table[column] = values
        report.data.setdefault("pca", {})[column] = info
    with report.stage("write item") as facts:
        write_item(files.staged("item"), table, decimals=args.decimals, column_types=column_types)
        facts["mib"] = round(files.staged("item").stat().st_size / 2 ** 20, 1)
    files.commit()
    report.data["columns"] = describe_columns(table, column_types)
    report.write(files.folder, args.dataset)


def describe_columns(table: pd.DataFrame, column_types: Optional[dict]) -> dict:
    from atomic_data_builders.atomic import ITEM_COLUMN_TYPES

    types = {**ITEM_COLUMN_TYPES, **(column_types or {})}
    out = {}
    for column in table.columns:
        values = table[column].tolist()
        present = [v for v in values if v is not None and not (isinstance(v, str) and v == "")]
        entry = {"type": types.get(column, "?"), "non_empty": len(present)}
        if types.get(column) == "float_seq" and present:
            sizes = {int(np.asarray(v).size) for v in present}
            entry["dim"] = sizes.pop() if len(sizes) == 1 else f"{min(sizes)}-{max(sizes)}"  # tag_weights vary
        out[column] = entry
    return out
