"""Seconds per training epoch and peak memory of TEMA, LLMEMF and SASRec on the same data.

Data: the built-in two-domain ml-100k-cd (943 users, 1,682 movies, each user's last 50 ratings:
39,929 interactions), enriched into
``ml-100k-cdf``: ``tags`` = the movie's real ml-100k genres (uniform ``tag_weights``) and synthetic
frozen features (seeded Gaussian ``text_emb`` 384-d, ``clip_txt`` / ``clip_img`` 512-d, every tenth
item with an empty ``clip_img``). The features are random: this measures cost, not accuracy.

Each run is its own subprocess (so its peak RSS is its own) through the plugin's config, data
preparation, model and trainer; every model gets the same hidden size, layers, batch and sequence
length. On an idle machine time whole epochs (``--batches 0``); on a shared one, time a few batches
over interleaved rounds and read the median. The parent stops launching runs when the wall-clock
budget is spent, and writes the table (machine, command, timing, wall time) to ``--out`` under a
temporary name, then renames it.

    python benchmarks/bench_models.py --interleaved-batches 6 --batches 3 --rounds 1 --budget-min 25
"""

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from recbole_tema.benchmark.machine import describe_machine, load_average

DATASET = "ml-100k-cdf"
COMMON = {
    "hidden_size": 64,
    "inner_size": 256,
    "n_layers": 2,
    "n_heads": 2,
    "train_batch_size": 2048,
    "eval_batch_size": 2048,
    "MAX_ITEM_LIST_LENGTH": 50,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
    "metrics": ["Hit", "NDCG", "MRR"],
    "topk": [10],
    "valid_metric": "MRR",
    "show_progress": False,
    "state": "WARNING",
    "seed": 2020,
}


def _read_atomic(path):
    with open(path, encoding="utf-8") as handle:
        header = [column.split(":")[0] for column in handle.readline().rstrip("\n").split("\t")]
        return [dict(zip(header, line.rstrip("\n").split("\t"))) for line in handle]


def _vector(rng, dim):
    return " ".join(f"{rng.gauss(0.0, 1.0):.4f}" for _ in range(dim))


def build_dataset(root):
    """Writes ``root/ml-100k-cdf/`` from the built-in ml-100k-cd plus genres and synthetic features."""
    import recbole

    from recbole_tema.data.builtin import build_ml100k_cd

    source = Path(root) / "ml-100k-cd"
    build_ml100k_cd(source)
    genres = {row["item_id"]: row["class"].split() for row in _read_atomic(
        Path(recbole.__file__).parent / "dataset_example" / "ml-100k" / "ml-100k.item")}
    folder = Path(root) / DATASET
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    with open(folder / f"{DATASET}.item", "w", encoding="utf-8") as out:
        out.write("item_id:token\tdomain:token\ttags:token_seq\ttag_weights:float_seq\t"
                  "text_emb:float_seq\tclip_txt:float_seq\tclip_img:float_seq\n")
        for index, row in enumerate(_read_atomic(source / "ml-100k-cd.item")):
            tags = [genre.lower() for genre in genres[row["item_id"]]]
            weights = " ".join(f"{1 / len(tags):.4f}" for _ in tags)
            image = "" if index % 10 == 0 else _vector(rng, 512)
            out.write(f"{row['item_id']}\t{row['domain']}\t{' '.join(tags)}\t{weights}\t"
                      f"{_vector(rng, 384)}\t{_vector(rng, 512)}\t{image}\n")
    os.replace(source / "ml-100k-cd.inter", folder / f"{DATASET}.inter")
    return str(root)


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(model_name, data_path, batches):
    """Times ``batches`` training steps of one model (0: one whole epoch); prints one JSON line.

    A first, untimed step warms up; the steps are RecBole's own (``trainer._train_epoch`` for a
    whole epoch, else the same calculate_loss / backward / optimizer step on the first batches).
    """
    import torch
    from recbole.utils import init_seed

    from recbole_tema.config import Config
    from recbole_tema.quick_start import build_trainer, prepare_data
    from recbole_tema.registry import get_model

    config = Config(model=model_name, dataset=DATASET, config_dict={**COMMON, "data_path": data_path,
                                                                  "checkpoint_dir": tempfile.mkdtemp()})
    init_seed(config["seed"], config["reproducibility"])
    _, train_data, valid_data, _ = prepare_data(config)
    data_rss = rss_mib()
    init_seed(config["seed"], config["reproducibility"])
    model = get_model(model_name)(config, train_data._dataset)
    trainer = build_trainer(config, model, train_data)
    loader = iter(train_data)
    steps = [next(loader) for _ in range(1 + (batches or 0))]

    def step(interaction):
        model.train()
        trainer.optimizer.zero_grad()
        loss = model.calculate_loss(interaction)
        loss.backward()
        trainer.optimizer.step()
        return loss.item()

    step(steps[0])
    load = os.getloadavg()[0]
    start = time.perf_counter()
    if batches:
        for interaction in steps[1:]:
            step(interaction)
        seconds = (time.perf_counter() - start) / batches
    else:
        trainer._train_epoch(train_data, 0, show_progress=False)
        seconds = (time.perf_counter() - start) / len(train_data)
    print(json.dumps({
        "model": model_name,
        "params": sum(p.numel() for p in model.parameters()),
        "seconds_per_batch": seconds,
        "batches_per_epoch": len(train_data),
        "timed_batches": batches or len(train_data),
        "load_avg": load,
        "data_rss_mib": data_rss,
        "peak_rss_mib": rss_mib(),
        "threads": torch.get_num_threads(),
    }))


def interleaved(model_names, data_path, batches):
    """Times the models in one process, one training step of each in turn on the same batches.

    Load from other processes changes over seconds to minutes; alternating single steps exposes
    every model to the same load, so the ratios hold on a shared machine. Prints one JSON line.
    """
    import torch
    from recbole.utils import init_seed

    from recbole_tema.config import Config
    from recbole_tema.quick_start import prepare_data
    from recbole_tema.registry import get_model

    steps, models = None, {}
    for name in model_names:
        config = Config(model=name, dataset=DATASET, config_dict={**COMMON, "data_path": data_path,
                                                                "checkpoint_dir": tempfile.mkdtemp()})
        init_seed(config["seed"], config["reproducibility"])
        if steps is None:
            _, train_data, _, _ = prepare_data(config)
            loader = iter(train_data)
            steps = [next(loader) for _ in range(1 + batches)]
        model = get_model(name)(config, train_data._dataset)
        models[name] = (model, torch.optim.Adam(model.parameters(), lr=config["learning_rate"]))
    wall = {name: 0.0 for name in models}
    cpu = {name: 0.0 for name in models}
    for index, interaction in enumerate(steps):
        for name, (model, optimizer) in models.items():
            model.train()
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            optimizer.zero_grad()
            model.calculate_loss(interaction).backward()
            optimizer.step()
            if index:  # the first step of each model is a warm-up
                wall[name] += time.perf_counter() - start_wall
                cpu[name] += time.process_time() - start_cpu
    print(json.dumps({"batches": batches, "batches_per_epoch": len(train_data),
                      "wall": {n: t / batches for n, t in wall.items()},
                      "cpu": {n: t / batches for n, t in cpu.items()}}))


def _median(values):
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def write_table(out, runs, together, header_lines):
    lines = list(header_lines)
    if together:
        base = together["wall"].get("SASRec")
        lines += [
            "",
            f"## Interleaved in one process ({together['batches']} timed batches per model, one step of each in turn)",
            "",
            "| model | wall s / batch | CPU s / batch | s / epoch (batches x wall) | vs SASRec (wall) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, seconds in together["wall"].items():
            ratio = f"{seconds / base:.2f}x" if base else "-"
            lines.append(f"| {name} | {seconds:.2f} | {together['cpu'][name]:.2f} | "
                         f"{seconds * together['batches_per_epoch']:.0f} ({together['batches_per_epoch']} batches) | {ratio} |")
    lines += [
        "",
        "## Separate processes (peak memory; timing per process)",
        "",
        "| model | parameters | s / batch (median of rounds) | each round (s / batch) | s / epoch (batches x median) | peak RSS (MiB) | RSS after data (MiB) | vs SASRec |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    models = list(dict.fromkeys(run["model"] for run in runs))
    median = {m: _median([r["seconds_per_batch"] for r in runs if r["model"] == m]) for m in models}
    for m in models:
        mine = [r for r in runs if r["model"] == m]
        ratio = f"{median[m] / median['SASRec']:.2f}x" if "SASRec" in median else "-"
        each = ", ".join(f"{r['seconds_per_batch']:.2f}" for r in mine)
        epoch = median[m] * mine[0]["batches_per_epoch"]
        lines.append(
            f"| {m} | {mine[0]['params']:,} | {median[m]:.2f} | {each} | {epoch:.0f} ({mine[0]['batches_per_epoch']} batches) | "
            f"{max(r['peak_rss_mib'] for r in mine):.0f} | {mine[0]['data_rss_mib']:.0f} | {ratio} |"
        )
    out = Path(out)
    temporary = out.with_name(f".{out.name}.tmp")
    temporary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(temporary, out)
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["SASRec", "TEMA", "LLMEMF"])
    parser.add_argument("--batches", type=int, default=0, help="timed training batches per run (0: a whole epoch)")
    parser.add_argument("--rounds", type=int, default=1, help="separate-process runs of every model, interleaved")
    parser.add_argument("--interleaved-batches", type=int, default=0,
                        help="also time this many batches per model in one process, alternating models")
    parser.add_argument("--interleaved", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--budget-min", type=float, default=25.0)
    parser.add_argument("--out", default="benchmarks/results/model_cost.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data-path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.interleaved:
        interleaved(args.models, args.data_path, args.interleaved_batches)
        return
    if args.child:
        child(args.child, args.data_path, args.batches)
        return

    started = time.time()
    deadline = started + args.budget_min * 60
    timed = f"{args.batches} training batches" if args.batches else "one whole training epoch"
    header = [
        "# Training cost of TEMA, LLMEMF and SASRec on the same data",
        "",
        f"- machine: {describe_machine()}, load average at start {load_average():.1f}; date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- data: {DATASET} (ml-100k-cd + real genres as tags, synthetic frozen text/CLIP features), "
        f"hidden 64, 2 layers, 2 heads, batch 2048, max length 50, CE loss, Adam",
        f"- timing: each run is a fresh process (its own peak RSS) that times {timed} after one "
        f"untimed warm-up batch; {args.rounds} round(s), models interleaved within each round, so "
        f"load from other processes hits every model alike",
    ]
    runs, skipped, together = [], [], None
    with tempfile.TemporaryDirectory() as root:
        data_path = build_dataset(root)
        if args.interleaved_batches:
            command = [sys.executable, __file__, "--interleaved", "--models", *args.models, "--data-path", data_path,
                       "--interleaved-batches", str(args.interleaved_batches)]
            try:
                done = subprocess.run(command, capture_output=True, text=True, check=True,
                                      timeout=max(deadline - time.time(), 1))
                together = json.loads(done.stdout.strip().splitlines()[-1])
                print(together, flush=True)
            except subprocess.TimeoutExpired:
                skipped.append("interleaved timing")
            except subprocess.CalledProcessError as error:
                raise SystemExit(f"interleaved timing failed:\n{error.stderr[-3000:]}")
        for _ in range(args.rounds):
            for model_name in args.models:
                left = deadline - time.time()
                if left <= 0:
                    skipped.append(model_name)
                    continue
                command = [sys.executable, __file__, "--child", model_name, "--data-path", data_path,
                           "--batches", str(args.batches)]
                try:
                    done = subprocess.run(command, capture_output=True, text=True, timeout=left, check=True)
                except subprocess.TimeoutExpired:
                    skipped.append(model_name)
                    continue
                except subprocess.CalledProcessError as error:
                    raise SystemExit(f"{model_name} failed:\n{error.stderr[-3000:]}")
                runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(runs[-1], flush=True)
    loads = ", ".join(f"{r['load_avg']:.1f}" for r in runs)
    header.append(f"- load average when each run started timing: {loads}")
    header.append(f"- wall time of the whole run: {(time.time() - started) / 60:.1f} min (budget {args.budget_min} min)")
    if skipped:
        header.append(f"- runs not made (budget spent): {', '.join(skipped)}")
    write_table(args.out, runs, together, header)


if __name__ == "__main__":
    main()
