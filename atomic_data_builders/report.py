"""The build report: what was read, filtered, written, and what each stage cost.

Written next to the atomic files as `<name>.report.json` (machine-readable) and
`<name>.report.md` (for people); both atomically. Stages are timed with wall time and the peak
resident memory of the process while the stage ran (sampled every 50 ms).
"""
from __future__ import annotations

import contextlib
import json
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import pandas as pd

from atomic_data_builders.atomic import atomic_open


def _rss_bytes() -> Optional[int]:
    """Current resident set size (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return None


class _PeakSampler(threading.Thread):
    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop_event = interval, _rss_bytes() or 0, threading.Event()

    def run(self):
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes() or 0)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, _rss_bytes() or 0)


class BuildReport:
    def __init__(self, data: Optional[dict] = None):
        self.data = data or {}
        self.data.setdefault("stages", {})
        self.data.setdefault("notes", [])

    def note(self, text: str) -> None:
        if text not in self.data["notes"]:
            self.data["notes"].append(text)

    @contextlib.contextmanager
    def stage(self, name: str):
        """Time a stage; the body may fill the yielded dict with stage facts (counts, model, ...)."""
        facts: dict = {}
        sampler = _PeakSampler()
        sampler.start()
        start = time.perf_counter()
        try:
            yield facts
        finally:
            peak = sampler.stop()
            self.data["stages"][name] = {"seconds": round(time.perf_counter() - start, 2),
                                         "peak_rss_mib": round(peak / 2 ** 20, 1), **facts}

    def write(self, folder: Path, name: str) -> None:
        self.data["process_max_rss_mib"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2 ** 20 if sys.platform == "darwin" else 2 ** 10), 1)
        with atomic_open(Path(folder) / f"{name}.report.json") as handle:
            json.dump(self.data, handle, indent=2, default=str)
            handle.write("\n")
        with atomic_open(Path(folder) / f"{name}.report.md") as handle:
            handle.write(self.markdown(name))

    def markdown(self, name: str) -> str:
        d = self.data
        lines = [f"# Build report: {name}", ""]
        if "source" in d:
            lines += [f"Source: `{d['source']}`, input `{d.get('input', '')}`.", ""]
        stats = d.get("dataset")
        if stats:
            lines += ["## Dataset", "", "| domain | items | interactions | users | test targets | valid targets |",
                      "| --- | --- | --- | --- | --- | --- |"]
            for dom, s in stats["per_domain"].items():
                lines.append(f"| {dom} | {s['items']:,} | {s['interactions']:,} | {s['users']:,} | "
                             f"{s['test_targets']:,} | {s['valid_targets']:,} |")
            lines += ["", f"Total: {stats['users']:,} users, {stats['items']:,} items, "
                          f"{stats['interactions']:,} interactions; {stats['per_user_min']} to "
                          f"{stats['per_user_max']} per user (mean {stats['per_user_mean']}).", ""]
        if d.get("filters"):
            lines += ["## Filters", "", "| step | interactions | users | items |", "| --- | --- | --- | --- |"]
            lines += [f"| {s['step']} | {s['interactions']:,} | {s['users']:,} | {s['items']:,} |" for s in d["filters"]]
            lines.append("")
        if d.get("bad_lines", {}).get("skipped"):
            lines += ["## Malformed lines", "", f"Skipped: {d['bad_lines']['skipped']}", ""]
            lines += [f"- `{f}`: {n} ({d['bad_lines']['first'].get(f, '')})" for f, n in d["bad_lines"]["per_file"].items()]
            lines.append("")
        if d["stages"]:
            lines += ["## Stages", "", "| stage | seconds | peak RSS (MiB) | facts |", "| --- | --- | --- | --- |"]
            for stage, s in d["stages"].items():
                facts = {k: v for k, v in s.items() if k not in ("seconds", "peak_rss_mib")}
                lines.append(f"| {stage} | {s['seconds']} | {s['peak_rss_mib']} | `{json.dumps(facts, default=str)[:400]}` |")
            lines.append("")
        if d.get("columns"):
            lines += ["## .item columns", "", "| column | type | dim | non-empty |", "| --- | --- | --- | --- |"]
            lines += [f"| {c} | {s['type']} | {s.get('dim', '')} | {s['non_empty']:,} |" for c, s in d["columns"].items()]
            lines.append("")
        if d["notes"]:
            lines += ["## Notes", ""] + [f"- {n}" for n in d["notes"]] + [""]
        return "\n".join(lines)


def dataset_stats(inter: pd.DataFrame, domains: list) -> dict:
    """Figures of the written .inter (rows in true order per user): totals, per domain, LOO targets."""
    per_user = inter.groupby("user_id", sort=False).size()
    last = inter.groupby("user_id", sort=False)["domain"].nth(-1)
    before_last = inter.groupby("user_id", sort=False)["domain"].nth(-2)
    per_domain = {}
    for dom in domains:
        rows = inter[inter["domain"] == dom]
        per_domain[dom] = {"items": int(rows["item_id"].nunique()), "interactions": int(len(rows)),
                           "users": int(rows["user_id"].nunique()), "test_targets": int((last == dom).sum()),
                           "valid_targets": int((before_last == dom).sum())}
    return {"users": int(len(per_user)), "items": int(inter["item_id"].nunique()), "interactions": int(len(inter)),
            "per_user_min": int(per_user.min()), "per_user_max": int(per_user.max()),
            "per_user_mean": round(float(per_user.mean()), 1), "per_domain": per_domain}
