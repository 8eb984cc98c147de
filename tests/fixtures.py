"""Shared test data and the known-answer test body every model runs.

Tests run with the working directory set to their tmp_path (tests/conftest.py), because RecBole
writes log/ and saved/ there; refer to repository files through ``REPO_ROOT``.
"""

from pathlib import Path

import numpy as np

from recbole_tema.quick_start import run

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def write_dataset(root, name, inter_rows, item_columns):
    """Write ``root/name/name.inter`` and ``.item``.

    inter_rows: iterable of (user, item, timestamp); item_columns: ordered dict
    ``{"item_id:token": [...], "domain:token": [...], "text_emb:float_seq": [[...] or None, ...]}``;
    a None cell or a list is written as RecBole expects (empty cell / space-separated values).
    Returns the dataset folder.
    """
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.inter", "w", encoding="utf-8") as handle:
        handle.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, item, time in inter_rows:
            handle.write(f"{user}\t{item}\t{time}\n")
    columns = list(item_columns)
    with open(folder / f"{name}.item", "w", encoding="utf-8") as handle:
        handle.write("\t".join(columns) + "\n")
        for cells in zip(*item_columns.values()):
            handle.write("\t".join(_cell(cell) for cell in cells) + "\n")
    return folder


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, (list, tuple, np.ndarray)):
        return " ".join(f"{v:.5g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def known_answer_dataset(root, name="ka", n_users=300, items_per_domain=40, length=12, seed=0):
    """Two domains (``a``, ``b``) whose next item is known: every user walks one cycle that
    alternates domains, ``a0 b0 a1 b1 ... a39 b39 a0 ...``, from a random starting point.

    The next item is the successor of the last one, so the history is needed and the target's domain
    differs from the last item's. With ``full`` ranking among 40 items per domain, chance Hit@10 is
    about 0.25; the rule gives 1.0.
    """
    rng = np.random.default_rng(seed)
    cycle = [f"{domain}{index}" for index in range(items_per_domain) for domain in "ab"]
    rows = []
    for user in range(n_users):
        start = int(rng.integers(len(cycle)))
        for step in range(length):
            rows.append((f"u{user}", cycle[(start + step) % len(cycle)], 1_000_000 + user * 1000 + step))
    items = sorted(cycle)
    write_dataset(root, name, rows, {"item_id:token": items, "domain:token": [item[0] for item in items]})
    return name


def tiny_config(root, **overrides):
    """A config dict for fast test runs on a dataset under ``root``."""
    config = {
        "data_path": str(root),
        "checkpoint_dir": str(Path(root) / "saved"),
        "epochs": 1,
        "train_batch_size": 128,
        "eval_batch_size": 512,
        "MAX_ITEM_LIST_LENGTH": 10,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": [1, 5, 10],
        "valid_metric": "MRR",
        "show_progress": False,
        "state": "WARNING",
        "use_gpu": False,
    }
    config.update(overrides)
    return config


def assert_learns_known_answer(model, root, config_dict=None, min_hit10=0.6):
    """Train ``model`` on the known-answer data; every domain's test Hit@10 must reach ``min_hit10``.

    Chance is about 0.25, so a model that learns nothing fails. Returns the run's result dict.
    """
    name = known_answer_dataset(root)
    config = tiny_config(root, **{"epochs": 10, "learning_rate": 0.005, "stopping_step": 2, **(config_dict or {})})
    result = run(model=model, dataset=name, config_dict=config)
    test = result["test_result"]
    for domain in ("a", "b"):
        assert test[f"hit@10/{domain}"] >= min_hit10, f"{model} did not learn the known answer: {dict(test)}"
    return result
