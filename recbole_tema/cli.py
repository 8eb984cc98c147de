"""``run_recbole``: RecBole's command line, for RecBole's models and the plugin's alike.

    run_recbole --model=TEMA --dataset=ml-100k-cd [--config_files="a.yaml b.yaml"] [--epochs=5 ...]

Any other ``--key=value`` overrides a configuration key, exactly as in RecBole.
"""

import argparse
import sys
import traceback

from recbole_tema.errors import ConfigurationError
from recbole_tema.evaluation.protocol import TARGETS_KEY


def _parser():
    parser = argparse.ArgumentParser(prog="run_recbole", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", "-m", default="TEMA", help="model name, plugin or RecBole (default: TEMA)")
    parser.add_argument("--dataset", "-d", default="ml-100k-cd", help="dataset name (default: ml-100k-cd, built in)")
    parser.add_argument("--config_files", default=None, help="YAML files, separated by spaces")
    parser.add_argument("--list_models", action="store_true", help="print the available model names and exit")
    parser.add_argument("--verbose", action="store_true", help="with an error, print its traceback too")
    spread = parser.add_argument_group("distributed training (RecBole's flags; gloo on CPUs, NCCL on GPUs)")
    spread.add_argument("--nproc", type=int, default=1, help="processes on this machine (default 1)")
    spread.add_argument("--world_size", type=int, default=-1, help="processes on all machines (default: nproc)")
    spread.add_argument("--ip", default="localhost", help="address of the machine of rank 0")
    spread.add_argument("--port", type=int, default=5678, help="a free port on that machine")
    spread.add_argument("--offset", "--group_offset", type=int, default=0, dest="offset",
                        help="rank of this machine's first process (0 on the machine of rank 0)")
    return parser


def per_domain_table(result):
    """Plain-text table of a cross-domain result: one row per domain and one overall."""
    domains = sorted({key.split("/", 1)[1] for key in result if "/" in key})
    metrics = [key for key in result if "/" not in key and key != TARGETS_KEY]
    header = ["domain", TARGETS_KEY] + metrics
    rows = [[name, result[f"{TARGETS_KEY}/{name}"]] + [result[f"{m}/{name}"] for m in metrics] for name in domains]
    rows.append(["overall", result[TARGETS_KEY]] + [result[m] for m in metrics])
    cells = [header] + [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in cells)


def main():
    args, _ = _parser().parse_known_args()
    if args.list_models:
        from recbole_tema.registry import plugin_model_names, recbole_model_names

        print("Plugin models:", ", ".join(plugin_model_names()))
        print("RecBole models:", ", ".join(recbole_model_names()))
        return 0

    from recbole_tema.quick_start import run

    config_files = args.config_files.split() if args.config_files else None
    try:
        result = run(model=args.model, dataset=args.dataset, config_file_list=config_files, nproc=args.nproc,
                     world_size=args.world_size, ip=args.ip, port=args.port, offset=args.offset)
    except ConfigurationError as error:
        if args.verbose:
            traceback.print_exc()
        print(f"run_recbole: error: {error}", file=sys.stderr)
        return 2
    test_result = result["test_result"]
    if test_result and TARGETS_KEY in test_result:
        print(f"\nTest results of {args.model} on {args.dataset}, per target domain:")
        print(per_domain_table(test_result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
