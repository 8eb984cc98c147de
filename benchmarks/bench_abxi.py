"""ABXI on the Amazon Food-Kitchen split under the sampled 999-negative protocol, within a wall-time budget.

Trains through the plugin's pipeline (the one `run_recbole` uses), records every validation, stops
before an epoch that would overrun the budget, tests the best-validation model, and writes a table
next to ABXI's published numbers (its README, v2.1, mean of 5 seeds).

    python benchmarks/bench_abxi.py --budget-min 25 --out benchmarks/results_abxi.md [--set key=value ...]

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
PUBLISHED = {  # ABXI README v2.1, mean of 5 seeds: HR@5, HR@10, NDCG@10, MRR
    "food": (0.2519, 0.3243, 0.1971, 0.1655),
    "kitchen": (0.1745, 0.2438, 0.1427, 0.1219),
}
KEYS = ("hit@5", "hit@10", "ndcg@10", "mrr")
CURVE_KEYS = ("mrr/food", "mrr/kitchen", "hit@10/food", "hit@10/kitchen")


class BudgetSpent(Exception):
    """Raised before an epoch that would end past the wall-time budget."""


def write_id_only_afk(source, root):
    """``root/afk/afk.{inter,item}`` from the shared ABXI files (item id and domain only).

    Timestamps are day index * 64 + position in the user's line: the file order (the true order, also
    within a day) is kept, strictly increasing and exact in float32.
    """
    folder = Path(root) / "afk"
    folder.mkdir(parents=True, exist_ok=True)
    with open(Path(source) / "map_item_50.txt", encoding="utf-8") as handle:
        item_domain = {value[0]: ("food" if value[1] == 0 else "kitchen") for value in json.load(handle).values()}
    with open(folder / "afk.item.part", "w", encoding="utf-8") as out:
        out.write("item_id:token\tdomain:token\n")
        out.writelines(f"{item}\t{item_domain[item]}\n" for item in sorted(item_domain))
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


def parse_overrides(pairs):
    return {key: yaml.safe_load(value) for key, value in (pair.split("=", 1) for pair in pairs)}


def train_within_budget(config_dict, budget_s):
    config = Config(model="ABXI", dataset="afk", config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    _, train_data, valid_data, test_data = prepare_data(config)
    init_seed(config["seed"], config["reproducibility"])
    model = get_model("ABXI")(config, train_data._dataset).to(config["device"])
    trainer = build_trainer(config, model, train_data)

    start = time.time()
    curve, durations = [], []
    train_epoch, evaluate = trainer._train_epoch, trainer.evaluate

    def timed_train_epoch(*args, **kwargs):
        if durations and time.time() - start + max(durations) > budget_s:
            raise BudgetSpent
        began = time.time()
        loss = train_epoch(*args, **kwargs)
        curve.append({"epoch": len(curve) + 1, "loss": float(loss), "train_s": time.time() - began})
        return loss

    def recorded_evaluate(eval_data, *args, **kwargs):
        began = time.time()
        result = evaluate(eval_data, *args, **kwargs)
        if getattr(eval_data, "cd_phase", None) == "valid" and curve:
            curve[-1].update(valid=dict(result), valid_s=time.time() - began)
            durations.append(curve[-1]["train_s"] + curve[-1]["valid_s"])
        return result

    trainer._train_epoch, trainer.evaluate = timed_train_epoch, recorded_evaluate
    stopped = "epochs or early stopping"
    try:
        trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    except BudgetSpent:
        stopped = "wall-time budget"
    train_s = time.time() - start
    test = trainer.evaluate(test_data, load_best_model=True)
    n_params = sum(p.numel() for p in model.parameters())
    return config, curve, dict(test), train_s, stopped, n_params


def report(command, config, curve, test, train_s, stopped, n_params):
    best = max(curve, key=lambda row: row["valid"]["mrr"]) if curve else None
    lines = [
        "# ABXI on Amazon Food-Kitchen (sampled 999 in-domain negatives)",
        "",
        f"- Command: `python benchmarks/bench_abxi.py {command}`",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, no GPU",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Settings: train_objective={config['train_objective']}, train_batch_size={config['train_batch_size']}, "
        f"learning_rate={config['learning_rate']}, weight_decay={config['weight_decay']}, "
        f"embedding_size={config['embedding_size']}, dlora_rank={config['dlora_rank']}, "
        f"ilora_rank={config['ilora_rank']}, dropout_prob={config['dropout_prob']}, "
        f"MAX_ITEM_LIST_LENGTH={config['MAX_ITEM_LIST_LENGTH']}, seed={config['seed']}; {n_params:,} parameters",
        f"- Ran {len(curve)} epochs in {train_s / 60:.1f} min (training + validation), stopped by the {stopped}; "
        f"test at the best validation MRR (epoch {best['epoch'] if best else '-'}).",
        "",
        "## Test, next to ABXI's published numbers",
        "",
        "| domain | run | HR@5 | HR@10 | NDCG@10 | MRR |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for domain, published in PUBLISHED.items():
        ours = [test.get(f"{key}/{domain}", float("nan")) for key in KEYS]
        lines.append(f"| {domain} | this run | " + " | ".join(f"{v:.4f}" for v in ours) + " |")
        lines.append(f"| {domain} | ABXI v2.1 (published) | " + " | ".join(f"{v:.4f}" for v in published) + " |")
    lines += [
        "",
        "## Learning curve (validation, same protocol)",
        "",
        "| epoch | train loss (sum over batches) | train s | valid s | MRR food | MRR kitchen | HR@10 food | HR@10 kitchen |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in curve:
        valid = row.get("valid", {})
        lines.append(
            f"| {row['epoch']} | {row['loss']:.4f} | {row['train_s']:.0f} | {row.get('valid_s', 0):.0f} | "
            + " | ".join(f"{valid.get(k, float('nan')):.4f}" for k in CURVE_KEYS)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", help="folder holding afk/afk.inter and afk/afk.item")
    parser.add_argument("--source", default=str(REPO_ROOT.parent / "shared" / "data" / "amazon-food-kitchen"))
    parser.add_argument("--budget-min", type=float, default=25.0, help="wall-time budget for training + validation")
    parser.add_argument("--out", help="markdown file to write the table to")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (YAML values)")
    args = parser.parse_args()
    command = " ".join(shlex.quote(a) for a in sys.argv[1:])
    sys.argv[1:] = []  # RecBole's Config reads `--key=value` from the command line: give it none of ours.

    out = Path(args.out).resolve() if args.out else None
    home = Path.cwd()
    with tempfile.TemporaryDirectory() as scratch:
        if args.data_path:
            data_path = Path(args.data_path).resolve()
        else:
            data_path = write_id_only_afk(args.source, Path(scratch) / "data")
        os.chdir(scratch)  # RecBole writes log/ and log_tensorboard/ into the working directory
        config_dict = {
            "data_path": str(data_path),
            "checkpoint_dir": str(Path(scratch) / "saved"),
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "uni999"},
            "metrics": ["Hit", "NDCG", "MRR"],
            "topk": [5, 10],
            "valid_metric": "MRR",
            "show_progress": False,
            "use_gpu": False,
        }
        config_dict.update(parse_overrides(args.set))
        results = train_within_budget(config_dict, args.budget_min * 60)
        os.chdir(home)
    text = report(command, *results)
    print(text)
    if out:
        out.with_suffix(".part").write_text(text, encoding="utf-8")
        os.replace(out.with_suffix(".part"), out)


if __name__ == "__main__":
    main()
