"""Seconds per training epoch of SASRec: stock RecBole's quick start vs this plugin's run_recbole.

The difference is the autograd anomaly mode that importing RecBole's models switches on, and the
plugin switches off. Both runs use one config on ml-100k-cd, each in its own process.

    python benchmarks/anomaly_mode.py [--epochs 2] [--output benchmarks/results/anomaly_mode.md]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from recbole_tema.benchmark.machine import describe_machine

RUNNERS = {
    "stock RecBole (recbole.quick_start.run_recbole)": "from recbole.quick_start import run_recbole as run",
    "recbole-tema (recbole_tema.quick_start.run)": "from recbole_tema.quick_start import run",
}
EPOCH_LINE = re.compile(r"epoch (\d+) training \[time: ([0-9.]+)s")


def _config(data_path, epochs):
    return {
        "data_path": str(data_path),
        "epochs": epochs,
        "MAX_ITEM_LIST_LENGTH": 50,  # RecBole's default; the plugin's ml-100k-cd.yaml would set 20
        "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "domain"]},
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
        "train_neg_sample_args": None,
        "show_progress": False,
        "use_gpu": False,
    }


def _run(import_line, config, workdir):
    script = f"{import_line}\nrun(model='SASRec', dataset='ml-100k-cd', config_dict={config!r}, saved=False)\n"
    started = time.time()
    finished = subprocess.run([sys.executable, "-c", script], cwd=workdir, capture_output=True, text=True)
    wall = time.time() - started
    if finished.returncode != 0:
        raise RuntimeError(finished.stderr[-3000:])
    epochs = [float(seconds) for _, seconds in EPOCH_LINE.findall(finished.stdout + finished.stderr)]
    return epochs, wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "anomaly_mode.md"))
    args = parser.parse_args()

    from recbole_tema.data.builtin import ensure_builtin_dataset

    workdir = Path(tempfile.mkdtemp(prefix="anomaly-bench-"))
    ensure_builtin_dataset("ml-100k-cd", workdir / "ml-100k-cd")
    config = _config(workdir, args.epochs)
    load = os.getloadavg()[0]
    rows = []
    for name, import_line in RUNNERS.items():
        epochs, wall = _run(import_line, config, workdir)
        rows.append((name, sum(epochs) / len(epochs), epochs, wall))
        print(f"{name}: {epochs} s per epoch, {wall:.0f} s wall", flush=True)

    machine = f"{describe_machine()}, torch {torch.__version__}"
    lines = [
        "# SASRec seconds per training epoch: stock RecBole vs recbole-tema",
        "",
        f"Machine: {machine}; load average {load:.2f} before the run. Command: `python benchmarks/anomaly_mode.py --epochs {args.epochs}`.",
        "Dataset ml-100k-cd (39,929 interactions), SASRec defaults (hidden 64, 2 layers, CE, batch 2048,",
        f"MAX_ITEM_LIST_LENGTH 50), {args.epochs} epochs per run, each run in its own process.",
        "",
        "| runner | s / epoch (mean) | epochs (s) | run wall time (s) |",
        "| --- | --- | --- | --- |",
    ]
    for name, mean, epochs, wall in rows:
        lines.append(f"| {name} | {mean:.1f} | {', '.join(f'{e:.1f}' for e in epochs)} | {wall:.0f} |")
    lines += ["", f"Speed-up: {rows[0][1] / rows[1][1]:.2f}x"]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
