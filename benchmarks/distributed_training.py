"""Epoch time and peak memory of TEMA on Amazon Food-Kitchen with 1 and 2 processes (run_recbole --nproc).

    python benchmarks/distributed_training.py [--nproc 1 2] [--epochs 2] [--config examples/food_kitchen.yaml]

Each setting runs in a fresh process through the plugin's ``run`` (the path ``run_recbole --nproc=N``
takes): TEMA with its defaults on the benchmark's dataset (built by ``python -m recbole_tema.benchmark
--config examples/food_kitchen.yaml`` first), ``--epochs`` epochs, then validation and test. With N
processes each one trains on 1/N of the users a step and torch gets cores / N threads, so the global
batch and the CPU are the same; the table gives the seconds of each training epoch (rank 0's), the
peak RSS of the largest process and the test MRR. Writes ``benchmarks/results/distributed_training.md``.
Run it on an otherwise idle machine: the table states the load average next to every row.
"""

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "examples" / "food_kitchen.yaml"
RESULTS = REPO / "benchmarks" / "results" / "distributed_training.md"


def child(spec_file, nproc, epochs):
    """In a fresh process: one run with ``nproc`` processes; print a JSON line with its cost."""
    from recbole_tema.benchmark.runner import load_benchmark_config
    from recbole_tema.quick_start import run

    spec = load_benchmark_config(spec_file)
    config = {**spec["settings"], "epochs": epochs, "data_path": str(Path(spec["work_dir"]) / "data"),
              "checkpoint_dir": str(Path(spec["work_dir"]) / "distributed"), "state": "WARNING"}
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    began = time.perf_counter()
    result = run(model="TEMA", dataset=spec["dataset"], config_dict=config, nproc=nproc, port=port)
    peak_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(json.dumps({"nproc": nproc, "epoch_seconds": result["train_epoch_seconds"],
                      "total_seconds": round(time.perf_counter() - began, 1), "peak_rss_gib": round(peak_kib / 2 ** 20, 2),
                      "test_mrr": result["test_result"]["mrr"]}))


def _shown(path):
    """``path`` relative to the repository when it lies inside it (no machine's paths in the results)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--config", default=str(SPEC), help="benchmark YAML whose dataset and settings are used")
    parser.add_argument("--results", default=str(RESULTS), help="markdown file to write")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.config, args.child, args.epochs)

    from recbole_tema.benchmark.machine import describe_machine, load_average

    rows = []
    for nproc in args.nproc:
        threads = max(1, (os.cpu_count() or 1) // nproc)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        load = load_average()
        done = subprocess.run([sys.executable, __file__, "--child", str(nproc), "--epochs", str(args.epochs),
                               "--config", args.config], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the run with {nproc} process(es) failed:\n{done.stderr[-3000:]}")
        measured = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append({**measured, "threads": threads, "load": round(load, 2)})
        print(rows[-1], flush=True)
    base = rows[0]["epoch_seconds"][-1]
    lines = [
        "# TEMA: one process against several (run_recbole --nproc)", "",
        f"Machine: {describe_machine()}. Command: `python benchmarks/distributed_training.py "
        f"--nproc {' '.join(map(str, args.nproc))} --epochs {args.epochs} --config {_shown(args.config)}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        f"TEMA with the settings of that config (dataset `{yaml.safe_load(Path(args.config).read_text())['dataset']}`); the "
        "last epoch's training seconds (rank 0) are compared, the first includes warm-up effects.", "",
        "| processes | torch threads each | training s per epoch | vs 1 process | total s (train, valid, test) | "
        "peak RSS GiB (largest process) | test MRR | load before |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        last = row["epoch_seconds"][-1]
        lines.append(f"| {row['nproc']} | {row['threads']} | {', '.join(map(str, row['epoch_seconds']))} | "
                     f"{last / base:.2f}x | {row['total_seconds']} | {row['peak_rss_gib']} | {row['test_mrr']:.4f} | "
                     f"{row['load']} |")
    Path(args.results).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
