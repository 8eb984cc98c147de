"""Markdown tables and PNG plots of the benchmark runs stored by :mod:`recbole_tema.benchmark.runner`.

Runs of one group (the seeds of one configured run) are shown as mean and sample standard deviation;
paired tests compare groups user by user on the stored test ranks (``<name>.ranks.npz``).
"""

import datetime
import json
import statistics
from pathlib import Path

import numpy as np
import pandas as pd

from atomic_data_builders.atomic import atomic_open

METRICS = ("hit@5", "hit@10", "ndcg@10", "mrr")
HEADERS = ("Hit@5", "Hit@10", "NDCG@10", "MRR")
PAIRED_METRICS = ("mrr", "ndcg@10", "hit@10")
BOOTSTRAP_SAMPLES = 2000
# How often a test target was a training target (of any user): never, rarely, ..., often.
POPULARITY_BUCKETS = ((0, 0), (1, 2), (3, 10), (11, None))
TEXT_COLUMN = "text_emb"  # the item column whose presence says an item has text


def _domains(result):
    return [key.split("/", 1)[1] for key in result if key.startswith("targets/")]


def _status(state):
    if state["finished"]:
        return f"done ({state['stop']})" if state["stop"] == "early stopping" else state["stop"]
    status = f"partial: budget after epoch {len(state['curve'])}, resumes"
    tested = state.get("tested_epoch")  # absent in states written before it was recorded
    if state["test"] and tested is not None and tested != state["best_epoch"]:  # killed after a newer, untested best
        status += f"; test of epoch {tested}'s checkpoint"
    return status


def _groups(states):
    """[(group name, [states of its seeds])], in the order the groups first appear."""
    groups = {}
    for state in states:
        groups.setdefault(state.get("group", state["name"]), []).append(state)
    return list(groups.items())


def _mean_std(values):
    """'0.1234' for one value, '0.1234 ± 0.0012' (sample standard deviation) for several."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _group_status(members, configured):
    """The status of a group of ``configured`` seeds, of which ``members`` have a stored state."""
    done = sum(state["finished"] for state in members)
    if configured > 1 and done < configured:
        return f"partial: {done} of {configured} seeds done, the rest resume"
    return "; ".join(sorted({_status(state) for state in members}))


def _where(members):
    return "; ".join(sorted({device for state in members for device in state["devices"]}))


def result_table(states, protocol, published=None, seeds=None):
    """One row per group and domain: mean (± std over seeds) of each metric, cost and status.

    ``seeds``: {group: number of configured seeds} (default: the stored states of the group)."""
    lines = [
        "| run | domain | " + " | ".join(HEADERS) + " | seeds | epochs | best epoch | wall min | CPU min | ran on | status |",
        "| --- | --- | " + " | ".join("---" for _ in HEADERS) + " | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for group, members in _groups(states):
        tested = [state for state in members if state["test"].get(protocol)]
        if not tested:
            continue
        epochs = "/".join(str(len(state["curve"])) for state in tested)
        best = "/".join(str(state["best_epoch"]) for state in tested)
        wall = sum(state["train_seconds"] for state in tested) / 60
        cpu = sum(state.get("cpu_seconds", 0.0) for state in tested) / 60
        for domain in _domains(tested[0]["test"][protocol]):
            values = " | ".join(_mean_std([state["test"][protocol][f"{metric}/{domain}"] for state in tested])
                                for metric in METRICS)
            lines.append(f"| {group} | {domain} | {values} | {len(tested)} | {epochs} | {best} | {wall:.1f} | "
                         f"{cpu:.1f} | {_where(tested)} | {_group_status(members, (seeds or {}).get(group, 1))} |")
    if published:
        for domain, values in published.items():
            if domain != "name":
                row = " | ".join(f"{values[metric]:.4f}" for metric in METRICS)
                lines.append(f"| {published['name']} | {domain} | {row} | | | | | | | quoted |")
    return lines


def seeds_of(spec):
    """{group: number of configured seeds} of every run and ablation of the benchmark."""
    groups = [run.get("group", name) for name, run in {**spec["runs"], **(spec.get("ablations") or {})}.items()]
    return {group: groups.count(group) for group in groups}


def _group_means(states, protocol):
    """{group: {per-domain metric key: mean over its tested seeds}}."""
    means = {}
    for group, members in _groups(states):
        results = [state["test"][protocol] for state in members if state["test"].get(protocol)]
        if results:
            means[group] = {key: statistics.mean(result[key] for result in results) for key in results[0]}
    return means


def comparison(states, protocol, published, subject="TEMA", rivals=()):
    """Per domain and metric: the subject's mean minus each rival's mean, and minus the published numbers."""
    by_group = _group_means(states, protocol)
    if subject not in by_group:
        return []
    rivals = [name for name in rivals if name in by_group and name != subject]
    columns = rivals + ([published["name"]] if published else [])
    if not columns:
        return []
    lines = [f"| domain | metric | {subject} | " + " | ".join(f"minus {name}" for name in columns) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in columns) + " |"]
    ahead = [0] * len(columns)  # per column: metrics where the subject is at or above it
    domains = [key.split("/", 1)[1] for key in by_group[subject] if key.startswith("targets/")]
    for domain in domains:
        for metric in METRICS:
            mine = by_group[subject][f"{metric}/{domain}"]
            others = [by_group[name][f"{metric}/{domain}"] for name in rivals]
            if published and domain in published:
                others.append(published[domain][metric])
            ahead = [count + (mine >= other) for count, other in zip(ahead, others)] + ahead[len(others):]
            deltas = " | ".join(f"{mine - other:+.4f}" for other in others)
            lines.append(f"| {domain} | {metric} | {mine:.4f} | {deltas} |")
    total = len(domains) * len(METRICS)
    lines.append("")
    lines.append(f"{subject} (mean over its seeds) is at or above " + ", ".join(
        f"{name} on {count} of {total}" for name, count in zip(columns, ahead)) + " per-domain metrics.")
    return lines


def per_user_values(ranks, metric):
    """Each test user's value of ``metric`` (mrr, hit@K, ndcg@K) from their rank: ranks [U] -> [U]."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if metric == "mrr":
        return 1.0 / ranks
    name, k = metric.split("@")
    hit = (ranks <= int(k)).astype(np.float64)
    return hit if name == "hit" else hit / np.log2(ranks + 1)


def paired_test(subject_values, rival_values, seed=0):
    """Mean difference, its 95% bootstrap interval and the paired t-test's two-sided p-value ([U] each)."""
    from scipy import stats

    differences = np.asarray(subject_values) - np.asarray(rival_values)  # [U]
    rng = np.random.default_rng(seed)
    resampled = rng.integers(0, len(differences), size=(BOOTSTRAP_SAMPLES, len(differences)))  # [S, U]
    means = differences[resampled].mean(axis=1)  # [S]
    low, high = np.percentile(means, [2.5, 97.5])
    p_value = stats.ttest_rel(subject_values, rival_values).pvalue if differences.any() else 1.0
    return differences.mean(), low, high, p_value


def _group_user_values(group_ranks, protocol, metric):
    """{user: value of ``metric`` averaged over the group's seeds}, and {user: domain}."""
    users = sorted(set.intersection(*(set(ranks[protocol]) for ranks, _ in group_ranks)))
    values = np.mean([per_user_values([ranks[protocol][user] for user in users], metric)
                      for ranks, _ in group_ranks], axis=0)  # [U]
    return dict(zip(users, values)), group_ranks[0][1]


def paired_tests(runs, protocol, subject, rivals):
    """Markdown rows: subject against each rival, per domain and metric, paired over test users."""
    ranks_of = {}
    for run in runs:
        stored = run.test_ranks()
        if stored and protocol in stored[0]:
            ranks_of.setdefault(run.group, []).append(stored)
    if subject not in ranks_of:
        return []
    lines = ["| rival | domain | metric | users | TEMA minus rival (mean) | 95% bootstrap interval | paired t-test p |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for rival in [name for name in rivals if name in ranks_of]:
        for metric in PAIRED_METRICS:
            mine, domain_of = _group_user_values(ranks_of[subject], protocol, metric)
            theirs, _ = _group_user_values(ranks_of[rival], protocol, metric)
            users = sorted(set(mine) & set(theirs))
            for domain in sorted({domain_of[user] for user in users}):
                chosen = [user for user in users if domain_of[user] == domain]
                mean, low, high, p_value = paired_test([mine[u] for u in chosen], [theirs[u] for u in chosen])
                lines.append(f"| {rival} | {domain} | {metric} | {len(chosen):,} | {mean:+.4f} | "
                             f"[{low:+.4f}, {high:+.4f}] | {p_value:.2g} |")
    lines[0] = lines[0].replace("TEMA", subject)
    return lines if len(lines) > 2 else []


def held_out_targets(data_path, dataset):
    """({user: validation target}, {user: test target}, {item: how often it is a training target}), from the ``.inter``.

    A user's timeline is ordered and split as the protocol splits it (atomic_data_builders.enrich.history):
    the last item is the test target, the one before the validation target; the training targets are
    every training item but a user's first.
    """
    from atomic_data_builders.atomic import read_inter
    from atomic_data_builders.enrich.history import HELD_OUT, timelines

    timeline = timelines(read_inter(Path(data_path) / dataset / f"{dataset}.inter"))
    counts = {}
    for items in timeline.values():
        for item in items[1:-HELD_OUT]:
            counts[item] = counts.get(item, 0) + 1
    held_out = {user: items for user, items in timeline.items() if len(items) > HELD_OUT}
    return ({user: items[-2] for user, items in held_out.items()}, {user: items[-1] for user, items in held_out.items()},
            counts)


def popularity_groups(targets, counts):
    """({user: index of the popularity bucket of their target}, bucket names)."""
    bucket_of = {user: next(k for k, (low, high) in enumerate(POPULARITY_BUCKETS)
                            if counts.get(item, 0) >= low and (high is None or counts.get(item, 0) <= high))
                 for user, item in targets.items()}
    return bucket_of, [f"target seen {_bucket_name(*bucket)}x" for bucket in POPULARITY_BUCKETS]


def item_columns(data_path, dataset, columns):
    """{column: {item_id: its cell (empty string where blank)}} of the ``.item`` file, for those of ``columns``
    it has; one read of the file (it holds the embeddings, so it can be large)."""
    from atomic_data_builders.atomic import item_column_types

    item_file = Path(data_path) / dataset / f"{dataset}.item"
    header = list(item_column_types(item_file))
    present = [column for column in columns if column in header]
    if "item_id" not in header or not present:
        return {}
    table = pd.read_csv(item_file, sep="\t", usecols=["item_id", *present], header=0, names=header, dtype=str,
                        keep_default_na=False, quoting=3)
    return {column: dict(zip(table["item_id"], table[column])) for column in present}


def text_groups(targets, cells, column=TEXT_COLUMN):
    """({user: 0 if their test target has a ``column`` vector, else 1}, group names); ``cells``: {item_id: cell} of that column."""
    return ({user: 0 if cells.get(item) else 1 for user, item in targets.items()},
            [f"target has `{column}`", f"target has no `{column}`"])


def group_sizes(group_of, domain_of, n_groups):
    """{domain: [number of users in each group]}; domain_of: {user: domain}."""
    sizes = {}
    for user, group in group_of.items():
        if domain_of.get(user) is not None:
            sizes.setdefault(domain_of[user], [0] * n_groups)[group] += 1
    return sizes


def _bucket_name(low, high):
    return f"{low}" if low == high else (f"{low}-{high}" if high is not None else f">{low - 1}")


def grouped_mrr_table(runs, protocol, group_of, names, reference=None):
    """Markdown rows: each run group's test MRR (mean over seeds) by target domain and user group.

    group_of: {user token: index into names}; a user in no group is left out. reference: (label,
    {domain: [count per group]}), a row of counts shown under the test users' (e.g. the validation targets').
    """
    ranks_of = {}
    for run in runs:
        stored = run.test_ranks()
        if stored and protocol in stored[0]:
            ranks_of.setdefault(run.group, []).append(stored)
    if not ranks_of:
        return []
    domain_of = next(iter(ranks_of.values()))[0][1]
    lines = ["| run | domain | " + " | ".join(names) + " |", "| --- | --- | " + " | ".join("---" for _ in names) + " |"]
    for domain in sorted(set(domain_of.values())):
        users = [[u for u in domain_of if domain_of[u] == domain and group_of.get(u) == k] for k in range(len(names))]
        lines.append(f"| (test users) | {domain} | " + " | ".join(f"{len(chosen):,}" for chosen in users) + " |")
        if reference and domain in reference[1]:
            lines.append(f"| ({reference[0]}) | {domain} | " + " | ".join(f"{n:,}" for n in reference[1][domain]) + " |")
        for group, group_ranks in ranks_of.items():
            cells = []
            for chosen in users:
                present = [ranks[protocol] for ranks, _ in group_ranks if all(u in ranks[protocol] for u in chosen)]
                cells.append(f"{np.mean([per_user_values([r[u] for u in chosen], 'mrr').mean() for r in present]):.4f}"
                             if chosen and present else "")
            lines.append(f"| {group} | {domain} | " + " | ".join(cells) + " |")
    return lines


def longest_wait(curve):
    """Most epochs a run waited between one best validation MRR and the next (0: improved every time).

    A tie counts as a new best, as in RecBole's early stopping (which resets its patience on it).
    """
    best, best_epoch, wait = -1.0, 0, 0
    for entry in curve:
        if entry["valid"]["mrr"] >= best:
            if best >= 0:
                wait = max(wait, entry["epoch"] - best_epoch - 1)
            best, best_epoch = entry["valid"]["mrr"], entry["epoch"]
    return wait


def settings_table(states, patience):
    """One row per run; ``patience`` is the benchmark's, shown for states written before a run recorded its own."""
    lines = ["| run | model | seed | parameters | overrides of the model's defaults | epochs run | best epoch | "
             "longest wait for a new best | patience | wall s | CPU s | mean load | stop |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for state in states:
        shown = {key: value for key, value in state["overrides"].items() if key != "seed"}
        overrides = ", ".join(f"{key}={value}" for key, value in shown.items()) or "none"
        loads = [entry["load"] for entry in state["curve"] if "load" in entry]
        load = f"{statistics.mean(loads):.1f}" if loads else ""
        lines.append(f"| {state['name']} | {state['model']} | {state['overrides'].get('seed', '')} | "
                     f"{state['parameters']:,} | {overrides} | {len(state['curve'])} | {state['best_epoch']} | "
                     f"{longest_wait(state['curve'])} | {state.get('patience', patience)} | {state['train_seconds']:.0f} | "
                     f"{state.get('cpu_seconds', 0.0):.0f} | {load} | {_status(state)} |")
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


def _document(title, spec, data_path, runs, published, with_paired_tests, untrained=()):
    states = [run.state for run in runs]
    protocols = spec["protocols"]
    patience = spec["settings"].get("stopping_step")
    compare = spec.get("compare") or {}
    subject, rivals = compare.get("subject", "TEMA"), compare.get("rivals", [])
    lines = [
        f"# {title}", "",
        f"Written by `{spec['command']}` on {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC; every row is a run "
        "this script trained and tested (the published row is quoted, not run).", "",
        *dataset_lines(spec, data_path),
        f"- Protocol: leave-one-out on the merged timeline; each target ranked within its own domain "
        f"(history of that domain excluded); selection on validation {spec['settings']['valid_metric']} under "
        f"`{protocols[0]}` with early stopping after {patience} epochs without a new best; the best checkpoint is "
        f"tested under each of {', '.join(f'`{p}`' for p in protocols)}.",
        "- A row with several seeds gives mean ± sample standard deviation; `epochs` and `best epoch` list each "
        "seed's. `wall min` and `CPU min` sum training and validation over every seed and invocation (CPU: the "
        "process's CPU time, all threads). A `partial` row is the best checkpoint so far of a run a wall-time "
        "budget stopped: not a converged result; the next invocation resumes it.",
    ]
    if untrained:
        lines += [f"- Configured but not trained yet, so without a row: {', '.join(untrained)} "
                  f"(`--runs {' '.join(untrained)}` trains them)."]
    lines += [""]
    for protocol in protocols:
        lines += [f"## Test, `{protocol}`", ""]
        lines += result_table(states, protocol, published if protocol == protocols[0] else None, seeds_of(spec)) + [""]
        compared = comparison(states, protocol, published if protocol == protocols[0] else None, subject, rivals)
        if compared:
            lines += [f"### {subject} against the others, `{protocol}`", ""] + compared + [""]
        tested = paired_tests(runs, protocol, subject, rivals) if with_paired_tests else []
        if tested:
            lines += [f"### Paired tests over test users, `{protocol}`", "",
                      f"Each user's metric from their test rank, averaged over each run's seeds; {subject} minus the "
                      f"rival, per target domain; interval from {BOOTSTRAP_SAMPLES} bootstrap resamples of users.", ""]
            lines += tested + [""]
    if with_paired_tests:
        valid_targets, targets, counts = held_out_targets(data_path, spec["dataset"])
        cells_of = item_columns(data_path, spec["dataset"], ["domain", TEXT_COLUMN])
        domains = cells_of.get("domain", {})
        valid_groups, names = popularity_groups(valid_targets, counts)
        valid_sizes = group_sizes(valid_groups, {user: domains.get(item) for user, item in valid_targets.items()}, len(names))
        by_popularity = grouped_mrr_table(runs, protocols[0], *popularity_groups(targets, counts),
                                          reference=("validation users", valid_sizes))
        if by_popularity:
            lines += [f"## Test MRR by how often the target was a training target, `{protocols[0]}`", "",
                      "Users grouped by their test target's count among the training targets of all users (never, "
                      "1-2, 3-10, more than 10 times); each cell the group's mean test MRR (mean over seeds). Chance "
                      "MRR among 1,000 candidates is about 0.0075. `(validation users)` counts the validation targets "
                      "the same way (by their own domain): where test targets are rarer than validation targets, a "
                      "model selected on validation that favours the head loses more on test.", ""]
            lines += by_popularity + [""]
        cells = cells_of.get(TEXT_COLUMN)
        by_text = grouped_mrr_table(runs, protocols[0], *text_groups(targets, cells)) if cells is not None else []
        if by_text:
            lines += [f"## Test MRR by whether the target has text, `{protocols[0]}`", "",
                      f"Users grouped by whether their test target has a `{TEXT_COLUMN}` vector (a title or description "
                      "to embed). Without one, TEMA and LLMEMF score an item from its ID embedding (TEMA also from its "
                      "tags, where it has any); LLM4CDSR, whose items have no ID embedding, from a zero vector.", ""]
            lines += by_text + [""]
    lines += ["## Runs", "",
              "`longest wait for a new best`: the most epochs a run went without a new best validation MRR (a tie "
              "counts, as in RecBole's early stopping) before a later one; `patience`: the epochs without one after "
              "which the run stops. A longest wait close to the patience says a longer patience might have found a "
              "later best.", ""]
    lines += settings_table(states, patience) + [""]
    lines += ["## Learning curves", ""] + curve_table(states) + [""]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path):
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100)


def plot(path, states, protocols, published):
    """Bar chart of the test metrics: one bar per group (mean over seeds), per domain and protocol."""
    plt = _pyplot()
    with_results = [state for state in states if state["test"]]
    domains = _domains(with_results[0]["test"][protocols[0]]) if with_results else []
    figure, axes = plt.subplots(len(protocols), max(len(domains), 1), figsize=(6 * max(len(domains), 1), 4 * len(protocols)),
                                squeeze=False)
    for row, protocol in enumerate(protocols):
        means = _group_means(with_results, protocol)
        for col, domain in enumerate(domains):
            bars = [(group, [values[f"{m}/{domain}"] for m in METRICS]) for group, values in means.items()]
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
    _save(figure, path)
    plt.close(figure)


def plot_time_to_accuracy(path, states, metric_name):
    """Validation MRR against wall-clock minutes (training + validation), one line per run; beside it the
    same against the process's CPU minutes, which another job on a shared machine does not inflate."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(15, 5.5))
    clocks = (("seconds", "wall-clock minutes (training + validation)"), ("cpu_seconds", "CPU minutes (all threads)"))
    for axis, (key, label) in zip(axes, clocks):
        colors = {}
        for state in states:
            if not state["curve"] or key not in state["curve"][0]:
                continue
            minutes = np.cumsum([entry[key] for entry in state["curve"]]) / 60  # [E]
            values = [entry["valid"]["mrr"] for entry in state["curve"]]  # [E]
            group = state.get("group", state["name"])
            first = group not in colors
            line, = axis.plot(minutes, values, marker=".", linewidth=1, color=colors.get(group),
                              label=group if first else None, alpha=1.0 if first else 0.5)
            colors.setdefault(group, line.get_color())
        axis.set_xlabel(label)
        axis.set_ylabel(f"validation {metric_name}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, ncol=2)
    figure.suptitle("Time to accuracy (the seeds of a run share its colour)")
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)


def readme_block(spec, states, untrained=()):
    """The README's summary of the benchmark, written from the stored states: the first protocol's
    table (group means), the comparison line, the status of the runs and the two plots."""
    protocol = spec["protocols"][0]
    compare = spec.get("compare") or {}
    subject, rivals = compare.get("subject", "TEMA"), compare.get("rivals", [])
    finished = sum(state["finished"] for state in states)
    lines = [f"Test under `{protocol}`, selected on validation {spec['settings']['valid_metric']}; mean ± std over seeds. "
             f"{finished} of {len(states)} stored runs have finished (each row's status says which)"
             f"{'; not trained yet: ' + ', '.join(untrained) if untrained else ''}; regenerated from "
             f"`{spec['state_dir']}` by `python -m recbole_tema.benchmark --config ... --report-only` on "
             f"{datetime.datetime.utcnow():%Y-%m-%d}. Full tables, paired tests and learning curves: "
             f"[`{spec['results']}`]({spec['results']}).", ""]
    lines += result_table(states, protocol, spec.get("published"), seeds_of(spec))
    compared = comparison(states, protocol, spec.get("published"), subject, rivals)
    if compared:
        lines += ["", compared[-1]]
    for key, title in (("plot", "Food-Kitchen test metrics"), ("time_plot", "Validation MRR against minutes")):
        if spec.get(key):
            lines += ["", f"![{title}]({spec[key]})"]
    return "\n".join(lines)


def update_readme(path, marker, text):
    """Replace what lies between ``<!-- marker -->`` and ``<!-- /marker -->`` in the file at ``path``."""
    content = Path(path).read_text(encoding="utf-8")
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    if start not in content or end not in content:
        raise ValueError(f"{path} has no `{start}` ... `{end}` block to write the benchmark's summary into")
    before, rest = content.split(start, 1)
    write_atomic(path, before + start + "\n" + text + "\n" + end + rest.split(end, 1)[1])


def write_reports(spec, data_path, runs):
    """The results table (main runs), the ablation table (TEMA + ablations) and the plots."""
    runs = [run for run in runs if run.state]
    published = spec.get("published")
    ablations = spec.get("ablations") or {}
    main_runs = [run for run in runs if run.name in spec["runs"]]
    stored = {run.name for run in runs}
    untrained, untrained_ablations = ([name for name in names if name not in stored] for names in (spec["runs"], ablations))
    write_atomic(spec["results"], _document("Cross-domain benchmark: " + spec["dataset"], spec, data_path,
                                            main_runs, published, with_paired_tests=True, untrained=untrained))
    subject = (spec.get("compare") or {}).get("subject", "TEMA")
    ablation_runs = [run for run in runs if run.name in ablations or run.group == subject]
    if spec.get("ablation_results") and any(run.name in ablations for run in runs):
        ablation_spec = {**spec, "compare": {"subject": subject, "rivals": list(dict.fromkeys(
            run.group for run in ablation_runs if run.group != subject))}}
        write_atomic(spec["ablation_results"], _document("TEMA ablations: " + spec["dataset"], ablation_spec,
                                                         data_path, ablation_runs, None, with_paired_tests=True,
                                                         untrained=untrained_ablations))
    main_states = [run.state for run in main_runs]
    if spec.get("plot") and any(state["test"] for state in main_states):
        plot(spec["plot"], main_states, spec["protocols"], published)
    if spec.get("time_plot") and any(state["curve"] for state in main_states):
        plot_time_to_accuracy(spec["time_plot"], main_states, spec["settings"]["valid_metric"])
    if spec.get("readme"):
        update_readme(spec["readme"]["file"], spec["readme"]["marker"], readme_block(spec, main_states, untrained))
