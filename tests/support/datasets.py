"""Tiny synthetic cross-domain datasets, written as RecBole atomic files by the tests themselves."""

import random
from pathlib import Path

import numpy as np

FEATURE_DIMS = {"text_emb": 8, "clip_txt": 6, "clip_img": 6, "tag_emb": 5, "llm_text_emb": 7}


def write_dataset(root, name, inter_rows, item_columns, user_columns=None):
    """Write ``root/name/name.inter`` and ``.item`` (and ``.user`` with ``user_columns``).

    inter_rows: iterable of (user, item, timestamp); item_columns: ordered dict
    ``{"item_id:token": [...], "domain:token": [...], "text_emb:float_seq": [[...] or None, ...]}``;
    user_columns: the same for ``.user`` (``{"user_id:token": [...], "profile_emb:float_seq": [...]}``);
    a None cell or a list is written as RecBole expects (empty cell / space-separated values).
    Returns the dataset folder.
    """
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.inter", "w", encoding="utf-8") as handle:
        handle.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, item, time in inter_rows:
            handle.write(f"{user}\t{item}\t{time}\n")
    _write_table(folder / f"{name}.item", item_columns)
    if user_columns is not None:
        _write_table(folder / f"{name}.user", user_columns)
    return folder


def _write_table(path, columns):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\t".join(columns) + "\n")
        for cells in zip(*columns.values()):
            handle.write("\t".join(_cell(cell) for cell in cells) + "\n")


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, (list, tuple, np.ndarray)):
        return " ".join(f"{v:.5g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def known_answer_dataset(root, name="ka", n_users=300, items_per_domain=40, length=12, seed=0, llm=None):
    """Two domains (``a``, ``b``) whose next item is known: every user walks one cycle that
    alternates domains, ``a0 b0 a1 b1 ... a39 b39 a0 ...``, from a random starting point.

    The next item is the successor of the last one, so the history is needed and the target's domain
    differs from the last item's. With ``full`` ranking among 40 items per domain, chance Hit@10 is
    about 0.25; the rule gives 1.0.

    ``llm`` (a set of ``"item"``, ``"domain"``, ``"user"``) adds LLM4CDSR's columns built from each
    item's place on the cycle (see :func:`cycle_features`), plus noise: ``llm_emb`` (all items, one
    space), ``llm_emb_domain`` (per domain) and a ``.user`` file whose ``profile_emb`` is the mean of
    the user's training items' features (all but the last two, the valid and test targets).
    """
    rng = np.random.default_rng(seed)
    cycle = [f"{domain}{index}" for index in range(items_per_domain) for domain in "ab"]
    rows, starts = [], []
    for user in range(n_users):
        start = int(rng.integers(len(cycle)))
        starts.append(start)
        for step in range(length):
            rows.append((f"u{user}", cycle[(start + step) % len(cycle)], 1_000_000 + user * 1000 + step))
    items = sorted(cycle)
    item_columns = {"item_id:token": items, "domain:token": [item[0] for item in items]}
    user_columns = None
    llm = set(llm or ())
    features = cycle_features(len(cycle))  # [2N, 6] row p: the item at place p of the cycle
    place = {item: p for p, item in enumerate(cycle)}

    def noisy(vector, width):  # zero-padded to width, plus noise
        return (np.r_[vector, np.zeros(width - len(vector))] + rng.normal(0, 0.05, width)).round(4).tolist()

    if "item" in llm:
        domain = {"a": [1.0, 0.0], "b": [0.0, 1.0]}
        item_columns["llm_emb:float_seq"] = [noisy(np.r_[features[place[item]], domain[item[0]]], 12) for item in items]
    if "domain" in llm:
        item_columns["llm_emb_domain:float_seq"] = [noisy(features[place[item]], 8) for item in items]
    if "user" in llm:
        trained = [[(start + step) % len(cycle) for step in range(length - 2)] for start in starts]
        user_columns = {
            "user_id:token": [f"u{user}" for user in range(n_users)],
            "profile_emb:float_seq": [noisy(features[places].mean(0), 10) for places in trained],
        }
    write_dataset(root, name, rows, item_columns, user_columns)
    return name


def cycle_features(n, frequencies=(1, 3, 7)):
    """[n, 2 * len(frequencies)]: cos and sin of 2 pi f p / n for place p; the next place is a fixed rotation."""
    angles = 2 * np.pi * np.outer(np.arange(n), frequencies) / n  # [n, F]
    return np.concatenate([np.cos(angles), np.sin(angles)], 1)  # [n, 2F]


def write_feature_dataset(
    root, name, features=("text_emb", "clip_txt", "clip_img", "tag_emb"), tags=True, missing_every=0, domains=("a", "b"), seed=0
):
    """40 items split evenly over ``domains``, 60 users with 6-10 interactions each.

    ``features``: float_seq columns to write; ``tags``: write ``tags`` / ``tag_weights``;
    ``missing_every``: every k-th item gets empty cells (missing features and no tags).
    Returns the data_path to pass to RecBole.
    """
    rng = random.Random(seed)
    columns = {"item_id:token": [], "domain:token": []}
    columns.update({f"{field}:float_seq": [] for field in features})
    if tags:
        columns.update({"tags:token_seq": [], "tag_weights:float_seq": []})
    for item in range(1, 41):
        missing = missing_every and item % missing_every == 0
        columns["item_id:token"].append(f"i{item}")
        columns["domain:token"].append(domains[(item - 1) * len(domains) // 40])
        for field in features:
            vector = None if missing else [round(rng.gauss(0, 1), 4) for _ in range(FEATURE_DIMS[field])]
            columns[f"{field}:float_seq"].append(vector)
        if tags:
            n_tags = rng.randint(1, 3)
            names = rng.sample([f"t{k}" for k in range(12)], n_tags)
            columns["tags:token_seq"].append(None if missing else names)
            columns["tag_weights:float_seq"].append(None if missing else [round(1 / n_tags, 3)] * n_tags)
    inters, time = [], 0
    for user in range(1, 61):
        for _ in range(rng.randint(6, 10)):
            time += 1
            inters.append((f"u{user}", f"i{rng.randint(1, 40)}", time))
    write_dataset(root, name, inters, columns)
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
    columns = {"item_id:token": [], "domain:token": [], "tags:token_seq": [], "tag_weights:float_seq": []}
    warm_items, cold_items = {}, {}
    for group in range(n_groups):
        for domain in ("a", "b"):
            for k in range(warm + cold):
                item = f"{domain}{group}_{k}"
                noise = f"n{rng.randint(0, 3)}"
                for column, value in zip(columns, (item, domain, [f"g{group}", noise], [0.8, 0.2])):
                    columns[column].append(value)
                (warm_items if k < warm else cold_items).setdefault((group, domain), []).append(item)
    inters, time = [], 0
    for user in range(n_users):
        group = user % n_groups
        sequence = [rng.choice(warm_items[(group, "ab"[step % 2])]) for step in range(history)]
        domain = rng.choice("ab")
        sequence += rng.sample(cold_items[(group, domain)], 2)  # valid, test targets
        for item in sequence:
            time += 1
            inters.append((f"u{user}", item, time))
    write_dataset(root, name, inters, columns)
    return str(Path(root))


def write_driver_dataset(root, name, n_groups=6, per_group=4, n_noise=12, n_users=300, seed=0):
    """A dataset whose next domain-``a`` item is decided by one history item, through a shared tag.

    Domain ``a`` has ``n_groups`` groups of ``per_group`` items, each tagged ``g<group>`` only; domain
    ``b`` has noise items tagged ``n0``..``n3``. A user's domain-``a`` items come in pairs of one group
    (g1 g1 g2 g2 g3), with a ``b`` item after each, then two more ``b`` items (the valid and test
    targets). So after the test history, the user's next ``a`` item is of group g3: the group of the
    last ``a`` item of the history (the ``driver``, which is not the last item), and it shares the tag
    ``g3`` with that item alone. Returns (data_path, {user: (driver item, its tag)}).
    """
    rng = random.Random(seed)
    a_items = {group: [f"a{group}_{k}" for k in range(per_group)] for group in range(n_groups)}
    b_items = [f"b{k}" for k in range(n_noise)]
    columns = {"item_id:token": [], "domain:token": [], "tags:token_seq": []}
    for group, items in a_items.items():
        for item in items:
            for column, value in zip(columns, (item, "a", [f"g{group}"])):
                columns[column].append(value)
    for item in b_items:
        for column, value in zip(columns, (item, "b", [f"n{rng.randint(0, 3)}"])):
            columns[column].append(value)
    inters, drivers, time = [], {}, 0
    for user in range(n_users):
        g1, g2, g3 = rng.sample(range(n_groups), 3)
        sequence = []
        for group in (g1, g1, g2, g2, g3):
            sequence += [rng.choice(a_items[group]), rng.choice(b_items)]
        sequence += rng.sample(b_items, 2)  # valid, test targets
        drivers[f"u{user}"] = (sequence[8], f"g{g3}")
        for item in sequence:
            time += 1
            inters.append((f"u{user}", item, time))
    write_dataset(root, name, inters, columns)
    return str(Path(root)), drivers
