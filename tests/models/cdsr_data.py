"""Tiny synthetic cross-domain datasets for the TEMA / LLMEMF tests, written as atomic files."""

import random
from pathlib import Path

FEATURE_DIMS = {"text_emb": 8, "clip_txt": 6, "clip_img": 6, "tag_emb": 5}


def _write(path, header, rows):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\t".join(header) + "\n")
        for row in rows:
            handle.write("\t".join(str(cell) for cell in row) + "\n")


def _vector(rng, dim):
    return " ".join(f"{rng.gauss(0, 1):.4f}" for _ in range(dim))


def write_feature_dataset(
    root, name, features=tuple(FEATURE_DIMS), tags=True, missing_every=0, domains=("a", "b"), seed=0
):
    """40 items split evenly over ``domains``, 60 users with 6-10 interactions each.

    ``features``: float_seq columns to write; ``tags``: write ``tags`` / ``tag_weights``;
    ``missing_every``: every k-th item gets empty cells (missing features and no tags).
    Returns the data_path to pass to RecBole.
    """
    rng = random.Random(seed)
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    header = ["item_id:token", "domain:token"] + [f"{field}:float_seq" for field in features]
    if tags:
        header += ["tags:token_seq", "tag_weights:float_seq"]
    items = []
    for item in range(1, 41):
        missing = missing_every and item % missing_every == 0
        row = [f"i{item}", domains[(item - 1) * len(domains) // 40]]
        row += ["" if missing else _vector(rng, FEATURE_DIMS[field]) for field in features]
        if tags:
            n_tags = rng.randint(1, 3)
            names = rng.sample([f"t{k}" for k in range(12)], n_tags)
            row += ["", ""] if missing else [" ".join(names), " ".join(f"{1 / n_tags:.3f}" for _ in names)]
        items.append(row)
    _write(folder / f"{name}.item", header, items)
    inters, time = [], 0
    for user in range(1, 61):
        for _ in range(rng.randint(6, 10)):
            time += 1
            inters.append((f"u{user}", f"i{rng.randint(1, 40)}", time))
    _write(folder / f"{name}.inter", ["user_id:token", "item_id:token", "timestamp:float"], inters)
    return str(Path(root))


def write_tag_only_dataset(root, name, n_groups=8, warm=5, cold=2, n_users=160, history=6, seed=0):
    """A dataset whose valid and test targets can only be found through tags.

    Items of two domains fall into ``n_groups`` tag groups: every item of group g carries the tag
    ``g<g>`` (plus one noise tag shared across groups). Each user has one group and a history of
    that group's *warm* items in both domains; the valid and test targets are *cold* items of the
    same group, which never occur in training: their ID embeddings are untrained, so only their tags
    (shared with the user's history) tell them apart from the other items of their domain.
    """
    rng = random.Random(seed)
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    rows, warm_items, cold_items = [], {}, {}
    for group in range(n_groups):
        for domain in ("a", "b"):
            for k in range(warm + cold):
                item = f"{domain}{group}_{k}"
                noise = f"n{rng.randint(0, 3)}"
                rows.append((item, domain, f"g{group} {noise}", "0.8 0.2"))
                (warm_items if k < warm else cold_items).setdefault((group, domain), []).append(item)
    _write(
        folder / f"{name}.item",
        ["item_id:token", "domain:token", "tags:token_seq", "tag_weights:float_seq"],
        rows,
    )
    inters, time = [], 0
    for user in range(n_users):
        group = user % n_groups
        sequence = [rng.choice(warm_items[(group, "ab"[step % 2])]) for step in range(history)]
        domain = rng.choice("ab")
        sequence += rng.sample(cold_items[(group, domain)], 2)  # valid, test targets
        for item in sequence:
            time += 1
            inters.append((f"u{user}", item, time))
    _write(folder / f"{name}.inter", ["user_id:token", "item_id:token", "timestamp:float"], inters)
    return str(Path(root))


def tiny_config(data_path, tmp_path, **overrides):
    """Small, fast settings shared by the model tests."""
    config = {
        "data_path": data_path,
        "checkpoint_dir": str(Path(tmp_path) / "saved"),
        "epochs": 1,
        "train_batch_size": 64,
        "eval_batch_size": 64,
        "hidden_size": 16,
        "inner_size": 32,
        "n_layers": 1,
        "n_heads": 2,
        "MAX_ITEM_LIST_LENGTH": 10,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Hit", "MRR"],
        "topk": [10],
        "valid_metric": "MRR",
        "show_progress": False,
        "seed": 2024,
        "reproducibility": True,
        "state": "WARNING",
        "log_wandb": False,
    }
    config.update(overrides)
    return config
