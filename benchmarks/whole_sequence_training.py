"""What whole-sequence training buys on Amazon Food-Kitchen: epoch cost, memory, profile, accuracy per minute.

    python benchmarks/whole_sequence_training.py [--curve-min 8] [--prefix-curve-min 18] [--skip-curves]

1. Seconds of one training epoch and peak RSS of TEMA (``train_rows: sequence``, its defaults), TEMA
   (``train_rows: prefix``) and RecBole's SASRec, each in a fresh process, one after another.
2. A cProfile of one TEMA epoch (sequence rows): its top entries.
3. Learning curves (validation MRR after each epoch against wall-clock minutes) of the runs in
   ``examples/whole_sequence_training.yaml``, trained by ``python -m recbole_tema.benchmark`` (resumable), and
   the minutes each run needs to reach the prefix run's validation MRR after 4 epochs.
Writes ``benchmarks/results/whole_sequence_training.md``. Parts already measured are kept in
``benchmarks/work/whole_sequence/cost.json`` and not measured again (delete it to re-measure).
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CURVES_CONFIG = REPO / "examples" / "whole_sequence_training.yaml"
RESULTS = REPO / "benchmarks" / "results" / "whole_sequence_training.md"
COST_RUNS = {
    "TEMA (sequence rows, 64 users a step: its defaults)": {"model": "TEMA"},
    "TEMA (prefix rows, 2048 rows a step)": {"model": "TEMA", "train_rows": "prefix", "train_batch_size": 2048},
    "SASRec (RecBole's defaults, 2048 rows a step)": {"model": "SASRec"},
}
PROFILED = "TEMA (sequence rows, 64 users a step: its defaults)"
PREFIX_RUN, PREFIX_EPOCHS = "TEMA-prefix", 4


def _spec():
    return yaml.safe_load(CURVES_CONFIG.read_text())


def _config(overrides):
    from recbole_tema.config import Config

    spec = _spec()
    settings = {**spec["settings"], "epochs": 1, "data_path": str(REPO / spec["work_dir"] / "data")}
    settings["checkpoint_dir"] = str(REPO / spec["work_dir"] / "cost")
    model = overrides["model"]
    return Config(model=model, dataset=spec["dataset"], config_dict={**settings, **{k: v for k, v in overrides.items() if k != "model"}})


def one_epoch(name, profile):
    """Child process: train one epoch of a cost run; print a JSON line with its cost."""
    from recbole.utils import init_seed

    from recbole_tema.quick_start import build_trainer, prepare_data

    config = _config(COST_RUNS[name])
    init_seed(config["seed"], config["reproducibility"])
    _, train_data, _, _ = prepare_data(config)
    model = config.model_class(config, train_data._dataset).to(config["device"])
    trainer = build_trainer(config, model, train_data)
    profiler = cProfile.Profile() if profile else None
    began = time.perf_counter()
    if profiler:
        profiler.enable()
    trainer._train_epoch(train_data, 0, show_progress=False)
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - began
    out = {
        "seconds": round(seconds, 1),
        "rows": len(train_data._dataset),
        "steps": len(train_data),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "load": round(os.getloadavg()[0], 2),
    }
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(15)
        # file names relative to the repository and site-packages: no machine's paths in the results
        out["profile"] = re.sub(r"\S*/site-packages/", "site-packages/", text.getvalue().replace(f"{REPO}/", ""))
    print("COST " + json.dumps(out), flush=True)


def _measure(name, profile=False):
    argv = [sys.executable, __file__, "--child", name] + (["--profile"] if profile else [])
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("COST ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{name}: the epoch failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][5:])


def _curves(curve_min, prefix_curve_min):
    from recbole_tema.benchmark.__main__ import main as benchmark_main

    config = str(CURVES_CONFIG.relative_to(REPO))
    benchmark_main(["--config", config, "--runs", PREFIX_RUN, "--run-budget-min", str(prefix_curve_min)])
    others = [name for name in _spec()["runs"] if name != PREFIX_RUN]
    benchmark_main(["--config", config, "--runs", *others, "--run-budget-min", str(curve_min)])


def _states():
    spec = _spec()
    states = {}
    for name in spec["runs"]:
        path = REPO / spec["work_dir"] / "runs" / name / "state.json"
        if path.exists():
            states[name] = json.loads(path.read_text())
    return states


def _minutes_to_reach(state, target):
    elapsed = 0.0
    for entry in state["curve"]:
        elapsed += entry["seconds"]
        if entry["valid"]["mrr"] >= target:
            return elapsed / 60, entry["epoch"]
    return None, None


def _report(cost, machine):
    lines = [
        "# Whole-sequence training on Amazon Food-Kitchen",
        "",
        f"Command: `python benchmarks/whole_sequence_training.py`. Machine: {machine}. Dataset: the split converter "
        "with `--tags none` (MiniLM `text_emb` on, no CLIP), 7,144 users, 28,095 items. Date: "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "## One training epoch, each model in a fresh process (run one after another)",
        "",
        "| run | rows | steps | s / epoch | vs SASRec | peak RSS (GiB) | load avg at end |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    sasrec = next((row["seconds"] for name, row in cost["epochs"].items() if name.startswith("SASRec")), None)
    for name, row in cost["epochs"].items():
        ratio = f"{row['seconds'] / sasrec:.2f}x" if sasrec else ""
        lines.append(
            f"| {name} | {row['rows']:,} | {row['steps']} | {row['seconds']:.1f} | {ratio} | {row['peak_rss_gib']:.2f} | {row['load']} |"
        )
    if "profile" in cost:
        lines += ["", f"## Profile of one epoch: {PROFILED} (cProfile, top 15 by own time)", "", "```"]
        lines += [line for line in cost["profile"].strip().splitlines() if line.strip()][:40]
        lines += ["```"]
    states = _states()
    prefix = states.get(PREFIX_RUN)
    if prefix and len(prefix["curve"]) >= PREFIX_EPOCHS:
        target = prefix["curve"][PREFIX_EPOCHS - 1]["valid"]["mrr"]
        prefix_min = sum(entry["seconds"] for entry in prefix["curve"][:PREFIX_EPOCHS]) / 60
        lines += [
            "",
            f"## Validation MRR per wall-clock minute (curves: [{CURVES_CONFIG.name}](../../examples/{CURVES_CONFIG.name}))",
            "",
            f"Target: {PREFIX_RUN}'s validation MRR after {PREFIX_EPOCHS} epochs, {target:.4f}, reached in "
            f"{prefix_min:.1f} min. Minutes are training + validation wall time, summed over epochs.",
            "",
            "| run | epochs run | best valid MRR | at epoch | min to reach target | epoch | vs prefix | s / epoch | status |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, state in states.items():
            minutes, epoch = _minutes_to_reach(state, target)
            best = max(entry["valid"]["mrr"] for entry in state["curve"]) if state["curve"] else float("nan")
            best_at = next((e["epoch"] for e in state["curve"] if e["valid"]["mrr"] == best), None)
            seconds = sum(e["seconds"] for e in state["curve"]) / max(len(state["curve"]), 1)
            status = f"done ({state['stop']})" if state["finished"] else "partial (budget)"
            reach = f"{minutes:.1f}" if minutes is not None else "not reached"
            ratio = f"{minutes / prefix_min:.2f}x" if minutes is not None else ""
            lines.append(
                f"| {name} | {len(state['curve'])} | {best:.4f} | {best_at} | {reach} | {epoch or ''} | {ratio} | "
                f"{seconds:.0f} | {status} |"
            )
        reached = {name: _minutes_to_reach(state, target)[0] for name, state in states.items() if name != PREFIX_RUN}
        reached = {name: minutes for name, minutes in reached.items() if minutes is not None}
        if reached:
            fastest = min(reached, key=reached.get)
            lines += ["", f"Fastest to the target: {fastest}, {reached[fastest]:.1f} min, "
                      f"{reached[fastest] / prefix_min:.2f}x the prefix run's time."]
        lines += ["", "Per-epoch curves (validation MRR @ seconds of the epoch): " + "; ".join(
            f"{name}: " + ", ".join(f"{e['valid']['mrr']:.4f}@{e['seconds']:.0f}s" for e in state["curve"])
            for name, state in states.items()
        )]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    from atomic_data_builders.atomic import atomic_open

    with atomic_open(RESULTS) as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--curve-min", type=float, default=8.0, help="wall-clock budget of each curve run")
    parser.add_argument("--prefix-curve-min", type=float, default=18.0, help="budget of the prefix-rows curve run")
    parser.add_argument("--skip-curves", action="store_true", help="measure epochs and the profile only")
    args = parser.parse_args()
    if args.child:
        return one_epoch(args.child, args.profile)

    from recbole_tema.benchmark.machine import describe_machine
    from recbole_tema.benchmark.runner import build_dataset

    spec = _spec()
    spec["work_dir"] = str(REPO / spec["work_dir"])
    spec["source"] = str((REPO / spec["source"]).resolve())
    build_dataset(spec)
    cost_file = Path(spec["work_dir"]) / "cost.json"
    cost = json.loads(cost_file.read_text()) if cost_file.exists() else {"epochs": {}}
    for name in COST_RUNS:
        if name not in cost["epochs"]:
            print(f"== one epoch: {name}", flush=True)
            cost["epochs"][name] = _measure(name)
            cost_file.write_text(json.dumps(cost, indent=1))
    if "profile" not in cost:
        print(f"== profile: {PROFILED}", flush=True)
        cost["profile"] = _measure(PROFILED, profile=True)["profile"]
        cost_file.write_text(json.dumps(cost, indent=1))
    if not args.skip_curves:
        os.chdir(REPO)
        _curves(args.curve_min, args.prefix_curve_min)
    _report(cost, describe_machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
