"""C2DSR on the Amazon Food-Kitchen split under the sampled 999-negative protocol, within a wall-time budget.

Trains through the plugin's pipeline (config -> data -> model -> cross-domain trainer, as
`run_recbole` does), validates every epoch, stops before an epoch that would overrun the budget,
tests the best-validation-MRR model, and writes per-domain HR@5, HR@10, NDCG@10 and MRR next to
the numbers ABXI (WWW'25) publishes for itself (its README, v2.1, mean of 5 seeds).

    python benchmarks/bench_c2dsr.py --budget-min 30 --out benchmarks/results_c2dsr.md [--set key=value ...]

A converged CPU run takes hours: ``--checkpoint-dir DIR`` keeps the best checkpoint, and a later run
with ``--resume DIR/<file>.pth`` (same settings) trains on from it within a new budget.

Data: ``--data-path DIR`` holding ``DIR/afk/afk.inter`` and ``afk.item`` (e.g. from
``python -m atomic_data_builders split --input ../shared/data/amazon-food-kitchen --output-dir DIR --dataset afk``);
without it, ID-only atomic files are written to a temporary folder from ``--source``.
"""

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from recbole.utils import init_logger, init_seed

from recbole_tema.config import Config
from recbole_tema.quick_start import build_trainer, prepare_data
from recbole_tema.registry import get_model

REPO_ROOT = Path(__file__).resolve().parents[1]
PUBLISHED_ABXI = {  # ABXI README v2.1, mean of 5 seeds: HR@5, HR@10, NDCG@10, MRR
    "food": (0.2519, 0.3243, 0.1971, 0.1655),
    "kitchen": (0.1745, 0.2438, 0.1427, 0.1219),
}
KEYS = ("hit@5", "hit@10", "ndcg@10", "mrr")


class BudgetSpent(Exception):
    """Raised before an epoch that would end past the wall-time budget."""


def write_afk(source, root):
    """ID-only ``root/afk/afk.{inter,item}`` from the shared files (``uid item|ts ...`` lines, item map).

    Timestamps are day index * 64 + position in the user's line: strictly increasing in the file's
    (true) order and exactly representable in float32, the type RecBole stores them in.
    """
    folder = Path(root) / "afk"
    folder.mkdir(parents=True, exist_ok=True)
    with open(Path(source) / "map_item_50.txt", encoding="utf-8") as handle:
        domain_of = {item: ("food", "kitchen")[domain] for item, domain in json.load(handle).values()}
    with open(folder / "afk.item.part", "w", encoding="utf-8") as out:
        out.write("item_id:token\tdomain:token\n")
        out.writelines(f"{item}\t{domain_of[item]}\n" for item in sorted(domain_of))
    with open(Path(source) / "afk_50_preprocessed.txt", encoding="utf-8") as lines, open(
        folder / "afk.inter.part", "w", encoding="utf-8"
    ) as out:
        out.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for line in lines:
            user, *events = line.split()
            for position, event in enumerate(events):
                item, stamp = event.split("|")
                out.write(f"{user}\t{item}\t{int(float(stamp)) // 86400 * 64 + position}\n")
    os.replace(folder / "afk.item.part", folder / "afk.item")
    os.replace(folder / "afk.inter.part", folder / "afk.inter")
    return root


def train_within_budget(config_dict, budget_s, resume=None):
    config = Config(model="C2DSR", dataset="afk", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    _, train_data, valid_data, test_data = prepare_data(config)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model("C2DSR")(config, train_data._dataset).to(config["device"])
    trainer = build_trainer(config, model, train_data)
    if resume:
        trainer.resume_checkpoint(resume)  # continues after the checkpoint's epoch, same optimizer state

    start = time.time()
    curve = []  # one dict per epoch: loss, seconds, validation result
    train_epoch, evaluate = trainer._train_epoch, trainer.evaluate

    def budgeted_train_epoch(train_data, epoch_idx, *args, **kwargs):
        slowest = max((row["train_s"] + row.get("valid_s", 0.0) for row in curve), default=0.0)
        if curve and time.time() - start + slowest > budget_s:
            raise BudgetSpent
        began = time.time()
        loss = train_epoch(train_data, epoch_idx, *args, **kwargs)
        curve.append({"epoch": epoch_idx + 1, "loss": float(loss), "train_s": time.time() - began})
        return loss

    def recorded_evaluate(eval_data, *args, **kwargs):
        began = time.time()
        result = evaluate(eval_data, *args, **kwargs)
        if getattr(eval_data, "cd_phase", None) == "valid" and curve:
            curve[-1].update(valid=dict(result), valid_s=time.time() - began)
        return result

    trainer._train_epoch, trainer.evaluate = budgeted_train_epoch, recorded_evaluate
    stopped = "configured epochs or early stopping"
    try:
        trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    except BudgetSpent:
        stopped = "wall-time budget"
    train_s = time.time() - start
    test = trainer.evaluate(test_data, load_best_model=True)
    n_params = sum(p.numel() for p in model.parameters())
    return config, curve, dict(test), train_s, stopped, n_params


def report(command, config, curve, test, train_s, stopped, n_params):
    best = max(curve, key=lambda row: row.get("valid", {}).get("mrr", -1.0)) if curve else None
    settings = ", ".join(
        f"{key}={config[key]}"
        for key in (
            "hidden_size", "n_layers", "n_heads", "gnn_layers", "dropout_prob", "loss_lambda",
            "full_sequence_training", "loss_positions", "MAX_ITEM_LIST_LENGTH", "train_batch_size",
            "learning_rate", "weight_decay", "seed",
        )
    )
    lines = [
        "# C2DSR on Amazon Food-Kitchen (sampled 999 in-domain negatives)",
        "",
        f"- Command: `python benchmarks/bench_c2dsr.py {command}`",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, no GPU",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Settings: {settings}; {n_params:,} parameters",
        f"- Ran {len(curve)} epochs in {train_s / 60:.1f} min (training + validation), stopped by the {stopped}; "
        f"test at the best validation MRR (epoch {best['epoch'] if best else '-'}).",
        "- The authors train 100 epochs: a budget-limited run is a partial result, not C2DSR's converged accuracy.",
        "",
        "## Test, next to ABXI's published numbers",
        "",
        "| domain | model | HR@5 | HR@10 | NDCG@10 | MRR |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for domain, published in PUBLISHED_ABXI.items():
        ours = [test.get(f"{key}/{domain}", float("nan")) for key in KEYS]
        lines.append(f"| {domain} | C2DSR, this run | " + " | ".join(f"{v:.4f}" for v in ours) + " |")
        lines.append(f"| {domain} | ABXI v2.1, published | " + " | ".join(f"{v:.4f}" for v in published) + " |")
    lines += [
        "",
        "## Learning curve (validation, same protocol)",
        "",
        "| epoch | train loss | train s | valid s | MRR food | MRR kitchen | HR@10 food | HR@10 kitchen |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in curve:
        valid = row.get("valid", {})
        lines.append(
            f"| {row['epoch']} | {row['loss']:.4f} | {row['train_s']:.0f} | {row.get('valid_s', 0.0):.0f} | "
            + " | ".join(f"{valid.get(k, float('nan')):.4f}" for k in ("mrr/food", "mrr/kitchen", "hit@10/food", "hit@10/kitchen"))
            + " |"
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", help="folder holding afk/afk.inter and afk/afk.item")
    parser.add_argument("--source", default=str(REPO_ROOT.parent / "shared" / "data" / "amazon-food-kitchen"))
    parser.add_argument("--budget-min", type=float, default=30.0, help="wall-time budget for training + validation")
    parser.add_argument("--out", help="markdown file to write the table to")
    parser.add_argument("--checkpoint-dir", help="keep checkpoints here (default: a temporary folder), to --resume later")
    parser.add_argument("--resume", help="checkpoint written by an earlier run with the same settings, to train on from")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (YAML values)")
    args = parser.parse_args()
    command = " ".join(shlex.quote(a) for a in sys.argv[1:])
    sys.argv[1:] = []  # RecBole's Config parses `--key=value` from the command line: hide ours from it.

    with tempfile.TemporaryDirectory() as scratch:
        data_path = args.data_path or write_afk(args.source, Path(scratch) / "data")
        config_dict = {
            "data_path": str(data_path),
            "checkpoint_dir": str(args.checkpoint_dir or Path(scratch) / "saved"),
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni999"},
            "metrics": ["Hit", "NDCG", "MRR"],
            "topk": [5, 10],
            "valid_metric": "MRR",
            "show_progress": False,
            "use_gpu": False,
        }
        for key, value in (pair.split("=", 1) for pair in args.set):
            config_dict[key] = yaml.safe_load(value)
        results = train_within_budget(config_dict, args.budget_min * 60, args.resume)
    text = report(command, *results)
    print(text)
    if args.out:
        out = Path(args.out)
        out.with_suffix(".part").write_text(text, encoding="utf-8")
        os.replace(out.with_suffix(".part"), out)


if __name__ == "__main__":
    main()
