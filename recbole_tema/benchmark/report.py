"""Markdown tables and a PNG plot of the benchmark runs stored by :mod:`recbole_tema.benchmark.runner`."""

import datetime
import json
from pathlib import Path

from atomic_data_builders.atomic import atomic_open

METRICS = ("hit@5", "hit@10", "ndcg@10", "mrr")
HEADERS = ("Hit@5", "Hit@10", "NDCG@10", "MRR")


def _domains(result):
    return [key.split("/", 1)[1] for key in result if key.startswith("targets/")]


def _status(state):
    if state["finished"]:
        return f"done ({state['stop']})"
    return f"partial: budget after epoch {state['epochs']}, resumes"


def _epoch_seconds(state):
    return sum(entry["seconds"] for entry in state["curve"]) / max(len(state["curve"]), 1)


def result_table(states, protocol, published=None):
    lines = [
        "| run | domain | " + " | ".join(HEADERS) + " | epochs | best epoch | s / epoch | total min | ran on | status |",
        "| --- | --- | " + " | ".join("---" for _ in HEADERS) + " | --- | --- | --- | --- | --- | --- |",
    ]
    for state in states:
        result = state["test"].get(protocol)
        if not result:
            continue
        for domain in _domains(result):
            values = " | ".join(f"{result[f'{metric}/{domain}']:.4f}" for metric in METRICS)
            lines.append(
                f"| {state['name']} | {domain} | {values} | {state['epochs']} | {state['best_epoch']} | "
                f"{_epoch_seconds(state):.0f} | {state['train_seconds'] / 60:.1f} | {'; '.join(state['devices'])} | "
                f"{_status(state)} |"
            )
    if published:
        for domain, values in published.items():
            if domain != "name":
                row = " | ".join(f"{values[metric]:.4f}" for metric in METRICS)
                lines.append(f"| {published['name']} | {domain} | {row} | | | | | | |")
    return lines


def comparison(states, protocol, published, subject="TEMA", rivals=("SASRec", "C2DSR")):
    """Per domain and metric: the subject minus each rival of the same run, and minus the published numbers."""
    by_name = {state["name"]: state["test"].get(protocol) for state in states}
    if not by_name.get(subject):
        return []
    rivals = [name for name in rivals if by_name.get(name)]
    columns = rivals + ([published["name"]] if published else [])
    if not columns:
        return []
    lines = [f"| domain | metric | {subject} | " + " | ".join(f"minus {name}" for name in columns) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in columns) + " |"]
    ahead = [0] * len(columns)  # per column: metrics where the subject is at or above it
    domains = _domains(by_name[subject])
    for domain in domains:
        for metric in METRICS:
            mine = by_name[subject][f"{metric}/{domain}"]
            others = [by_name[name][f"{metric}/{domain}"] for name in rivals]
            if published and domain in published:
                others.append(published[domain][metric])
            ahead = [count + (mine >= other) for count, other in zip(ahead, others)] + ahead[len(others):]
            deltas = " | ".join(f"{mine - other:+.4f}" for other in others)
            lines.append(f"| {domain} | {metric} | {mine:.4f} | {deltas} |")
    total = len(domains) * len(METRICS)
    lines.append("")
    lines.append(f"{subject} is at or above " + ", ".join(f"{name} on {count} of {total}"
                                                        for name, count in zip(columns, ahead)) + " per-domain metrics.")
    return lines


def settings_table(states):
    lines = ["| run | model | parameters | overrides of the model's defaults | epochs run | train + valid s |",
             "| --- | --- | --- | --- | --- | --- |"]
    for state in states:
        overrides = ", ".join(f"{key}={value}" for key, value in state["overrides"].items()) or "none"
        lines.append(f"| {state['name']} | {state['model']} | {state['parameters']:,} | {overrides} | "
                     f"{state['epochs']} | {state['train_seconds']:.0f} |")
    return lines


def curve_table(states):
    """Validation MRR per epoch, one row per run: the learning curves behind the test rows."""
    lines = ["| run | validation MRR per epoch (overall; per domain) |", "| --- | --- |"]
    for state in states:
        steps = []
        for entry in state["curve"]:
            valid = entry["valid"]
            per_domain = "/".join(f"{valid[key]:.3f}" for key in valid if key.startswith("mrr/"))
            steps.append(f"{entry['epoch']}: {valid['mrr']:.4f} ({per_domain})")
        lines.append(f"| {state['name']} | {'; '.join(steps)} |")
    return lines


def dataset_lines(spec, data_path):
    report_file = Path(data_path) / spec["dataset"] / f"{spec['dataset']}.report.json"
    report = json.loads(report_file.read_text(encoding="utf-8"))
    stats = report["dataset"]
    columns = report.get("item_columns") or report.get("columns") or {}
    lines = [
        f"- Data: `{spec['source']}` built with `python -m atomic_data_builders split "
        f"{' '.join(str(a) for a in spec.get('build_args', []))}`: {stats['users']:,} users, {stats['items']:,} items, "
        f"{stats['interactions']:,} interactions.",
        f"- Item columns: {', '.join(f'`{name}`' for name in columns) if columns else 'see the build report'}. "
        "The data has no images: the image branch (`clip_img`) is off in every model.",
    ]
    return lines


def write_atomic(path, text):
    with atomic_open(path) as handle:
        handle.write(text)


def _document(title, spec, data_path, states, published):
    protocols = spec["protocols"]
    lines = [
        f"# {title}", "",
        f"Written by `{spec['command']}` on {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC; every row is a run "
        "this script trained and tested (the published row is quoted, not run).", "",
        *dataset_lines(spec, data_path),
        f"- Protocol: leave-one-out on the merged timeline; each target ranked within its own domain "
        f"(history of that domain excluded); selection on validation {spec['settings']['valid_metric']} under "
        f"`{protocols[0]}`; the best checkpoint is tested under each of {', '.join(f'`{p}`' for p in protocols)}.",
        "- `s / epoch` is training plus validation; `total min` sums the completed epochs of every invocation. "
        "A `partial` row is the best checkpoint so far of a run the wall-time budget stopped: it is not a converged "
        "result, and the next invocation resumes it.", "",
    ]
    for protocol in protocols:
        lines += [f"## Test, `{protocol}`", ""]
        lines += result_table(states, protocol, published if protocol == protocols[0] else None) + [""]
        compared = comparison(states, protocol, published if protocol == protocols[0] else None)
        if compared:
            lines += [f"### TEMA against the others, `{protocol}`", ""] + compared + [""]
    lines += ["## Runs", ""] + settings_table(states) + [""]
    lines += ["## Learning curves", ""] + curve_table(states) + [""]
    return "\n".join(lines)


def plot(path, states, protocols, published):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_results = [state for state in states if state["test"]]
    domains = _domains(with_results[0]["test"][protocols[0]]) if with_results else []
    figure, axes = plt.subplots(len(protocols), max(len(domains), 1), figsize=(6 * max(len(domains), 1), 4 * len(protocols)),
                                squeeze=False)
    for row, protocol in enumerate(protocols):
        for col, domain in enumerate(domains):
            bars = [(state["name"], [state["test"][protocol][f"{m}/{domain}"] for m in METRICS])
                    for state in with_results if protocol in state["test"]]
            if published and row == 0 and domain in published:
                bars.append((published["name"], [published[domain][m] for m in METRICS]))
            width = 0.8 / max(len(bars), 1)
            axis = axes[row][col]
            for index, (name, values) in enumerate(bars):
                axis.bar([m + index * width for m in range(len(METRICS))], values, width, label=name)
            axis.set_xticks([m + 0.4 - width / 2 for m in range(len(METRICS))], HEADERS)
            axis.set_title(f"{domain}, test {protocol}")
    if domains:
        axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)
    plt.close(figure)


def write_reports(spec, data_path, runs):
    """The results table (runs of `runs`), the ablation table (TEMA + ablations) and the plot."""
    states = {run.name: run.state for run in runs}
    published = spec.get("published")
    main_states = [states[name] for name in spec["runs"] if name in states]
    write_atomic(spec["results"], _document("Cross-domain benchmark: " + spec["dataset"], spec, data_path,
                                            main_states, published))
    ablations = spec.get("ablations") or {}
    ablation_states = [states[name] for name in ["TEMA", *ablations] if name in states]
    if spec.get("ablation_results") and any(name in states for name in ablations):
        write_atomic(spec["ablation_results"], _document("TEMA ablations: " + spec["dataset"], spec, data_path,
                                                         ablation_states, None))
    if spec.get("plot") and any(state["test"] for state in main_states):
        plot(spec["plot"], main_states, spec["protocols"], published)
