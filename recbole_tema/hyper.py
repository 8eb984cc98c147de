"""``run_hyper``: RecBole's hyper-parameter search (``HyperTuning``) for plugin and RecBole models alike.

    run_hyper --model=TEMA --dataset=afk --params_file=tema.hyper [--config_files="a.yaml b.yaml"]
              [--algo=exhaustive|random|bayes] [--max_evals=N] [--output_file=tema_hyper.md]

The params file is RecBole's: one line per key, ``name choice [v1, v2]`` (or ``uniform``, ``loguniform``,
... as in RecBole's docs). Every trial trains through the plugin's pipeline (the one ``run_recbole``
uses) with early stopping on ``valid_metric`` and is judged on validation only: the test split is never
evaluated. After every trial the output file (markdown) is rewritten with all trials so far, best first,
and the trials are stored beside it (``<output_file stem>.trials.json``): a search run again with the same
command takes the trials it finds there instead of training them again, so a long search resumes. A
trial stopped midway is not lost either: it checkpoints every epoch under ``--resume_dir`` (default
``saved/run_hyper/<output_file stem>``, one folder per trial, deleted when the trial ends), and the same
command continues it from its last finished epoch.
"""

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

from atomic_data_builders.atomic import atomic_open
from recbole_tema.errors import ConfigurationError


def _parser():
    parser = argparse.ArgumentParser(prog="run_hyper", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params_file", required=True, help="RecBole params file: the search space")
    parser.add_argument("--config_files", default=None, help="fixed YAML files, separated by spaces")
    parser.add_argument("--algo", default="exhaustive", choices=("exhaustive", "random", "bayes"),
                        help="exhaustive grid (choice lists only), random, or bayes (TPE)")
    parser.add_argument("--max_evals", type=int, default=100, help="most trials (random / bayes)")
    parser.add_argument("--early_stop", type=int, default=10, help="stop after this many trials without a better one")
    parser.add_argument("--output_file", default="hyper.md", help="markdown file of every trial, best first")
    parser.add_argument("--resume_dir", default=None,
                        help="checkpoints of unfinished trials (default: saved/run_hyper/<output_file stem>)")
    return parser


def trials_table(trials):
    """Markdown rows of the recorded trials ({params, result}), best validation score first."""
    bigger, valid_metric = trials[0]["result"]["valid_score_bigger"], trials[0]["result"]["valid_metric"]
    ranked = sorted(trials, key=lambda trial: trial["result"]["best_valid_score"], reverse=bigger)
    domain_keys = [key for key in ranked[0]["result"]["best_valid_result"] if key.startswith(valid_metric.lower() + "/")]
    lines = [f"| rank | parameters | valid {valid_metric} | " + " | ".join(domain_keys) + " | epochs | minutes |",
             "| --- | --- | --- | " + " | ".join("---" for _ in domain_keys) + " | --- | --- |"]
    for rank, trial in enumerate(ranked, 1):
        result = trial["result"]
        params = ", ".join(f"{key}={value}" for key, value in sorted(trial["params"].items()))
        per_domain = " | ".join(f"{result['best_valid_result'][key]:.4f}" for key in domain_keys)
        lines.append(f"| {rank} | {params} | {result['best_valid_score']:.4f} | {per_domain} | "
                     f"{result['epochs']} | {result['seconds'] / 60:.1f} |")
    return lines


def write_trials(output_file, argv, args, trials):
    """The search's markdown: its command and every finished trial (this invocation's or an earlier one's), best first."""
    header = [f"# Hyper-parameter search: {trials[0]['result']['model']}", "",
              f"Command: `run_hyper {' '.join(argv)}`; search `{args.algo}` over `{args.params_file}`; "
              f"{len(trials)} trial(s) so far. Selection on validation only (the test split is never evaluated).", ""]
    with atomic_open(output_file) as handle:
        handle.write("\n".join(header + trials_table(trials)) + "\n")


def _as_json(value):
    return json.loads(json.dumps(value))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args, recbole_args = _parser().parse_known_args(argv)  # --model=, --dataset= and other keys go to RecBole's Config

    from recbole.trainer import HyperTuning

    from recbole_tema.quick_start import objective_function

    config_files = args.config_files.split() if args.config_files else None
    store = Path(args.output_file).with_suffix(".trials.json")
    # what makes a stored trial reusable: every setting but where its outputs go
    search = [f"--{key}={value}" for key, value in sorted(vars(args).items())
              if key not in ("output_file", "resume_dir")] + recbole_args
    resume_dir = Path(args.resume_dir or Path("saved", "run_hyper", Path(args.output_file).stem))
    stored = json.loads(store.read_text(encoding="utf-8")) if store.is_file() else {"search": search, "trials": []}
    if stored["search"] != search:
        print(f"run_hyper: error: {store} holds the trials of another search ({' '.join(stored['search'])}); "
              "give another --output_file or delete it.", file=sys.stderr)
        return 2
    if stored["trials"]:
        print(f"run_hyper: {len(stored['trials'])} finished trial(s) in {store} are taken as they are")
        write_trials(args.output_file, argv, args, stored["trials"])

    def recorded_objective(config_dict, config_file_list, saved=False):
        params = _as_json(config_dict)
        result = next((trial["result"] for trial in stored["trials"] if trial["params"] == params), None)
        if result is None:
            trial_dir = resume_dir / hashlib.sha1(json.dumps([search, params], sort_keys=True).encode()).hexdigest()[:12]
            result = _as_json(objective_function(config_dict, config_file_list, saved=saved, resume_dir=trial_dir))
            stored["trials"].append({"params": params, "result": result})
            with atomic_open(store) as handle:
                json.dump(stored, handle, indent=1)
            shutil.rmtree(trial_dir, ignore_errors=True)  # stored: its checkpoints are no longer needed
        write_trials(args.output_file, argv, args, stored["trials"])
        return result

    try:
        tuner = HyperTuning(recorded_objective, algo=args.algo, max_evals=args.max_evals, early_stop=args.early_stop,
                            params_file=args.params_file, fixed_config_file_list=config_files)
        tuner.run()
    except ConfigurationError as error:
        print(f"run_hyper: error: {error}", file=sys.stderr)
        return 2
    print("best params:", tuner.best_params)
    print("all trials:", args.output_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
