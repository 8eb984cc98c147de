"""``python -m recbole_tema.benchmark``: build the dataset, train every run, write the tables and plots.

    python -m recbole_tema.benchmark --config examples/food_kitchen.yaml [--runs TEMA SASRec] [--no-ablations]
                                     [--budget-min 120] [--run-budget-min 20] [--report-only]

Every run is resumable (``<work_dir>/runs/<name>/``): a finished run is not trained again, an
interrupted or budget-stopped one continues from the epoch after its last checkpoint, and the tables
are rewritten from the stored states after every run.
"""

import argparse
import shlex
import sys
import time

from recbole_tema.benchmark.report import write_reports
from recbole_tema.benchmark.runner import Run, build_dataset, load_benchmark_config
from recbole_tema.errors import ConfigurationError


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="benchmark YAML (e.g. examples/food_kitchen.yaml)")
    parser.add_argument("--runs", nargs="*", help="run names to train, in this order (default: all in the config's order); "
                        "tables list every stored run")
    parser.add_argument("--no-ablations", action="store_true", help="skip the ablation runs")
    parser.add_argument("--budget-min", type=float, default=float("inf"), help="wall-time budget of this invocation")
    parser.add_argument("--run-budget-min", type=float, default=float("inf"),
                        help="wall-time budget of each run in this invocation (it resumes next time)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the tables from stored states, train nothing")
    args = parser.parse_args(argv)
    spec = load_benchmark_config(args.config)
    spec["command"] = " ".join(["python", "-m", "recbole_tema.benchmark"] + [shlex.quote(a) for a in (argv or sys.argv[1:])])
    data_path = build_dataset(spec)
    named = dict(spec["runs"])
    if not args.no_ablations:
        named.update(spec.get("ablations") or {})
    unknown = sorted(set(args.runs or []) - set(named))
    if unknown:
        raise SystemExit(f"unknown run(s) {unknown}; the config defines {sorted(named)}")
    try:  # every stored run is checked against the config once, before anything trains
        every = {name: Run(name, overrides, spec, data_path) for name, overrides in {**spec["runs"], **spec["ablations"]}.items()}
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    runs = [every[name] for name in named]
    if args.runs:  # in the order given
        runs = sorted(runs, key=lambda run: args.runs.index(run.name) if run.name in args.runs else len(args.runs))

    def report():  # every stored run, read again: another invocation may have finished runs meanwhile
        stored = [Run(name, overrides, spec, data_path) for name, overrides in {**spec["runs"], **spec["ablations"]}.items()]
        write_reports(spec, data_path, [run for run in stored if run.state])

    started = time.time()
    for run in runs:
        if args.report_only or run.finished or (args.runs and run.name not in args.runs):
            continue
        left = args.budget_min * 60 - (time.time() - started)
        if left <= 0:
            print(f"budget spent: {run.name} and the runs after it wait for the next invocation")
            break
        if not run.claim():
            print(f"{run.name}: another process is training it now; skipped", flush=True)
            continue
        try:
            if run.finished:  # finished by another process since this one started
                continue
            print(f"== {run.name} ({run.model})", flush=True)
            run.train(min(left, args.run_budget_min * 60))
        finally:
            run.release()
        report()
    report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
