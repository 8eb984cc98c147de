"""One config for fast test runs, and the small model sizes the model tests use."""

from pathlib import Path


def tiny_config(data_path, **overrides):
    """A config dict for fast runs on a dataset under ``data_path``: leave-one-out, full ranking, 1 epoch."""
    config = {
        "data_path": str(data_path),
        "checkpoint_dir": str(Path(data_path) / "saved"),
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
        "log_wandb": False,
    }
    config.update(overrides)
    return config


# Small TEMA / LLMEMF sizes and a fixed seed: the model tests' settings on the feature datasets.
SMALL_MODEL = {
    "hidden_size": 16,
    "inner_size": 32,
    "n_layers": 1,
    "n_heads": 2,
    "train_batch_size": 64,
    "eval_batch_size": 64,
    "topk": [10],
    "metrics": ["Hit", "MRR"],
    "seed": 2024,
    "reproducibility": True,
}


def small_model_config(data_path, **overrides):
    """``tiny_config`` with ``SMALL_MODEL``: what the TEMA and LLMEMF tests train."""
    return tiny_config(data_path, **{**SMALL_MODEL, **overrides})
